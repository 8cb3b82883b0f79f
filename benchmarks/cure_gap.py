"""Where the cure model's gap to the simulator's truth comes from: calibration, the features, or what no feature sees.

    .venv/bin/python benchmarks/cure_gap.py --data p100k --model outputs/train/bundle.joblib

On a simulated portfolio (its `truth/cure.parquet` and `truth/latent.parquet`), for the accounts in arrears at the
end of its history, the mean |model's cure chance - the true one| (issue 15 asks <= 0.06), and against it:

- by days past due;
- **calibration alone**: the model's chances mapped onto the truth by an isotonic regression fitted on these very
  accounts (in-sample: more than any calibration could do);
- **the features' ceiling**: a LightGBM regression of the *true* chance on the model's own features,
  cross-validated (5 folds): what these features could reach with the truth as the label;
- the same with **cure-history features** (over 24 months: instalments late, paid within 30 days of falling due,
  paid later, arrears spells; the product's own since `features.cure_history_months`, so for a bundle trained
  with them this line adds only the first and the third), and with the simulator's latent traits (payer type,
  shock, spell, a payment already on its way), which no export holds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

AS_OF = "2026-11-01T00:00:00+09:00"


def cure_history(prep, t: int, positions: np.ndarray) -> pd.DataFrame:
    """Per account at `positions`: instalments due in the last 24 months that were late, paid later than 30 days
    after falling due, and the product's own cure-history features (`models.features._cure_history`: paid within
    30 days, their share, arrears spells), for a bundle trained without them."""
    from models import features as F

    i_mask, p_mask = prep.inst_end <= t, prep.pay_at < t
    paid_at = F._fifo_paid_at(prep, t, i_mask, p_mask)
    acc, due, due_end = prep.inst_acc[i_mask], prep.inst_due[i_mask], prep.inst_end[i_mask]
    late, unpaid = paid_at >= due_end, paid_at == np.iinfo(np.int64).max
    recent = due >= F.months_before(t, 24)
    days_late = np.floor(np.maximum(np.minimum(paid_at, t) - due, 0) / F.DAY_NS)
    count = lambda mask: np.bincount(acc[mask], minlength=prep.n)[positions]  # noqa: E731
    own = F._cure_history(acc, due, late, unpaid, days_late, t, 24, prep.n)
    return pd.DataFrame({"late_24m": count(recent & late),
                         "paid_after_30d_24m": count(recent & late & ~unpaid & (days_late > 30)),
                         **{name: values[positions] for name, values in own.items()}})


def main() -> None:
    import lightgbm as lgb
    from sklearn.isotonic import IsotonicRegression
    from sklearn.model_selection import cross_val_predict

    from models.contract import read_dir
    from models.features import prepare
    from models.registry import load_bundle
    from pipelines.train import truth_gap

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a simulated portfolio (with truth/)")
    parser.add_argument("--model", default="outputs/train/bundle.joblib")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    bundle = load_bundle(args.model).bundle
    portfolio, end = read_dir(args.data), pd.Timestamp(AS_OF)
    gap = truth_gap(args.data, bundle, portfolio, end)
    feats = bundle.features(portfolio, end).set_index("account_id").loc[gap["account_id"]]
    X, y = feats[bundle.feature_names].to_numpy(dtype=np.float64), gap["p_true"].to_numpy()
    err = np.abs(gap["p"].to_numpy() - y)
    print(f"{args.data}: {len(gap):,} accounts in arrears; mean |p - p_true| {err.mean():.4f} "
          f"(mean p {gap['p'].mean():.3f}, true {y.mean():.3f}, correlation {np.corrcoef(gap['p'], y)[0, 1]:.3f})")
    bands = pd.cut(feats["days_past_due"].to_numpy(), [-1, 30, 60, 90, 180, 365, np.inf])
    print(pd.DataFrame({"gap": err, "true": y}).groupby(bands, observed=True)
          .agg(accounts=("gap", "size"), gap=("gap", "mean"), true_sd=("true", "std")).round(3).to_string())
    iso = IsotonicRegression(out_of_bounds="clip").fit(gap["p"], y)
    print(f"calibration alone (isotonic onto the truth, in-sample): {np.abs(iso.predict(gap['p']) - y).mean():.4f}")

    def ceiling(extra: np.ndarray | None = None) -> float:
        inputs = X if extra is None else np.hstack([X, extra])
        model = lgb.LGBMRegressor(n_estimators=300, learning_rate=0.03, num_leaves=7, min_child_samples=10,
                                  random_state=args.seed, verbose=-1)
        return float(np.abs(cross_val_predict(model, inputs, y, cv=5) - y).mean())

    prep = prepare(portfolio, bundle.feature_config)
    positions = pd.Index(prep.account_id).get_indexer(gap["account_id"])
    history = cure_history(prep, end.value, positions)
    latent = pd.read_parquet(Path(args.data) / "truth" / "latent.parquet").set_index("account_id")
    latent = latent.loc[gap["account_id"]]
    traits = {"payer type": pd.factorize(latent["payer_type"])[0][:, None].astype(float),
              "shock and spell": latent[["shock_at_end", "in_spell_at_end"]].to_numpy(dtype=float),
              "a payment on its way": latent[["pending_payment_at"]].notna().to_numpy(dtype=float)}
    print(f"a regression of the true chance on the model's features (cross-validated): {ceiling():.4f}")
    print(f"  + cure history over 24 months: {ceiling(history.to_numpy(dtype=float)):.4f}")
    for name, values in traits.items():
        print(f"  + the simulator's latent {name} (no export holds it): {ceiling(values):.4f}")
    print("cure history by payer type (means; the bundle has these features: "
          f"{set(history.columns) <= set(bundle.feature_names)}):")
    print(history.groupby(latent["payer_type"].to_numpy()).mean().round(2).to_string())


if __name__ == "__main__":
    main()

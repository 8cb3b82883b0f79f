"""Benchmark: the next-best-action policy on a simulated portfolio the model never saw.

Trains on one simulated portfolio (seed A), then scores another (seed B) as of the end of its history and
compares, with the simulator's exact truth, the policy against no contact, the best single action for
everyone and the oracle that knows each account's true best allowed action; audits every decision
against the contact rules; and gives the off-policy estimates on the training portfolio's held-out logs.

    .venv/bin/python benchmarks/policy_value.py --train-accounts 200000 --eval-accounts 50000
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from models.config import load_params
from models.contract import read_dir
from pipelines import evaluate
from pipelines.simulate import main as simulate
from pipelines.train import fit


def _portfolio(workdir: Path, accounts: int, months: int, seed: int) -> Path:
    out = workdir / f"sim_{accounts}_{months}_{seed}"
    if not (out / "manifest.json").exists():
        simulate(accounts=accounts, months=months, seed=seed, out=out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-accounts", type=int, default=200_000)
    parser.add_argument("--eval-accounts", type=int, default=50_000)
    parser.add_argument("--months", type=int, default=24)
    parser.add_argument("--train-seed", type=int, default=7)
    parser.add_argument("--eval-seed", type=int, default=8)
    parser.add_argument("--workdir", type=Path, default=Path("outputs/bench_policy"))
    args = parser.parse_args()
    params = load_params()
    started = time.perf_counter()
    train_dir = _portfolio(args.workdir, args.train_accounts, args.months, args.train_seed)
    result = fit(train_dir, params, log=print)
    print(f"trained in {time.perf_counter() - started:.0f}s")
    bundle = result.bundle
    eval_dir = _portfolio(args.workdir, args.eval_accounts, args.months, args.eval_seed)
    portfolio = read_dir(eval_dir)
    as_of = pd.Timestamp(params["simulate"]["end"])
    truth = pd.read_parquet(eval_dir / "truth" / "actions.parquet")
    for eps in (0.0, float(params["policy"]["explore"])):
        t = evaluate.truth_values(bundle, portfolio, truth, as_of, eps)
        audit = t["audit_violations"]
        print(f"explore={eps:.2f}: {t['accounts']:,} overdue accounts; JPY per account: policy {t['policy']:,.0f}, "
              f"no contact 0, best single action {t['best_single_action']:,.0f} ({t['best_single_action_is']}), "
              f"oracle {t['oracle']:,.0f}; share of oracle {t['share_of_oracle']:.1%}, "
              f"{t['times_best_single']:.2f}x best single; violations {t['violations']} (mask), {len(audit)} (audit); "
              f"payment uplift {t['policy_payment_uplift']:+.3f}")
    table, n = evaluate.off_policy(bundle, read_dir(train_dir), result.history_end)
    print(f"off-policy on {n:,} held-out logged decisions of the training portfolio:")
    print(table.to_string(index=False, float_format=lambda v: f"{v:,.4f}"))
    print(f"total {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()

"""`cureflow promote`: the challenger replaces the champion only when it is not worse on the same holdout.

`cureflow train` registers every version; one that passes the quality gate becomes `@challenger` (or
`@champion` when the registry has none). Promotion scores both on data neither was trained on, from the
same directory:

- the cure model: every account overdue at the as-of dates of the later of the two models' time holdouts
  (so neither saw them), each model with its own feature configuration; ROC AUC and calibration (the debiased
  RMS calibration error the quality gate judges, the plug-in ECE beside it) on fresh arrears (1-90 days past
  due, the accounts a collector works; the pooled figures are reported beside them), and each model's
  ROC AUC lift over its own three-feature baseline (`models.baseline`);
- the policy: the logged randomised decisions after the later of the two response holdout cut-offs; the
  doubly robust estimate of the payment rate within 7 days of the policy each bundle serves
  (`pipelines.evaluate.served_targets`: its safe policy, the baseline unless a departure beats it by the
  validated margin; the decisions' own recorded blocks, such as the day's call capacity, respected), and
  their paired difference with a 95% interval (the same decisions score both). A bundle without a response
  model serves its baseline (on day one, the playbook), valued the same way by inverse propensity alone.
  Until the ninth session this judged the response model's argmax and took a bundle without one for "no
  contact to everyone": neither is what a promotion puts in charge.

With `train.policy_updates` on, `cureflow train` registers a retrain whose cure model failed the gate as its
policy on the champion's cure model (`pipelines.quality_gate.policy_update`, tag `cure_model_from`): both
then score the same cure figures, and the policy decides.

The challenger is promoted when it is not worse than the champion by more than `params.yaml: promote`'s
margins on any of the three, its fresh-arrears lift over its baseline is above the quality gate's
`min_baseline_lift`, and it passed its own quality gate. Either way the decision and the figures
behind it are recorded as tags on the challenger's model version (`promotion`, `promotion.reason`,
`promotion.roc_auc`, ...); a replaced champion is tagged `replaced_by`. `--dry-run` compares and records
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from models import ope
from models import policy as decision_policy
from models.bundle import ScoringBundle
from models.contract import Portfolio
from models.features import prepare
from models.files import write_json_atomic
from models.metrics import FRESH_DAYS_PAST_DUE, classification_report
from models.registry import load_bundle, parse_model_uri, registry_client, resolve_version
from models.response import ActionSpace
from pipelines.feedback import NO_BLOCKS, NO_SUPPORT, supported_actions

ROLES = ("challenger", "champion")


@dataclass
class Contender:
    """A registered model version taking part in the comparison."""

    role: str
    uri: str
    version: str
    bundle: ScoringBundle
    tags: dict = field(default_factory=dict)


def later(contenders: list[Contender], key: str) -> pd.Timestamp:
    """The later of the contenders' holdout starts (`cure_holdout_from` or `response_holdout_from`)."""
    return max(pd.Timestamp(c.bundle.metadata[key]).tz_convert("UTC") for c in contenders)


def cure_holdout(bundle: ScoringBundle, portfolio: Portfolio, dates: list[pd.Timestamp], horizon: int
                 ) -> pd.DataFrame:
    """as_of, account_id, label, days past due, the bundle's cure chance and its baseline's (NaN for a
    bundle without one) for every account in the cure queue at `dates` (material arrears, not stale)."""
    from pipelines.features import cure_examples

    config, pconf = bundle.feature_config, bundle.policy_config
    examples = cure_examples(prepare(portfolio, config), config, dates, horizon, pconf)
    examples = examples[~decision_policy.stale(examples["days_past_due"].to_numpy(), pconf)]
    p = bundle.cure.predict_proba(examples[bundle.feature_names])[:, 1]
    base = bundle.baseline.predict(examples) if bundle.baseline is not None else np.full(len(examples), np.nan)
    return examples[["as_of", "account_id", "label", "days_past_due"]].assign(p=p, p_baseline=base
                                                                              ).reset_index(drop=True)


def fresh_report(frame: pd.DataFrame) -> dict:
    """ROC AUC, ECE and the rest on fresh arrears, with the baseline's ROC AUC and the lift over it."""
    fresh = frame[frame["days_past_due"] <= FRESH_DAYS_PAST_DUE]
    y = fresh["label"].to_numpy()
    out = classification_report(y, fresh["p"].to_numpy())
    if fresh["p_baseline"].notna().all():
        out["baseline_roc_auc"] = classification_report(y, fresh["p_baseline"].to_numpy())["roc_auc"]
        out["auc_lift"] = out["roc_auc"] - out["baseline_roc_auc"]
    return out


def compare_cure(contenders: list[Contender], portfolio: Portfolio, data: Path) -> dict:
    """ROC AUC, ECE and the rest of the holdout report of each contender on the same as-of dates."""
    from pipelines.features import example_dates, resolve_history_end

    reference = contenders[0].bundle
    cure_p = reference.params["cure"]
    horizon = int(cure_p["horizon_days"])
    end = resolve_history_end(data, prepare(portfolio, reference.feature_config))
    since = later(contenders, "cure_holdout_from")
    dates = [t for t in example_dates(prepare(portfolio, reference.feature_config), end, horizon,
                                      int(cure_p["example_every_days"])) if t >= since]
    if not dates:
        raise ValueError(f"no common holdout: no as-of date from {since.isoformat()} has its {horizon}-day label "
                         f"window observed before the history ends ({end.isoformat()})")
    frames = {c.role: cure_holdout(c.bundle, portfolio, dates, horizon) for c in contenders}
    keys = [f[["as_of", "account_id", "label"]].reset_index(drop=True) for f in frames.values()]
    if any(not k.equals(keys[0]) for k in keys[1:]):
        raise ValueError("the contenders' holdouts differ (different label horizons, materiality or stale "
                         "limits?); compare like with like")
    out = {role: fresh_report(f) for role, f in frames.items()}
    pooled = {role: classification_report(f["label"].to_numpy(), f["p"].to_numpy()) for role, f in frames.items()}
    return {"metrics": out, "pooled": pooled, "from": since.isoformat(), "dates": len(dates),
            "cases": len(keys[0]), "fresh_cases": int(out[contenders[0].role]["n"]), "history_end": end.isoformat()}


def policy_terms(bundle: ScoringBundle, portfolio: Portfolio, logs: pd.DataFrame,
                 blocked: pd.Series = NO_BLOCKS, support: pd.Series = NO_SUPPORT) -> np.ndarray:
    """Per logged decision, the doubly robust term of the value (payment within 7 days) of the policy the
    bundle serves (`pipelines.evaluate.served_targets`: its safe policy, the playbook on day one):
    q(x, served action) + 1[served = logged] / propensity x (paid - q(x, logged action)); q is 0 without a
    response model, which leaves inverse propensity weighting. NaN where the decision's recorded distribution
    (`support`, `pipelines.feedback.Joined`) gave the served action no chance: there the term would be the
    response model's opinion, which no outcome corrects."""
    from pipelines.evaluate import served_targets

    taken = logs["action"].to_numpy()
    rows = np.arange(len(logs))
    q, target = served_targets(bundle, portfolio, logs, blocked)
    terms = ope.dr_terms(logs["label"], logs["propensity"], (target == taken).astype(float), q[rows, taken],
                         q[rows, target])[0]
    space = ActionSpace(tuple(w.name for w in bundle.feature_config.windows))
    supported = supported_actions(support, logs["contact_id"], space.actions)[rows, target]
    return np.where(supported, terms, np.nan)


def _mean_interval(terms: np.ndarray) -> dict:
    """Mean and normal 95% interval of per-decision terms."""
    e = ope.mean_of(terms)
    return {"value": e.value, "low": e.low, "high": e.high, "n": e.n}


def compare_policy(contenders: list[Contender], portfolio: Portfolio, end: pd.Timestamp,
                   blocked: pd.Series = NO_BLOCKS, support: pd.Series = NO_SUPPORT) -> dict:
    """Each contender's DR payment rate on the same held-out logged decisions, and the paired difference
    challenger - champion; an empty comparison when no randomised decision is held out. `blocked`: what each
    carried-out decision's own rules blocked (`pipelines.feedback.Joined`), never a contender's action there;
    `support`: the actions each decision's policy gave a chance; a decision where either contender's action
    had none is left out of the comparison (`unsupported` counts them)."""
    from pipelines.examples_from_logs import decision_examples

    since = later(contenders, "response_holdout_from")
    terms, cache = {}, {}
    for c in contenders:
        config = c.bundle.feature_config
        if config not in cache:
            logs = decision_examples(portfolio, prepare(portfolio, config), config, c.bundle.params, end)
            cache[config] = logs[logs["decided_at"] >= since].reset_index(drop=True)
        logs = cache[config]
        if logs.empty:
            return {"from": since.isoformat(), "decisions": 0, "values": {}, "difference": None}
        terms[c.role] = pd.Series(policy_terms(c.bundle, portfolio, logs, blocked, support),
                                  index=logs["contact_id"].to_numpy())
    both = pd.concat(terms, axis=1, join="inner")
    paired = both.dropna()
    if paired.empty:
        return {"from": since.isoformat(), "decisions": 0, "unsupported": len(both), "values": {},
                "difference": None}
    out = {"from": since.isoformat(), "decisions": len(paired), "unsupported": len(both) - len(paired),
           "values": {role: _mean_interval(paired[role].to_numpy()) for role in terms}}
    out["difference"] = (_mean_interval((paired["challenger"] - paired["champion"]).to_numpy())
                         if len(terms) == 2 else None)
    roles = {c.role: c.bundle for c in contenders}
    if len(terms) == 2 and _serves_playbook(roles.get("challenger")) and _learned(roles.get("champion")):
        out["back_to_playbook"] = True
    return out


def _serves_playbook(bundle: ScoringBundle | None) -> bool:
    """Whether the bundle's policy departs from the team's playbook (its baseline is the playbook)."""
    return bundle is not None and bundle.safe is not None and bundle.safe.playbook is not None


def _learned(bundle: ScoringBundle | None) -> bool:
    """Whether the bundle's baseline is one the data chose in place of the playbook (a learned ranking)."""
    return bundle is not None and bundle.safe is not None and bundle.safe.playbook is None and \
        bool(bundle.safe.ranking)


def decide(cure: dict, policy: dict, margins: dict, gate_passed: bool = True,
           min_baseline_lift: float = 0.0) -> tuple[bool, list[dict]]:
    """Promote when the challenger passed its own quality gate, beats its three-feature baseline on fresh
    arrears by more than `min_baseline_lift` (checked when the challenger has a baseline), and is not worse
    than the champion by more than the margins on fresh-arrears ROC AUC and calibration (debiased RMS error;
    ECE for figures without it) and on the policy's payment
    rate (that check is left out when no randomised decision is held out). Returns the verdict and every
    check (name, ok, text), failures first."""
    ch, cp = cure["metrics"]["challenger"], cure["metrics"]["champion"]
    checks = [{"name": "quality_gate", "ok": gate_passed,
               "text": "passed its own quality gate" if gate_passed else "failed its own quality gate"},
              {"name": "roc_auc", "ok": ch["roc_auc"] >= cp["roc_auc"] - float(margins["max_roc_auc_drop"]),
               "text": f"fresh-arrears ROC AUC {ch['roc_auc']:.4f} vs champion {cp['roc_auc']:.4f} "
                       f"(may drop {margins['max_roc_auc_drop']})"},
              _calibration_check(ch, cp, float(margins["max_ece_rise"]))]
    if "auc_lift" in ch:
        checks.append({"name": "baseline_lift", "ok": ch["auc_lift"] > min_baseline_lift,
                       "text": f"fresh-arrears ROC AUC lift over the three-feature baseline {ch['auc_lift']:+.4f} "
                               f"(must exceed {min_baseline_lift:+g})"})
    if policy.get("values"):
        vc, vp = policy["values"]["challenger"]["value"], policy["values"]["champion"]["value"]
        d = policy["difference"]
        ok = vc >= vp - float(margins["max_policy_value_drop"])
        text = (f"policy payment rate {vc:.4f} vs champion {vp:.4f}, paired difference {d['value']:+.4f} "
                f"[{d['low']:+.4f}, {d['high']:+.4f}] (may drop {margins['max_policy_value_drop']}")
        if policy.get("back_to_playbook"):
            # The burden of proof is on leaving the team's playbook, in both directions: a champion serving a
            # learned baseline is kept against a challenger that returns to the playbook only where the
            # champion is shown better (the paired interval wholly below zero).
            ok = ok or d["high"] >= 0
            text += "; back to the playbook: kept from it only where the champion is shown better"
        checks.append({"name": "policy_value", "ok": ok, "text": text + ")"})
    elif policy.get("unsupported"):
        checks.append({"name": "policy_value", "ok": False,
                       "text": f"none of the {policy['unsupported']:,} held-out decisions gave both policies' actions "
                               f"a chance: the policy cannot be compared"})
    checks.sort(key=lambda c: c["ok"])
    return all(c["ok"] for c in checks), checks


def _calibration_check(ch: dict, cp: dict, rise: float) -> dict:
    """The challenger's fresh-arrears calibration against the champion's on the same holdout: the debiased RMS
    calibration error (what the quality gate judges) when both have it, with the plug-in ECE beside it; the
    ECE alone for figures from before the debiased one existed. The check keeps its name `ece` (its tag is
    `promotion.ece`)."""
    key = "rmsce_debiased" if ch.get("rmsce_debiased") is not None and cp.get("rmsce_debiased") is not None else "ece"
    text = (f"fresh-arrears calibration error (debiased RMS) {ch[key]:.4f} vs champion {cp[key]:.4f} "
            f"(may rise {rise}; plug-in ECE {ch['ece']:.4f} vs {cp['ece']:.4f})" if key != "ece" else
            f"fresh-arrears ECE {ch['ece']:.4f} vs champion {cp['ece']:.4f} (may rise {rise})")
    return {"name": "ece", "ok": ch[key] <= cp[key] + rise, "text": text}


def _line(check: dict) -> str:
    return f"{'ok' if check['ok'] else 'WORSE'}: {check['text']}"


def record(client, model_name: str, challenger: Contender, champion: Contender | None, verdict: dict) -> None:
    """Tag the challenger's version with the decision and its figures; move `@champion` when promoted
    (the old champion is tagged `replaced_by`, and `@challenger` is cleared: it is the champion now)."""
    version = challenger.version
    for key, value in verdict["tags"].items():
        client.set_model_version_tag(model_name, version, key, value)
    if not verdict["promoted"]:
        return
    client.set_registered_model_alias(model_name, "champion", version)
    if champion is not None:
        client.set_model_version_tag(model_name, champion.version, "replaced_by", version)
        client.set_model_version_tag(model_name, champion.version, "replaced_at", verdict["decided_at"])
    if resolve_version(client, f"models:/{model_name}@challenger") == version:
        client.delete_registered_model_alias(model_name, "challenger")


def _tags(promoted: bool, checks: list[dict], champion: Contender | None, cure: dict | None,
          policy: dict | None, decided_at: str) -> dict[str, str]:
    """The model-version tags that say why (MLflow tag values are strings)."""
    tags = {"promotion": "promoted" if promoted else "rejected", "promotion.decided_at": decided_at,
            "promotion.reason": "; ".join(_line(c) for c in checks if not c["ok"])
            or (f"not worse than version {champion.version} on any check" if champion else "no champion yet")}
    if champion is None:
        return tags
    tags["promotion.compared_with"] = champion.version
    tags.update({f"promotion.{c['name']}": _line(c) for c in checks})
    tags["promotion.holdout"] = (f"cure: {cure['cases']} cases ({cure['fresh_cases']} fresh arrears) at "
                                 f"{cure['dates']} as-of dates from {cure['from']}; "
                                 f"policy: {policy['decisions']} logged decisions from {policy['from']}")
    return tags


def load_contender(client, role: str, uri: str) -> Contender | None:
    """The bundle behind a registry URI, None when its alias is unset."""
    version = resolve_version(client, uri)
    if version is None:
        return None
    name = parse_model_uri(uri)[0]
    loaded = load_bundle(f"models:/{name}/{version}", client)
    tags = dict(client.get_model_version(name, version).tags)
    return Contender(role, uri, version, loaded.bundle, tags)


def evaluate_contenders(challenger: Contender, champion: Contender, portfolio: Portfolio, data: Path,
                        margins: dict, min_baseline_lift: float = 0.0, blocked: pd.Series = NO_BLOCKS,
                        support: pd.Series = NO_SUPPORT) -> tuple[bool, list[dict], dict, dict]:
    """Both comparisons and the verdict."""
    contenders = [challenger, champion]
    cure = compare_cure(contenders, portfolio, data)
    policy = compare_policy(contenders, portfolio, pd.Timestamp(cure["history_end"]), blocked, support)
    gate = challenger.tags.get("quality_gate", "passed") == "passed"
    promoted, checks = decide(cure, policy, margins, gate, min_baseline_lift)
    return promoted, checks, cure, policy


def run(data: Path, challenger_uri: str, champion_uri: str, params: dict, dry_run: bool = False,
        out: Path | None = None, log=print, decision_log: str | None = None) -> dict:
    """Everything `cureflow promote` does and prints; the decision is also written as JSON to `out`. The
    portfolio is joined to the decision log as training joins it (`pipelines.feedback.load`: explicit
    `decision_log`, else CUREFLOW_DATABASE_URL, else decisions.db when the export names decisions), so the
    policy is compared on the decisions whose outcomes came back through the CRM's export too: that export
    carries no propensity."""
    from models.contract import read_dir
    from models.features import FeatureConfig
    from pipelines import feedback

    client = registry_client()
    name = parse_model_uri(challenger_uri)[0]
    challenger = load_contender(client, "challenger", challenger_uri)
    if challenger is None:
        raise ValueError(f"no challenger: {challenger_uri} is not set (train a new version first)")
    champion = load_contender(client, "champion", champion_uri)
    decided_at = datetime.now(UTC).isoformat(timespec="seconds")
    report = {"model": name, "challenger": challenger.version, "champion": champion.version if champion else None,
              "decided_at": decided_at, "dry_run": dry_run}
    if champion is not None and champion.version == challenger.version:
        report.update(promoted=False, checks=[], tags={})
        log(f"version {challenger.version} is already the champion; nothing to do")
        return _finish(report, out)
    if champion is None:
        promoted, checks, cure, policy = True, [], None, None
    else:
        lift = float(params["train"]["quality_gate"].get("min_baseline_lift", 0.0))
        portfolio, _, blocked, support = feedback.load(read_dir(data), decision_log,
                                                       FeatureConfig.from_params(params))
        promoted, checks, cure, policy = evaluate_contenders(challenger, champion, portfolio, data,
                                                             params["promote"], lift, blocked, support)
    report.update(promoted=promoted, checks=checks, cure=cure, policy=policy,
                  tags=_tags(promoted, checks, champion, cure, policy, decided_at))
    _print(report, log)
    if not dry_run:
        record(client, name, challenger, champion, report)
    return _finish(report, out)


def _print(report: dict, log) -> None:
    verdict = "PROMOTE" if report["promoted"] else "KEEP the champion"
    dry = " (dry run: nothing recorded)" if report["dry_run"] else ""
    log(f"challenger {report['model']}/{report['challenger']} vs champion "
        f"{report['model']}/{report['champion']}: {verdict}{dry}")
    if report.get("cure"):
        log(f"  same holdout: {report['tags']['promotion.holdout']}")
    for check in report["checks"]:
        log(f"  {_line(check)}")
    if not report["checks"]:
        log(f"  {report['tags']['promotion.reason']}")


def _finish(report: dict, out: Path | None) -> dict:
    if out:
        write_json_atomic(report, out, indent=2, default=float)
    return report

"""Promotion: the challenger replaces the champion only when it is not worse on the same holdout, and the
registry records why (a real MLflow store of its own, so the shared `trained` store keeps its champion)."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from models.config import load_params
from models.registry import configure_mlflow, parse_model_uri, resolve_version
from pipelines.cli import app
from pipelines.promote import decide, policy_terms

MARGINS = {"max_roc_auc_drop": 0.005, "max_ece_rise": 0.005, "max_policy_value_drop": 0.01}


def _cure(challenger: dict, champion: dict) -> dict:
    return {"metrics": {"challenger": challenger, "champion": champion}}


def _policy(challenger: float, champion: float) -> dict:
    d = challenger - champion
    return {"values": {"challenger": {"value": challenger}, "champion": {"value": champion}},
            "difference": {"value": d, "low": d - 0.01, "high": d + 0.01}}


@pytest.mark.parametrize(("auc", "ece", "value", "promoted", "worse"), [
    (0.770, 0.020, 0.30, True, []),
    (0.766, 0.024, 0.291, True, []),            # worse on all three, each within its margin
    (0.760, 0.020, 0.30, False, ["roc_auc"]),   # AUC 0.010 below: past the 0.005 margin
    (0.770, 0.030, 0.30, False, ["ece"]),
    (0.770, 0.020, 0.28, False, ["policy_value"]),
    (0.700, 0.090, 0.10, False, ["roc_auc", "ece", "policy_value"]),
])
def test_challenger_is_promoted_only_when_not_worse_by_the_margins(auc, ece, value, promoted, worse):
    ok, checks = decide(_cure({"roc_auc": auc, "ece": ece}, {"roc_auc": 0.770, "ece": 0.020}),
                        _policy(value, 0.30), MARGINS)
    assert ok is promoted
    assert sorted(c["name"] for c in checks if not c["ok"]) == sorted(worse)
    assert [c["ok"] for c in checks] == sorted(c["ok"] for c in checks), "failures come first"


def test_a_return_to_the_playbook_needs_no_proof_only_the_learned_baseline_it_leaves_does():
    cure = _cure({"roc_auc": 0.77, "ece": 0.02}, {"roc_auc": 0.77, "ece": 0.02})
    unclear = {**_policy(0.26, 0.30), "difference": {"value": -0.04, "low": -0.12, "high": 0.04}}
    assert not decide(cure, unclear, MARGINS)[0]                              # a learned challenger: kept out
    ok, checks = decide(cure, {**unclear, "back_to_playbook": True}, MARGINS)
    assert ok and "back to the playbook" in checks[-1]["text"]                # back to the playbook: promoted
    shown = {**_policy(0.26, 0.30), "difference": {"value": -0.04, "low": -0.07, "high": -0.01},
             "back_to_playbook": True}
    assert not decide(cure, shown, MARGINS)[0]                                # the champion shown better: kept


def test_which_bundles_serve_the_playbook_and_which_a_learned_baseline():
    from types import SimpleNamespace

    from models.safe import SafePolicy
    from pipelines.promote import _learned, _serves_playbook

    playbook = SimpleNamespace(safe=SafePolicy(playbook=object()))
    learned = SimpleNamespace(safe=SafePolicy(baseline=3, ranking=(3, 5, 1)))
    fixed = SimpleNamespace(safe=SafePolicy(baseline=3))          # a team's own fixed action: not learned
    assert _serves_playbook(playbook) and not _learned(playbook)
    assert _learned(learned) and not _serves_playbook(learned)
    assert not _learned(fixed) and not _serves_playbook(fixed)
    assert not _serves_playbook(SimpleNamespace(safe=None)) and not _learned(None)


def test_a_challenger_that_failed_its_quality_gate_is_never_promoted():
    ok, checks = decide(_cure({"roc_auc": 0.9, "ece": 0.01}, {"roc_auc": 0.7, "ece": 0.05}), _policy(0.4, 0.3),
                        MARGINS, gate_passed=False)
    assert not ok and checks[0]["name"] == "quality_gate" and not checks[0]["ok"]


def test_policy_check_is_left_out_without_held_out_decisions():
    ok, checks = decide(_cure({"roc_auc": 0.77, "ece": 0.02}, {"roc_auc": 0.77, "ece": 0.02}), {}, MARGINS)
    assert ok and {c["name"] for c in checks} == {"quality_gate", "roc_auc", "ece"}


def test_calibration_check_reads_the_debiased_error_when_both_have_it():
    champion = {"roc_auc": 0.77, "ece": 0.060, "rmsce_debiased": 0.020}
    ok, checks = decide(_cure({"roc_auc": 0.77, "ece": 0.050, "rmsce_debiased": 0.030}, champion), {}, MARGINS)
    check = next(c for c in checks if c["name"] == "ece")
    assert not ok and not check["ok"] and "debiased RMS" in check["text"] and "plug-in ECE 0.0500" in check["text"]
    ok, _ = decide(_cure({"roc_auc": 0.77, "ece": 0.080, "rmsce_debiased": 0.024}, champion), {}, MARGINS)
    assert ok   # a plug-in ECE 0.02 above the champion's is noise when the debiased error is within the margin


def test_promotion_needs_registry_uris():
    assert parse_model_uri("models:/cureflow@challenger") == ("cureflow", "challenger", None)
    assert parse_model_uri("models:/cureflow/7") == ("cureflow", None, "7")
    with pytest.raises(ValueError, match="registry URI"):
        parse_model_uri("outputs/train/bundle.joblib")


@pytest.fixture(scope="module")
def registry(trained, tmp_path_factory):
    """A store of its own: the trained bundle registered as version 1 (the first champion), then a clearly
    worse cure model (leaves of at least 5,000 examples: no split, one constant score) as version 2."""
    from pipelines.register import register_dir
    from pipelines.train import run

    root = tmp_path_factory.mktemp("promote")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    params = load_params()
    params["train"]["quality_gate"].update(min_roc_auc=0.0, max_ece=1.0, min_baseline_lift=-1.0)
    first = register_dir(trained["root"] / "train", params=params, log=lambda *_: None)
    bad = load_params()
    bad["cure"].update(n_folds=3, min_child_share=None, stack_baseline=False)  # no cap, no baseline to lean on
    bad["cure"]["lgbm"].update(n_estimators=20, min_child_samples=5000)
    bad["train"]["quality_gate"].update(min_roc_auc=0.0, max_ece=1.0, min_baseline_lift=-1.0)
    second = run(trained["data"], root / "bad", params=bad, log=lambda *_: None)
    yield {"uri": uri, "root": root, "first": first, "second": second, "data": trained["data"],
           "trained": trained, "params": params}
    if old is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old
    configure_mlflow()  # training here pointed MLflow's process-wide tracking and registry URIs at this store


def _alias(client: MlflowClient, alias: str) -> str | None:
    return resolve_version(client, f"models:/cureflow@{alias}")


@pytest.mark.slow
def test_train_makes_a_new_version_the_challenger_and_keeps_the_champion(registry):
    client = MlflowClient(registry["uri"])
    assert registry["first"]["champion"] and not registry["first"]["challenger"]
    assert registry["second"]["challenger"] and not registry["second"]["champion"]
    assert _alias(client, "champion") == registry["first"]["version"] == "1"
    assert _alias(client, "challenger") == registry["second"]["version"] == "2"


@pytest.mark.slow
def test_worse_challenger_is_rejected_on_the_same_holdout_and_the_reason_is_recorded(registry, tmp_path):
    from pipelines.promote import run

    client = MlflowClient(registry["uri"])
    params = load_params()
    dry = run(registry["data"], "models:/cureflow@challenger", "models:/cureflow@champion", params, dry_run=True,
              out=tmp_path / "dry.json", log=lambda *_: None)
    assert not dry["promoted"] and "promotion" not in client.get_model_version("cureflow", "2").tags
    report = run(registry["data"], "models:/cureflow@challenger", "models:/cureflow@champion", params,
                 out=tmp_path / "promotion.json", log=lambda *_: None)
    assert not report["promoted"]
    assert json.loads((tmp_path / "promotion.json").read_text())["challenger"] == "2"
    # the champion scored on the common holdout is exactly its training holdout (same data, same dates),
    # judged on fresh arrears
    trained_auc = registry["trained"]["info"]["metrics"]["fresh_roc_auc"]
    assert report["cure"]["metrics"]["champion"]["roc_auc"] == pytest.approx(trained_auc, abs=1e-12)
    assert report["cure"]["metrics"]["challenger"]["roc_auc"] < trained_auc - params["promote"]["max_roc_auc_drop"]
    assert report["policy"]["decisions"] > 0
    tags = client.get_model_version("cureflow", "2").tags
    assert tags["promotion"] == "rejected" and "ROC AUC" in tags["promotion.reason"]
    assert tags["promotion.compared_with"] == "1" and tags["promotion.roc_auc"].startswith("WORSE")
    assert _alias(client, "champion") == "1" and _alias(client, "challenger") == "2"


@pytest.mark.slow
def test_the_policy_is_compared_on_a_crm_exports_decisions_with_their_propensities_from_the_log(
        registry, tmp_path, monkeypatch):
    """A week whose contacts name their decisions and carry no propensity (what a CRM exports): promote
    joins the decision log as training does, so those decisions count in the policy comparison: compared, or
    counted as unsupported where either contender's action had no chance under the decision's experiment (the
    two contenders here may learn different baselines, and the batch's experiments are built around one)."""
    from pipelines.promote import run
    from pipelines.simulate import play
    from serving.batch import BatchOptions, score_source

    url = f"sqlite:///{tmp_path / 'decisions.db'}"
    queue = tmp_path / "queue.parquet"
    score_source(registry["data"], queue, BatchOptions(model_uri=str(registry["trained"]["bundle_path"]),
                                                       decision_log=url, progress=False))
    week = play(registry["data"], queue, tmp_path / "week1", days=10)
    monkeypatch.delenv("CUREFLOW_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path / "week1")  # no decisions.db here: without the option, no log is found
    params = load_params()
    ask = {"dry_run": True, "out": None, "log": lambda *_: None}
    alone = run(week, "models:/cureflow@challenger", "models:/cureflow@champion", params, **ask)
    joined = run(week, "models:/cureflow@challenger", "models:/cureflow@champion", params, decision_log=url, **ask)
    judged = [p["policy"]["decisions"] + p["policy"].get("unsupported", 0) for p in (joined, alone)]
    assert judged[0] > judged[1]
    assert joined["cure"] == alone["cure"]  # the cure comparison does not read propensities


@pytest.mark.slow
def test_challenger_not_worse_is_promoted_by_the_command_and_the_old_champion_is_tagged(registry, tmp_path):
    from pipelines.register import register_dir

    client = MlflowClient(registry["uri"])
    third = register_dir(registry["trained"]["root"] / "train", params=registry["params"],
                         log=lambda *_: None)  # the champion's twin
    assert third["challenger"] and _alias(client, "challenger") == third["version"]
    out = tmp_path / "promotion.json"
    done = CliRunner().invoke(app, ["promote", "--data", str(registry["data"]), "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert "PROMOTE" in done.output and "same holdout" in done.output
    report = json.loads(out.read_text())
    assert report["promoted"] and report["policy"]["difference"]["value"] == pytest.approx(0.0, abs=1e-12)
    assert _alias(client, "champion") == third["version"] and _alias(client, "challenger") is None
    old = client.get_model_version("cureflow", "1").tags
    assert old["replaced_by"] == third["version"]
    assert client.get_model_version("cureflow", third["version"]).tags["promotion"] == "promoted"
    again = CliRunner().invoke(app, ["promote", "--data", str(registry["data"]), "--out", str(out)])
    assert again.exit_code == 2 and "no challenger" in again.output


@pytest.mark.slow
def test_a_retrain_whose_cure_model_fails_the_gate_registers_its_policy_on_the_champions_cure_model(registry,
                                                                                                   tmp_path):
    """A store of its own: the bad cure model of version 2 fails the shipped gate. Without a champion it is
    not a challenger; with one, the version registered is the retrain's policy on the champion's cure model,
    tagged with where its cure model came from, and it becomes the challenger for `cureflow promote`."""
    import joblib
    import mlflow

    from models.contract import read_dir
    from models.registry import load_bundle
    from pipelines.register import register_dir

    old = os.environ["MLFLOW_TRACKING_URI"]
    os.environ["MLFLOW_TRACKING_URI"] = uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    try:
        strict, quiet = load_params(), {"log": lambda *_: None}
        assert strict["train"]["policy_updates"] is False   # shipped off (docs/benchmarks.md: it lost on lease)
        strict["train"]["policy_updates"] = True
        alone = register_dir(registry["root"] / "bad", params=strict, **quiet)
        assert not alone["challenger"] and not alone["champion"] and alone["cure_model_from"] is None
        first = register_dir(registry["trained"]["root"] / "train", params=registry["params"], **quiet)
        assert first["champion"]
        off = register_dir(registry["root"] / "bad", params=load_params(), **quiet)
        assert not off["challenger"] and off["cure_model_from"] is None   # as shipped: the gate holds both back
        update = register_dir(registry["root"] / "bad", params=strict, **quiet)
        client = MlflowClient(uri)
        assert update["challenger"] and _alias(client, "challenger") == update["version"] == "4"
        assert _alias(client, "champion") == first["version"] == "2"
        tags = client.get_model_version("cureflow", "4").tags
        assert tags["quality_gate"] == "passed" and tags["cure_model_from"].startswith("cureflow/2: ")
        assert "failed the quality gate (fresh-arrears lift" in tags["cure_model_from"]  # why it was not kept
        run = mlflow.MlflowClient(uri).get_run(update["run_id"])
        retrained = json.loads((registry["root"] / "bad" / "metrics.json").read_text())
        assert run.data.metrics["holdout_fresh_roc_auc"] == retrained["fresh_roc_auc"]  # the run: the retrain's
        assert retrained["fresh_roc_auc"] != registry["trained"]["info"]["metrics"]["fresh_roc_auc"]
        served = load_bundle("models:/cureflow@challenger", client).bundle
        champion = load_bundle("models:/cureflow@champion", client).bundle
        retrain = joblib.load(registry["root"] / "bad" / "bundle.joblib")
        data, as_of = read_dir(registry["data"]), pd.Timestamp(retrain.metadata["history_end"])
        served_rows, champion_rows, retrain_rows = (b.score(data, as_of).set_index("account_id").sort_index()
                                                    for b in (served, champion, retrain))
        assert len(served_rows) > 20
        assert served_rows["cure_probability"].equals(champion_rows["cure_probability"])
        assert not served_rows["cure_probability"].equals(retrain_rows["cure_probability"])
        action = ["channel", "offer", "window_start", "propensity"]
        assert served_rows[action].equals(retrain_rows[action])  # the policy is the retrain's
        assert served.response is not None and served.metadata["cure_model_from"]["model_version"] == "cureflow/2"
        assert served.safe.margin == retrain.safe.margin
    finally:
        os.environ["MLFLOW_TRACKING_URI"] = old
        configure_mlflow()


def test_the_policy_compared_is_the_one_the_bundle_serves_not_the_models_argmax(trained):
    """`policy_terms` judges each bundle by the action its safe policy serves on every logged decision: the
    baseline where the margin is infinite (on day one, no response model: the baseline, not no contact), the
    model's best action where any gain departs."""
    import dataclasses

    import joblib
    import numpy as np

    from models.contract import read_dir
    from models.features import prepare
    from pipelines.evaluate import greedy_targets, served_targets
    from pipelines.examples_from_logs import decision_examples

    bundle = joblib.load(trained["bundle_path"])
    portfolio, config = read_dir(trained["data"]), bundle.feature_config
    logs = decision_examples(portfolio, prepare(portfolio, config), config, bundle.params,
                             pd.Timestamp(bundle.metadata["history_end"])).reset_index(drop=True)
    space, taken = bundle.response.space, logs["action"].to_numpy()
    rule = space.actions.index(("phone", "weekday_evening", "instalment_plan"))  # the fixture's own rule
    assert bundle.safe.baseline == rule and bundle.safe.playbook is None
    _, greedy = greedy_targets(bundle, portfolio, logs)
    always = dataclasses.replace(bundle, safe=dataclasses.replace(bundle.safe, margin=-np.inf))
    assert np.array_equal(served_targets(always, portfolio, logs)[1], greedy)
    never = dataclasses.replace(bundle, safe=dataclasses.replace(bundle.safe, margin=np.inf))
    _, base = served_targets(never, portfolio, logs)
    phone_ok = portfolio.accounts.set_index("account_id").reindex(logs["account_id"])["consent_phone"].to_numpy(bool)
    assert (base == rule).sum() > 100 and not np.array_equal(base, greedy)
    assert not (base[~phone_ok] == rule).any()  # never the call where phone consent is missing
    day_one = dataclasses.replace(never, response=None)
    q, target = served_targets(day_one, portfolio, logs)
    assert np.array_equal(target, base) and not q.any()
    terms = policy_terms(day_one, portfolio, logs)
    hit = target == taken
    expected = np.where(hit, logs["label"].to_numpy(float) / logs["propensity"].to_numpy(float), 0.0)
    assert np.allclose(terms, expected)   # no model: inverse propensity weighting of the baseline's own action
    before_safe = dataclasses.replace(bundle, safe=None)   # a bundle from before the safe policy: the greedy action
    assert np.array_equal(served_targets(before_safe, portfolio, logs)[1], greedy)
    q, target = served_targets(dataclasses.replace(before_safe, response=None), portfolio, logs)
    assert not q.any() and (target == space.none_index).all()   # and without a response model, no contact
    # where a decision's recorded distribution gave the served action no chance, its term is no evidence
    contact_ids = logs["contact_id"].to_numpy(dtype=object)
    others = frozenset(a for a in space.actions if a != space.actions[rule])
    support = pd.Series([others] * 10, index=contact_ids[:10], dtype=object)
    terms = policy_terms(never, portfolio, logs, support=support)
    gone = np.isnan(terms)
    assert gone[:10].tolist() == (base[:10] == rule).tolist() and not gone[10:].any()


def test_a_policy_no_held_out_decision_could_have_served_is_not_promoted():
    ok, checks = decide(_cure({"roc_auc": 0.8, "ece": 0.01}, {"roc_auc": 0.7, "ece": 0.05}),
                        {"decisions": 0, "unsupported": 40, "values": {}, "difference": None}, MARGINS)
    assert not ok and checks[0]["name"] == "policy_value" and "cannot be compared" in checks[0]["text"]

"""The `cureflow` command: thin typer commands, paths in and paths out, logic imported from the library."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup


def _user_errors() -> tuple[type[Exception], ...]:
    """What bad input raises (bad tables or params, a missing file or model, an unreadable option, no decision
    log to record in): one line and exit code 2, never a traceback. Anything else is a bug and keeps its trace."""
    from models.contract import ContractError
    from models.decision_log import DecisionLogUnavailable
    from models.registry import ModelNotFound

    return ContractError, FileNotFoundError, ModelNotFound, DecisionLogUnavailable, ValueError


class _Commands(TyperGroup):
    """The command group with the one error boundary of every command (nothing is written on an error)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except Exception as err:
            if not isinstance(err, _user_errors()):
                raise
            typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=2) from None


app = typer.Typer(cls=_Commands, help="cureflow: delinquency risk and next-best-action for collections.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
audit = typer.Typer(cls=_Commands, help="The decision log's tamper evidence and retention.", no_args_is_help=True)
app.add_typer(audit, name="audit")
DecisionLogUrl = Annotated[str | None, typer.Option("--decision-log", help="decision log URL; default "
                                                    "CUREFLOW_DATABASE_URL or sqlite:///decisions.db")]


def _decision_log(url: str | None):
    from models.decision_log import DecisionLog
    from serving.batch import default_decision_log

    return DecisionLog(url or default_decision_log())


@audit.command("verify")
def audit_verify(decision_log: DecisionLogUrl = None) -> None:
    """Check every partition's hash chain; exit 1 and name the first break of each broken one."""
    log = _decision_log(decision_log)
    try:
        report = log.verify()
    finally:
        log.close()
    for part, result in report["partitions"].items():
        typer.echo(f"{part}: {result['records']} records, {result['problem'] or 'chain intact'}")
    if report["unchained"]:
        typer.echo(f"{report['unchained']} records from before the chain (no hash to check)")
    if not report["ok"]:
        raise typer.Exit(code=1)


@audit.command("purge")
def audit_purge(decision_log: DecisionLogUrl = None,
                now: Annotated[str | None, typer.Option(help="the instant retention counts back from, ISO 8601 "
                                                             "with offset; default now")] = None) -> None:
    """Remove the records past their rule profile's retention (jp 10 years, us 3 years), and say what went."""
    from datetime import UTC, datetime

    when = pd_timestamp(now).to_pydatetime() if now else datetime.now(UTC)
    log = _decision_log(decision_log)
    try:
        removed = log.purge(when)
    finally:
        log.close()
    for r in removed:
        typer.echo(f"{r['partition']}: removed {r['removed']} records created {r['oldest'].isoformat()} .. "
                   f"{r['newest'].isoformat()} (retention ends {r['cutoff'].isoformat()})")
    typer.echo(f"removed {sum(r['removed'] for r in removed)} records in all")


@app.callback()
def _options(quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars (they are also off "
                                                                         "when stderr is not a terminal)")] = False
             ) -> None:
    """cureflow: delinquency risk and next-best-action for collections."""
    import os

    if quiet:
        os.environ["CUREFLOW_QUIET"] = "1"


@app.command()
def simulate(
    accounts: Annotated[int, typer.Option(min=1, help="number of contracts")] = 20_000,
    months: Annotated[int, typer.Option(min=1, help="months of history")] = 24,
    seed: Annotated[int, typer.Option(help="random seed (same seed, same portfolio)")] = 7,
    out: Annotated[Path, typer.Option(help="output directory")] = Path("data/portfolio"),
    end: Annotated[str | None, typer.Option(help="history end (ISO 8601 with offset); default params.yaml")] = None,
    preset: Annotated[str | None, typer.Option(help="a world of params.yaml simulator_presets (lease, digital, "
                                                    "mature, drawn); default: the simulator section as it is")] = None,
    experiment_share: Annotated[float | None, typer.Option(
        min=0.0, max=1.0, help="share of past decisions that were randomised; default: the preset's")] = None,
) -> None:
    """Simulate a car-lease portfolio in the data contract, with its ground truth under OUT/truth."""
    from pipelines.simulate import main

    main(accounts=accounts, months=months, seed=seed, out=out, end=end, preset=preset,
         experiment_share=experiment_share)


@app.command()
def play(
    data: Annotated[Path, typer.Option(help="a portfolio `cureflow simulate` (or `play`) wrote")] = Path(
        "data/portfolio"),
    queue: Annotated[Path, typer.Option(help="the work queue `cureflow score` wrote for it")] = Path(
        "outputs/work_queue.parquet"),
    out: Annotated[Path, typer.Option(help="where the portfolio a week later goes")] = Path("data/week1"),
    days: Annotated[int, typer.Option(min=1, max=31, help="days the customers respond before the export")] = 7,
) -> None:
    """Simulated portfolios only: carry out a work queue and let the customers respond, then write the tables as
    the CRM would export them (each contact names its decision_id, no propensity): a week of outcomes for the
    quick start and for trying the feedback loop."""
    from pipelines.simulate import play as run

    run(data, queue, out, days)


FEEDBACK_HELP = ("the decision log to join (propensities of the contacts that name a decision, outcomes reported "
                 "through the API); default CUREFLOW_DATABASE_URL, else decisions.db when the export names "
                 "decisions")


@app.command()
def train(
    data: Annotated[Path, typer.Option(help="directory with the four contract tables")] = Path("data/portfolio"),
    out: Annotated[Path, typer.Option(help="where the bundle, metrics and plots go")] = Path("outputs/train"),
    register: Annotated[bool, typer.Option(help="log to MLflow and register the model")] = True,
    history_end: Annotated[str | None, typer.Option(help="end of the observed history (ISO 8601)")] = None,
    examples: Annotated[Path | None, typer.Option(help="training examples from `cureflow features`; "
                                                       "default: built from --data")] = None,
    decision_log: Annotated[str | None, typer.Option(help=FEEDBACK_HELP)] = None,
) -> None:
    """Train the cure model and response arms from any directory in the contract; log and register them
    (a version past the quality gate becomes @challenger, or @champion when there is none yet). Contacts that
    name a cureflow decision take its propensity from the decision log, and outcomes reported through the API
    join the contacts (README "Feedback from the CRM")."""
    from pipelines.train import run

    run(data, out, register=register, history_end_at=history_end, examples_dir=examples, decision_log=decision_log)


@app.command()
def features(
    data: Annotated[Path, typer.Option(help="directory with the four contract tables")] = Path("data/portfolio"),
    out: Annotated[Path, typer.Option(help="where the training examples go")] = Path("outputs/features"),
    history_end: Annotated[str | None, typer.Option(help="end of the observed history (ISO 8601)")] = None,
    decision_log: Annotated[str | None, typer.Option(help=FEEDBACK_HELP)] = None,
) -> None:
    """Build the training examples (cure examples and logged decisions with their features): the DVC
    features stage, read by `cureflow train --examples`."""
    from models.config import load_params
    from models.contract import read_dir
    from models.features import FeatureConfig
    from pipelines import feedback
    from pipelines.features import build_examples, save_examples

    params = load_params()
    portfolio = feedback.load(read_dir(data), decision_log, FeatureConfig.from_params(params)).portfolio
    save_examples(build_examples(portfolio, data, params, history_end), out)


@app.command()
def register(
    train_dir: Annotated[Path, typer.Option(help="what `cureflow train --no-register` wrote")] = Path("outputs/train"),
    evaluation: Annotated[Path | None, typer.Option(help="the JSON of `cureflow evaluate`, logged with the run")
                          ] = None,
    out: Annotated[Path | None, typer.Option(help="run id, version and aliases as JSON")] = None,
) -> None:
    """Log a trained bundle to MLflow and register it (the DVC register stage)."""
    from models.files import write_json_atomic
    from pipelines.register import register_dir

    info = register_dir(train_dir, evaluation)
    if out:
        write_json_atomic(info, out, newline=True, indent=2)


@app.command()
def score(
    data: Annotated[str, typer.Option(help="directory with the four contract tables (parquet or csv), or a "
                                           "SQLAlchemy URL of a database holding them")] = "data/portfolio",
    as_of: Annotated[str | None, typer.Option(help="as-of instant, ISO 8601 with offset; default: end of history")
                     ] = None,
    out: Annotated[Path, typer.Option(help="output file, .parquet or .csv")] = Path("outputs/work_queue.parquet"),
    model: Annotated[str, typer.Option(help="model URI or bundle path")] = "models:/cureflow@champion",
    top: Annotated[int, typer.Option(help="print the top N of the work queue")] = 0,
    phone_capacity: Annotated[str | None, typer.Option(help="calls a day, or 'unlimited'; default params")] = None,
    explore: Annotated[float | None, typer.Option(help="exploration rate, 0 = off; default params")] = None,
    engine: Annotated[str, typer.Option(help="local (chunked, resumable) or spark (PySpark)")] = "local",
    chunk_size: Annotated[int | None, typer.Option(help="accounts per chunk; default params batch.chunk_size")
                          ] = None,
    decision_log: Annotated[str | None, typer.Option(help="decision log URL; default CUREFLOW_DATABASE_URL or "
                                                          "sqlite:///decisions.db")] = None,
) -> None:
    """Score every overdue account as of AS_OF and write the work queue, highest priority first, with its
    summary and HTML report beside it; one decision-log record per account and run. A run killed and started
    again resumes from its finished chunks."""
    from serving.batch import BatchOptions, print_queue, score_source

    options = BatchOptions(as_of=as_of, model_uri=model, phone_capacity=phone_capacity, explore=explore,
                           engine=engine, chunk_size=chunk_size, decision_log=decision_log)
    queue = score_source(data, out, options)
    if top:
        print_queue(queue, top)


@app.command()
def evaluate(
    data: Annotated[Path, typer.Option(help="directory with the four contract tables (and truth/ if simulated)")
                    ] = Path("data/portfolio"),
    model: Annotated[str, typer.Option(help="model URI or bundle path")] = "models:/cureflow@champion",
    as_of: Annotated[str | None, typer.Option(help="as-of instant for the truth comparison; default: history end")
                     ] = None,
    explore: Annotated[float | None, typer.Option(help="exploration rate; default params policy.explore")] = None,
    out: Annotated[Path, typer.Option(help="the report as JSON")] = Path("outputs/evaluation.json"),
    examples: Annotated[Path | None, typer.Option(help="training examples from `cureflow features` (their logged "
                                                       "decisions are reused); default: built from --data")] = None,
    decision_log: Annotated[str | None, typer.Option(help=FEEDBACK_HELP)] = None,
) -> None:
    """Off-policy value of the policy on held-out logs; on simulated data, its true value against no contact,
    the best single action and the oracle, and a rule audit."""
    from models.contract import read_dir
    from models.features import prepare
    from models.policy import explore_rate
    from models.registry import load_bundle
    from pipelines import evaluate as evaluation
    from pipelines import feedback
    from pipelines.features import load_examples, resolve_history_end

    eps = None if explore is None else explore_rate(explore)
    bundle = load_bundle(model).bundle
    portfolio, _, blocked, _ = feedback.load(read_dir(data), decision_log, bundle.feature_config)
    logs = load_examples(examples).decisions if examples else None
    end = resolve_history_end(data, prepare(portfolio, bundle.feature_config))
    when = pd_timestamp(as_of) if as_of else end
    evaluation.run(bundle, portfolio, data, when, end, bundle.policy_config.explore if eps is None else eps, out,
                   logs=logs, blocked=blocked)


@app.command()
def experiments(
    data: Annotated[Path, typer.Option(help="directory with the four contract tables")] = Path("data/portfolio"),
    out: Annotated[Path, typer.Option(help="the readout as HTML (a JSON file is written beside it)")
                   ] = Path("outputs/experiments.html"),
    history_end: Annotated[str | None, typer.Option(help="ISO 8601 instant with offset; default: end of history")
                           ] = None,
    decision_log: Annotated[str | None, typer.Option(help=FEEDBACK_HELP)] = None,
) -> None:
    """The A/B readout of every randomised decision logged: per channel, window, offer and template, and per
    lifestyle and days-past-due band, the payment rate, the lift over the hold-out, the winners, and how many
    more decisions each undecided arm needs."""
    from pipelines import experiments as readout

    readout.run(data, out, end=pd_timestamp(history_end) if history_end else None, decision_log=decision_log)


def pd_timestamp(text: str):
    """An ISO 8601 instant with its offset (`models.as_of.parse_as_of`), in UTC, or a clear error for typer."""
    from models.as_of import EXAMPLE, AsOfWithoutOffset, parse_as_of

    try:
        when = parse_as_of(text)
    except AsOfWithoutOffset:
        raise typer.BadParameter(f"needs a UTC offset, for example {EXAMPLE}: {text!r}") from None
    return when.tz_convert("UTC")


@app.command()
def serve(
    model: Annotated[str | None, typer.Option(help="model URI or bundle path; default CUREFLOW_MODEL_URI "
                                                   "or models:/cureflow@champion")] = None,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="worker processes")] = 1,
    insecure: Annotated[bool, typer.Option(help="allow starting without API keys (local use only)")] = False,
) -> None:
    """Run the real-time scoring API (FastAPI + uvicorn). Settings come from CUREFLOW_* variables."""
    import os

    import uvicorn

    from serving.observability import uvicorn_log_config
    from serving.security import require_keys
    from serving.settings import load_settings

    if model:
        os.environ["CUREFLOW_MODEL_URI"] = model
    if insecure:
        os.environ["CUREFLOW_INSECURE"] = "true"
    require_keys(load_settings())
    if workers > 1:  # one model loaded, then the workers forked from it (serving/prefork.py)
        from serving.prefork import PreforkServer

        PreforkServer(host, port, workers).run()  # until SIGTERM or SIGINT to the master
        return
    uvicorn.run("serving.api:app_from_env", factory=True, host=host, port=port, log_level="warning",
                access_log=False, log_config=uvicorn_log_config())


@app.command()
def promote(
    data: Annotated[Path, typer.Option(help="directory with the contract tables to compare on")
                    ] = Path("data/portfolio"),
    challenger: Annotated[str, typer.Option(help="registry URI of the challenger")] = "models:/cureflow@challenger",
    champion: Annotated[str, typer.Option(help="registry URI of the champion")] = "models:/cureflow@champion",
    dry_run: Annotated[bool, typer.Option(help="compare and print; move no alias, write no tag")] = False,
    out: Annotated[Path | None, typer.Option(help="the comparison as JSON")] = Path("outputs/promotion.json"),
    decision_log: Annotated[str | None, typer.Option(help=FEEDBACK_HELP)] = None,
) -> None:
    """Compare the challenger with the champion on the same holdout (cure ROC AUC and ECE, the policy's
    off-policy value on the logged decisions, their propensities from the decision log like training's);
    move @champion only when the challenger is not worse by params' margins."""
    from models.config import load_params
    from pipelines.promote import run

    run(data, challenger, champion, load_params(), dry_run=dry_run, out=out, decision_log=decision_log)


@app.command()
def monitor(
    data: Annotated[Path, typer.Option(help="directory with the four contract tables")] = Path("data/portfolio"),
    model: Annotated[str, typer.Option(help="model URI or bundle path")] = "models:/cureflow@champion",
    queue: Annotated[Path | None, typer.Option(help="the batch's work queue (`cureflow score`); default: "
                                                    "score --as-of now")] = None,
    as_of: Annotated[str | None, typer.Option(help="as-of instant when no --queue; default: history end")] = None,
    out: Annotated[Path | None, typer.Option(help="the comparison as JSON")] = Path("outputs/monitor.json"),
    fail_on_drift: Annotated[bool, typer.Option(help="exit with code 1 when drift is flagged")] = False,
) -> None:
    """Compare the latest batch with the model's training data: population stability of the features, the
    cure chance and the action mix; flag drift past params' thresholds."""
    from models.config import load_params
    from models.contract import read_dir
    from models.features import prepare
    from models.registry import load_bundle
    from pipelines import monitor as monitoring
    from pipelines.features import resolve_history_end

    bundle = load_bundle(model).bundle
    portfolio = read_dir(data)
    when = pd_timestamp(as_of) if as_of else None
    if when is None and queue is None:
        when = resolve_history_end(data, prepare(portfolio, bundle.feature_config))
    report = monitoring.run(bundle, portfolio, when, queue, load_params(), out)
    if fail_on_drift and report["drift"]:
        raise typer.Exit(code=1)


@app.command("ingest-uci")
def ingest_uci(
    data: Annotated[Path, typer.Option(help="the UCI credit-card CSV")] = Path(
        "../shared/data/uci_credit_card/UCI_Credit_Card.csv"),
    out: Annotated[Path, typer.Option(help="output directory for the contract tables")] = Path("data/uci"),
) -> None:
    """Write the UCI credit-card file (Taiwan 2005) in the data contract, with the params `cureflow train` needs
    for its monthly cure task (OUT/params.yaml, via CUREFLOW_PARAMS); pipelines/uci.py says what is lost."""
    from pipelines.uci import main

    main(data, out)


@app.command("ingest-kiva")
def ingest_kiva(
    data: Annotated[Path, typer.Option(help="the Kiva loans JSON")] = Path(
        "../shared/data/kiva/kiva_loans_2005_2006.json"),
    out: Annotated[Path, typer.Option(help="output directory for the contract tables")] = Path("data/kiva"),
) -> None:
    """Write the Kiva microloans (schedules and dated repayments, USD) in the data contract, with the params
    `cureflow train` needs (OUT/params.yaml, via CUREFLOW_PARAMS); pipelines/kiva.py gives the choices."""
    from pipelines.kiva import main

    main(data, out)


if __name__ == "__main__":
    app()

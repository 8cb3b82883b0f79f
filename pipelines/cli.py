"""The `cureflow` command: thin typer commands, paths in and paths out, logic imported from the library."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="cureflow: delinquency risk and next-best-action for collections.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)


def _fail(err: Exception) -> None:
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@app.command()
def simulate(
    accounts: Annotated[int, typer.Option(help="number of contracts")] = 20_000,
    months: Annotated[int, typer.Option(help="months of history")] = 24,
    seed: Annotated[int, typer.Option(help="random seed (same seed, same portfolio)")] = 7,
    out: Annotated[Path, typer.Option(help="output directory")] = Path("data/portfolio"),
    end: Annotated[str | None, typer.Option(help="history end (ISO 8601 with offset); default params.yaml")] = None,
) -> None:
    """Simulate a car-lease portfolio in the data contract, with its ground truth under OUT/truth."""
    from pipelines.simulate import main

    main(accounts=accounts, months=months, seed=seed, out=out, end=end)


@app.command()
def train(
    data: Annotated[Path, typer.Option(help="directory with the four contract tables")] = Path("data/portfolio"),
    out: Annotated[Path, typer.Option(help="where the bundle, metrics and plots go")] = Path("outputs/train"),
    register: Annotated[bool, typer.Option(help="log to MLflow and register the model")] = True,
    history_end: Annotated[str | None, typer.Option(help="end of the observed history (ISO 8601)")] = None,
) -> None:
    """Train the cure model and response arms from any directory in the contract; log and register them."""
    from models.contract import ContractError
    from pipelines.train import run

    try:
        run(data, out, register=register, history_end_at=history_end)
    except ContractError as err:
        _fail(err)


@app.command()
def score(
    data: Annotated[Path, typer.Option(help="directory with the four contract tables")] = Path("data/portfolio"),
    as_of: Annotated[str | None, typer.Option(help="as-of instant, ISO 8601 with offset; default: end of history")
                     ] = None,
    out: Annotated[Path, typer.Option(help="output file, .parquet or .csv")] = Path("outputs/work_queue.parquet"),
    model: Annotated[str, typer.Option(help="model URI or bundle path")] = "models:/cureflow@champion",
    top: Annotated[int, typer.Option(help="print the top N of the work queue")] = 0,
    phone_capacity: Annotated[str | None, typer.Option(help="calls a day, or 'unlimited'; default params")] = None,
    explore: Annotated[float | None, typer.Option(help="exploration rate, 0 = off; default params")] = None,
) -> None:
    """Score every overdue account as of AS_OF and write the work queue, highest priority first."""
    from models.contract import ContractError
    from serving.batch import print_queue, score_dir

    try:
        queue = score_dir(data, out, as_of=as_of, model_uri=model, phone_capacity=phone_capacity, explore=explore)
    except (ContractError, ValueError) as err:  # bad tables, an unreadable --as-of or --phone-capacity
        _fail(err)
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
) -> None:
    """Off-policy value of the policy on held-out logs; on simulated data, its true value against no contact,
    the best single action and the oracle, and a rule audit."""
    from models.contract import ContractError, read_dir
    from models.features import prepare
    from models.registry import load_bundle
    from pipelines import evaluate as evaluation
    from pipelines.train import resolve_history_end

    try:
        bundle = load_bundle(model).bundle
        portfolio = read_dir(data)
    except ContractError as err:
        _fail(err)
    end = resolve_history_end(data, prepare(portfolio, bundle.feature_config))
    when = pd_timestamp(as_of) if as_of else end
    eps = bundle.policy_config.explore if explore is None else explore
    evaluation.run(bundle, portfolio, data, when, end, eps, out)


def pd_timestamp(text: str):
    """An ISO 8601 instant with its offset, or a clear error."""
    import pandas as pd

    when = pd.Timestamp(text)
    if when.tzinfo is None:
        raise typer.BadParameter(f"needs a UTC offset, for example 2026-11-01T00:00:00+09:00: {text!r}")
    return when.tz_convert("UTC")


@app.command()
def serve(
    model: Annotated[str | None, typer.Option(help="model URI or bundle path; default CUREFLOW_MODEL_URI "
                                                   "or models:/cureflow@champion")] = None,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    workers: Annotated[int, typer.Option(help="worker processes")] = 1,
    insecure: Annotated[bool, typer.Option(help="allow starting without API keys (local use only)")] = False,
) -> None:
    """Run the real-time scoring API (FastAPI + uvicorn). Settings come from CUREFLOW_* variables."""
    import os

    import uvicorn

    from serving.security import require_keys
    from serving.settings import load_settings

    if model:
        os.environ["CUREFLOW_MODEL_URI"] = model
    if insecure:
        os.environ["CUREFLOW_INSECURE"] = "true"
    try:
        require_keys(load_settings())
    except RuntimeError as err:
        _fail(err)
    uvicorn.run("serving.api:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level="warning", access_log=False)


if __name__ == "__main__":
    app()

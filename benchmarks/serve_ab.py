"""Before/after, side by side in one run: the service at another git revision, the service as it is in this
tree, and the floor of `benchmarks/serve_latency.py` (a bare booster endpoint), on the same machine at once.

The other revision is exported with `git archive` into a temporary directory and served from there with the
same interpreter (its own modules come first on the path); each server has its own decision log, synced
before each answer as shipped: a SQLite file, or with `--database postgresql` a database of its own on one
throwaway PostgreSQL server (tests/postgres.py; the production set-up of docs/api.md). The client is
serve_latency's (raw asyncio, kept-alive connections) and sends serve_latency's request (one overdue
account's whole history). The servers take turns for `--rounds` rounds of `--requests` requests, so a change
in the machine's load touches all of them alike; the figures are the median over rounds of each round's p50
and p99. Before measuring, both revisions are asked the same questions (the request, and bodies each error
path refuses), and any difference in status or body (beyond the random decision id) stops the run.

    .venv/bin/python benchmarks/serve_ab.py --before main --model outputs/train/bundle.joblib --data data/portfolio

`--workers 1 2 --concurrency 8 --after-only` compares worker counts of this tree instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from serve_latency import _load, _port, _start, freeze_client_heap, realistic_requests  # noqa: E402


def _probes(request: dict) -> list[tuple[str, bytes, dict]]:
    """Bodies whose answers must not differ between the revisions: the request, and one per error path."""
    missing = {k: v for k, v in request.items() if k != "account"}
    wrong = {**request, "account": {**request["account"], "term_months": "108"}}
    extra = {**request, "surprise": 1}
    text = json.dumps(request)
    return [
        ("the request", text.encode(), {"Content-Type": "application/json"}),
        ("no content type", text.encode(), {}),
        ("account missing", json.dumps(missing).encode(), {"Content-Type": "application/json"}),
        ("term_months as text", json.dumps(wrong).encode(), {"Content-Type": "application/json"}),
        ("unknown field", json.dumps(extra).encode(), {"Content-Type": "application/json"}),
        ("key given twice", b'{"as_of": "2026-11-01T00:00:00+09:00", "as_of": 1}',
         {"Content-Type": "application/json"}),
        ("lone surrogate", b'{"as_of": "\\ud800"}', {"Content-Type": "application/json"}),
        ("not UTF-8", b'{"as_of": "\xff"}', {"Content-Type": "application/json"}),
        ("not JSON", b'{"as_of": ', {"Content-Type": "application/json"}),
        ("UTF-8 BOM", b"\xef\xbb\xbf" + text.encode(), {"Content-Type": "application/json"}),
        ("empty", b"", {"Content-Type": "application/json"}),
        ("a list", b"[1, 2]", {"Content-Type": "application/json"}),
        ("NaN amount", text.replace('"monthly_amount": ', '"monthly_amount": NaN, "x": ').encode(),
         {"Content-Type": "application/json"}),
    ]


def _answer(url: str, body: bytes, headers: dict) -> tuple[int, object]:
    r = httpx.post(url, content=body, headers=headers, timeout=30)
    try:
        content = r.json()
    except ValueError:
        content = r.text
    if isinstance(content, dict):
        content.pop("decision_id", None)
    return r.status_code, content


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="main", help="the git revision to compare with")
    parser.add_argument("--model", default="models:/cureflow@champion")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "portfolio")
    parser.add_argument("--as-of", default="2026-11-01T00:00:00+09:00")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--accounts", type=int, default=1,
                        help="different accounts the requests cycle over (1: the same account every time)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1])
    parser.add_argument("--workers", type=int, nargs="+", default=[1],
                        help="serve each revision once with each number of worker processes")
    parser.add_argument("--sync", choices=["full", "normal"], help="CUREFLOW_DECISION_LOG_SYNC (default: as shipped)")
    parser.add_argument("--after-only", action="store_true", help="serve this tree only (to compare worker counts)")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite",
                        help="where each server's decision log lives")
    args = parser.parse_args()
    if Path(args.model).exists():  # a file path: the other revision is served from another directory
        args.model = str(Path(args.model).resolve())
    with contextlib.ExitStack() as stack:
        database = _databases(stack, args.database)
        _compare(args, database)


def _databases(stack: contextlib.ExitStack, kind: str):
    """A function giving the n-th server's decision-log URL (in `tmp`): SQLite files, or PostgreSQL databases
    on one throwaway server started here."""
    if kind == "sqlite":
        return lambda n, tmp: f"sqlite:///{Path(tmp) / f'{n}.db'}"
    sys.path.insert(0, str(ROOT))
    from tests.postgres import _create_database, throwaway_postgres

    server = stack.enter_context(throwaway_postgres())
    return lambda n, tmp: _create_database(server.url, f"serve_ab_{n}")


def _compare(args: argparse.Namespace, database) -> None:
    from models.registry import load_bundle

    asked = realistic_requests(args.data, args.as_of, load_bundle(args.model).bundle, args.accounts)
    request, x = asked[0]
    body = [json.dumps(r).encode() for r, _ in asked]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "CUREFLOW_MODEL_URI": args.model, "CUREFLOW_INSECURE": "true", "CUREFLOW_MAX_CONCURRENCY": "256"}
    env.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{ROOT / 'mlflow.db'}")
    revision = subprocess.run(["git", "rev-parse", "--short", args.before], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        before_dir = Path(tmp) / "before"
        before_dir.mkdir()
        archive = subprocess.run(["git", "archive", args.before], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(before_dir)], input=archive, check=True)
        servers = {}
        if args.sync:
            env["CUREFLOW_DECISION_LOG_SYNC"] = args.sync
        trees = [("after (this tree)", ROOT)] if args.after_only else [
            (f"before ({args.before} {revision})", before_dir), ("after (this tree)", ROOT)]
        for workers in args.workers:
            for tree, cwd in trees:
                name = tree if args.workers == [1] else f"{tree}, {workers} worker{'s' * (workers > 1)}"
                port = _port()
                own = {**env, "PYTHONPATH": str(cwd),
                       "CUREFLOW_DATABASE_URL": database(len(servers), tmp)}
                proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "serve", "--workers", str(workers),
                                         "--port", str(port)],
                                        env=own, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
                servers[name] = (proc, f"http://127.0.0.1:{port}/v1/score", body)
        floor = _port()
        floor_proc = _start([sys.executable, "-m", "uvicorn", "--factory", "serve_latency:floor_app", "--app-dir",
                             str(ROOT / "benchmarks"), "--port", str(floor), "--log-level", "warning"],
                            {**env, "PYTHONPATH": str(ROOT)}, f"http://127.0.0.1:{floor}/docs")
        servers["bare booster (floor)"] = (floor_proc, f"http://127.0.0.1:{floor}/predict",
                                           json.dumps({"x": x.tolist()}).encode())
        try:
            for proc, url, _ in servers.values():
                _start_wait(proc, url.rsplit("/", 2)[0] + "/readyz" if "/v1/" in url else url.rsplit("/", 1)[0]
                            + "/docs")
            (_, before_url, _), (_, after_url, _) = list(servers.values())[:2]
            for label, probe, headers in _probes(request) if len(servers) > 2 else ():
                old, new = _answer(before_url, probe, headers), _answer(after_url, probe, headers)
                if old != new:
                    raise SystemExit(f"{label}: before {old}, after {new}")
                print(f"same answer: {label} ({old[0]})")
            freeze_client_heap()
            headers = {"Content-Type": "application/json"}
            results: dict[tuple[str, int], list[dict]] = {}
            for _, url, payload in servers.values():
                asyncio.run(_load(url, payload, headers, 4, 100))  # warm-up
            for _ in range(args.rounds):
                for c in args.concurrency:
                    for name, (_, url, payload) in servers.items():
                        results.setdefault((name, c), []).append(asyncio.run(_load(url, payload, headers, c,
                                                                                   args.requests)))
        finally:
            for proc, *_ in servers.values():
                proc.terminate()
                proc.wait(timeout=30)
    print(f"\n{args.rounds} rounds of {args.requests} requests over {args.accounts} account(s), median over "
          f"rounds; decision log on {args.database}, sync {args.sync or 'as shipped'}\n")
    print("| server | concurrency | p50 | p99 | req/s |\n|---|---|---|---|---|")
    for (name, c), runs in results.items():
        p50, p99, rps = (statistics.median(r[k] for r in runs) for k in ("p50", "p99", "rps"))
        print(f"| {name} | {c} | {p50:.2f} ms | {p99:.2f} ms | {rps:,.0f} |")


def _start_wait(proc: subprocess.Popen, ready_url: str, seconds: float = 120) -> None:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(ready_url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.5)
        if proc.poll() is not None:
            raise RuntimeError(f"a server exited with {proc.returncode}")
    raise RuntimeError(f"{ready_url} was not ready in {seconds}s")


if __name__ == "__main__":
    main()

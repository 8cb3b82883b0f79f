"""Profile: where one `POST /v1/score` spends its time, on a real server process under the benchmark's load.

Starts the service as `benchmarks/serve_latency.py` does (`cureflow serve`, one worker, the decision log on
SQLite synced before each answer), sends it the same request (one overdue account's whole history from the
demo portfolio) from the same raw asyncio client at concurrency 1, and samples every thread of the server
with py-spy (`pip install py-spy`; attaches by pid, no `--native`) while it does. Each sample is put in the
stage of its deepest frame that names one (request parsing, the JSON guard, validation, features, rules,
policy, reasons, the decision record and its sync, JSON encoding, middleware, logging, metrics, ...);
samples of threads that are waiting (the event loop in `select`, an idle threadpool worker, a request's
thread waiting for the group commit that carries its record, counted on the leading request's thread) are
left out. At
concurrency 1 the stages add up to the server's time per request; the rest of the client's latency is the
client, the loopback and the kernel.

    .venv/bin/python benchmarks/profile_score.py --model outputs/train/bundle.joblib --data data/portfolio

`--raw FILE` keeps py-spy's collapsed stacks (speedscope and flamegraph.pl read them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from serve_latency import _load, _port, _start, freeze_client_heap, realistic_requests  # noqa: E402

# (stage, pattern on one frame "function (file:line)"); a sample goes to the stage of its deepest frame that
# matches one, so a json.loads inside the JSON guard is the guard's, one inside FastAPI's body read is FastAPI's.
STAGES: list[tuple[str, str]] = [
    ("server: uvicorn HTTP protocol (Python part)", r"\(uvicorn/"),
    ("server: threadpool hand-off (anyio, GIL switch)", r"\(anyio/|\(asyncio/|\(threading\.py|\(queue\.py"),
    ("FastAPI/Starlette routing and glue", r"\(fastapi/|\(starlette/|\(contextlib\.py|\(email/"),
    ("middleware: RequestObserver (request id, X-Request-ID)", r"\(serving/observability\.py"),
    ("metrics (Prometheus)", r"observe_request \(|record_decision \(|\(prometheus_client/"),
    ("logging: access log line", r"\(logging/|JsonFormatter"),
    ("middleware: BodyGuard (read, replay), LoadShedder", r"\(serving/limits\.py"),
    ("parse 1: JSON guard (limits.json_problem)", r"^json_problem \(|^_no_duplicates \(|_lone_surrogate_at"),
    ("parse 2: FastAPI Request.json (json.loads)", r"^Request\.json \(starlette|^Request\.body \(starlette"),
    ("dependencies: API key, model, decision log", r"^solve_dependencies \(|\(serving/api/deps\.py|\(serving/security"
     r"|APIKeyHeader"),
    ("validation: pydantic ScoreRequest", r"^request_body_to_args \(|_validate_value_with_model_field|validate_python"),
    ("route glue (routes/score.py)", r"\(serving/api/routes/score\.py"),
    ("request back to dicts (model_dump)", r"model_dump"),
    ("decision log: contested lookup (SQL read)", r"^DecisionLog\.contested"),
    ("contract checks (check_requests)", r"^check_requests \(|_check_not_in_the_future|_out_of_years"),
    ("scoring glue (models/scoring.py)", r"\(models/scoring\.py"),
    ("decide: glue (models/bundle.py)", r"\(models/bundle\.py|\(pandas/|\(numpy/"),
    ("features: compute (bundle._overdue)", r"_overdue \(|\(models/features\.py"),
    ("features: request to arrays (prepare_requests)", r"^prepare_requests \(|^mark_contested \(|^_rows_of"),
    ("model: LightGBM predictions (cure, response)", r"predict_proba|predict_matrix|\(lightgbm/|\(models/estimators"),
    ("rules (bundle._verdict)", r"_verdict \(|\(models/rules\.py|constraints \("),
    ("policy (choose, gains, safe)", r"^ScoringBundle\.gains \(|\(models/policy\.py|\(models/safe\.py"
     r"|\(models/playbook"),
    ("reasons and answer columns", r"_columns \(|_drivers \(|_basis \(|_steps \(|_windows \(|_stale_track"
     r"|\(models/reasons"),
    ("decision ids (uuid5, uuid4)", r"_decision_ids \(|^uniforms \(|_random_ids \(|\(uuid\.py"),
    ("answers: dicts from arrays", r"^Decisions\.answers \(|^Decisions\.inputs \(|^_take \("),
    ("decision record: build (DecisionRecord.from_answer)", r"^_records \(|from_answer"),
    ("grouping: leader and followers (models/grouping.py)", r"\(models/grouping\.py"),
    ("decision record: SQL insert", r"append_each|append_groups|^DecisionLog\.append \("),
    ("decision record: commit + fsync", r"do_commit \(|^Transaction\.commit \(|_commit_impl \("),
    ("response: validate and encode JSON (pydantic dump_json)", r"serialize_response|dump_json|jsonable_encoder"),
    ("response: JSON encoding (stdlib)", r"^JSONResponse\.render|\(json/encoder"),
]
# a thread whose innermost frame is one of these is waiting, not working (the event loop in uvloop's C
# select, which also hides uvloop's and httptools' own C work; an idle threadpool thread; a request's thread
# waiting for the group commit, whose work is counted on the thread of the request that leads it)
IDLE = re.compile(r"^(Runner\.run \(asyncio|_worker \(concurrent/futures|Condition\.wait \(threading"
                  r"|Event\.wait \(threading|Queue\.get \(queue|select \(selectors)")
STARTUP = re.compile(r"_find_and_load|load_quietly|\(joblib/")
_COMPILED = [(name, re.compile(p)) for name, p in STAGES]


def classify(stack: str) -> str | None:
    """The stage of one collapsed stack (root first, `;`-separated), None when its thread was waiting."""
    frames = stack.split(";")
    if IDLE.match(frames[-1]):
        return None
    if STARTUP.search(stack):
        return "startup (left out)"
    for frame in reversed(frames):
        for name, pattern in reversed(_COMPILED):
            if pattern.search(frame):
                return name
    return "other: " + frames[-1][:80]


def breakdown(raw: Path) -> tuple[Counter, int]:
    """Samples by stage from py-spy's raw (collapsed) output, and the number of ticks (the samples of the
    thread sampled most: the event loop's, there all along)."""
    counts: Counter = Counter()
    threads: Counter = Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        thread, _, frames = stack.partition(";")
        threads[thread] += int(n)
        stage = classify(frames)
        if stage is not None:
            counts[stage] += int(n)
    return counts, max(threads.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models:/cureflow@champion")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "portfolio")
    parser.add_argument("--as-of", default="2026-11-01T00:00:00+09:00")
    parser.add_argument("--requests", type=int, default=1000,
                        help="requests sampled, and as many unsampled before and after (after 200 of warm-up)")
    parser.add_argument("--rate", type=int, default=500, help="py-spy samples a second")
    parser.add_argument("--concurrency", type=int, default=1,
                        help="requests in flight (above 1 the stages add up to CPU per request, not latency)")
    parser.add_argument("--accounts", type=int, default=1, help="different accounts the requests cycle over")
    parser.add_argument("--raw", type=Path, help="keep py-spy's collapsed stacks here")
    parser.add_argument("--py-spy", default=str(Path(sys.executable).parent / "py-spy"))
    args = parser.parse_args()
    from models.registry import load_bundle

    asked = realistic_requests(args.data, args.as_of, load_bundle(args.model).bundle, args.accounts)
    request, body = asked[0][0], [json.dumps(r).encode() for r, _ in asked]
    print(f"request: {len(request['installments'])} instalments, {len(request['payments'])} payments, "
          f"{len(request['contacts'])} contacts, {len(body[0]):,} bytes; {args.accounts} account(s), "
          f"concurrency {args.concurrency}")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "CUREFLOW_MODEL_URI": args.model, "CUREFLOW_INSECURE": "true", "CUREFLOW_MAX_CONCURRENCY": "256"}
    env.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{ROOT / 'mlflow.db'}")
    headers = {"Content-Type": "application/json"}
    with tempfile.TemporaryDirectory() as tmp:
        port = _port()
        env["CUREFLOW_DATABASE_URL"] = f"sqlite:///{Path(tmp) / 'decisions.db'}"
        server = _start([sys.executable, "-m", "pipelines.cli", "serve", "--port", str(port)], env,
                        f"http://127.0.0.1:{port}/readyz")
        url = f"http://127.0.0.1:{port}/v1/score"
        raw = args.raw or Path(tmp) / "profile.txt"
        try:
            freeze_client_heap()
            asyncio.run(_load(url, body, headers, 1, 200))  # warm-up
            plain = asyncio.run(_load(url, body, headers, args.concurrency, args.requests))
            spy = subprocess.Popen([args.py_spy, "record", "--pid", str(server.pid), "--idle", "--threads",
                                    "--nonblocking", "--rate", str(args.rate), "--format", "raw", "-o", str(raw)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            spy_started = time.perf_counter()
            time.sleep(1.0)  # py-spy attached
            started = time.perf_counter()
            sampled = asyncio.run(_load(url, body, headers, args.concurrency, args.requests))
            wall = time.perf_counter() - started
            time.sleep(0.2)
            spy.send_signal(signal.SIGINT)
            spied = time.perf_counter() - spy_started
            _, err = spy.communicate(timeout=60)
            if spy.returncode not in (0, -signal.SIGINT) or not raw.exists():
                raise RuntimeError(f"py-spy failed: {err.decode()[-2000:]}")
            after = asyncio.run(_load(url, body, headers, args.concurrency, args.requests))
        finally:
            server.terminate()
            server.wait(timeout=30)
        counts, ticks = breakdown(raw)
    counts.pop("startup (left out)", None)
    total = sum(counts.values())
    per_request = spied * 1000 / ticks / args.requests  # ms of one sample, per request
    unsampled = (plain["p50"] + after["p50"]) / 2
    print(f"c={args.concurrency} p50 {plain['p50']:.2f} ms before sampling, {sampled['p50']:.2f} ms while sampled, "
          f"{after['p50']:.2f} ms after ({args.requests} requests each; sampled: {wall:.1f} s, "
          f"{total:,} working samples, {ticks / spied:.0f} ticks/s of {args.rate}); "
          f"the log then held {200 + 3 * args.requests:,} decisions")
    scale = unsampled / (total * per_request)
    print("\n| stage | ms per request (sampled) | share | ms at the unsampled p50 |\n|---|---|---|---|")
    for stage, n in counts.most_common():
        print(f"| {stage} | {n * per_request:.3f} | {100 * n / total:.1f}% | {n * per_request * scale:.3f} |")
    print(f"| **server, all stages** | **{total * per_request:.2f}** | 100% | {unsampled:.2f} (p50, client incl.) |")


if __name__ == "__main__":
    main()

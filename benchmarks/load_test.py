"""Benchmark: the service under a fixed arrival rate, then a step test to its saturation point.

Starts `cureflow serve` (one worker, the shipped settings: CUREFLOW_MAX_CONCURRENCY 32, the decision log on
SQLite synced before each answer) with the registered model, then sends the demo portfolio's realistic
request open-loop (arrivals on a fixed schedule, whatever the answers do, so a slow server is not let off
by a slow client):

1. `--rate` requests a second for `--duration` seconds: every answer must be a 200; p50 and p99;
2. a step test over `--steps` rates, `--step-seconds` each: achieved rate, p50, p99 and the share of
   503 load-shedding answers, to find the saturation point and show the shedding past it;
3. the decision log's record count against the number of 200 answers so far (warm-up included), counted
   before wrk, whose requests cut off at its deadline have no answer to count;
4. with `--wrk N ...` (needs wrk: `apt-get install wrk`), a closed-loop cross-check with N connections each:
   wrk's requests a second, p50, p99 and its count of answers other than 2xx;

    .venv/bin/python benchmarks/load_test.py --rate 100 --duration 300 --steps 100 150 200 300 400 600 \
        --wrk 8 32 128

Why a client of its own and wrk only as the cross-check: wrk and locust are closed loops (a connection or a
user waits for its answer before sending the next), so a server that stalls also slows its client and the
stall hides in fewer requests (coordinated omission); wrk2, which holds a rate, is not packaged in Debian.
Locust 2.47 was tried at a fixed rate (users at `constant_throughput(2)`) and measured itself more than the
service: p50 30 ms at 10 users and 92 ms at 25 with HttpUser, and a 46 ms minimum with FastHttpUser (its
headers and body go out as two segments), where plain `requests` from the same machine took 7 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_latency import ROOT, _port, _post, _start, freeze_client_heap, realistic_request  # noqa: E402

KEEP_ALIVE_S = 4.0  # reuse a connection only if idle for less than this (uvicorn closes idle ones at 5 s)


async def _open_loop(host: str, port: int, request: bytes, rate: float, seconds: float
                     ) -> tuple[list[tuple[int, float]], float]:
    """Arrivals every 1/rate s for `seconds`; a kept-alive connection is reused when one is free and fresh,
    otherwise a new one is opened. A failed connection is a result (-1), never retried. Also returns the
    client's worst lateness against the schedule, in seconds: a late client sends a burst, not a rate."""
    idle: list[tuple[float, asyncio.StreamReader, asyncio.StreamWriter]] = []
    results: list[tuple[int, float]] = []

    async def connection() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while idle:
            used, reader, writer = idle.pop()
            if time.monotonic() - used < KEEP_ALIVE_S:
                return reader, writer
            writer.close()
        return await asyncio.open_connection(host, port)

    async def one() -> None:
        start = time.perf_counter()
        conn = await connection()
        try:
            status = await _post(*conn, request)
        except (ConnectionError, asyncio.IncompleteReadError):
            results.append((-1, time.perf_counter() - start))
            conn[1].close()
            return
        results.append((status, time.perf_counter() - start))
        idle.append((time.monotonic(), *conn))

    tasks, begin, late = [], time.perf_counter(), 0.0
    for i in range(int(rate * seconds)):
        delay = begin + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        late = max(late, -delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    for _, _, writer in idle:
        writer.close()
    return results, late


def _summary(run: tuple[list[tuple[int, float]], float], seconds: float) -> dict:
    results, late = run
    codes = np.array([c for c, _ in results])
    ok = np.array([t for c, t in results if c == 200]) * 1000
    others = sorted({int(c) for c in codes if c not in (200, 503)})
    return {"sent": len(results), "ok": int((codes == 200).sum()), "shed": int((codes == 503).sum()),
            "other_codes": others,
            "other": int(((codes != 200) & (codes != 503)).sum()), "rps_ok": float((codes == 200).sum() / seconds),
            "p50": float(np.percentile(ok, 50)) if len(ok) else float("nan"),
            "p99": float(np.percentile(ok, 99)) if len(ok) else float("nan"),
            "p999": float(np.percentile(ok, 99.9)) if len(ok) else float("nan"),
            "max": float(ok.max()) if len(ok) else float("nan"), "client_late_ms": late * 1000}


def _wrk(url: str, body_file: Path, connections: int, seconds: float) -> dict:
    """One wrk run (one thread, `connections` kept-alive connections); its figures, parsed."""
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds:.0f}s", "--latency", "-s",
                          str(ROOT / "benchmarks" / "wrk_post.lua"), url], capture_output=True, text=True,
                         env={**os.environ, "CUREFLOW_WRK_BODY": str(body_file)}, check=True).stdout
    ms = {"us": 1e-3, "ms": 1.0, "s": 1e3}

    def latency(pct: str) -> float:
        value, unit = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * ms[unit]

    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"requests": total, "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50": latency("50"), "p99": latency("99"), "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": sum(map(int, errors.groups())) if errors else 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models:/cureflow@champion")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "portfolio")
    parser.add_argument("--as-of", default="2026-11-01T00:00:00+09:00")
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--duration", type=float, default=300)
    parser.add_argument("--steps", type=float, nargs="+", default=[100, 150, 200, 300, 400, 600])
    parser.add_argument("--step-seconds", type=float, default=20)
    parser.add_argument("--wrk", type=int, nargs="*", default=[], metavar="CONNECTIONS",
                        help="after the steps, a wrk run (closed loop) per number of connections")
    args = parser.parse_args()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{ROOT / 'mlflow.db'}")
    os.environ.update(MLFLOW_TRACKING_URI=env["MLFLOW_TRACKING_URI"])
    from models.decision_log import DecisionLog
    from models.registry import load_bundle

    request, _ = realistic_request(args.data, args.as_of, load_bundle(args.model).bundle)
    body = json.dumps(request).encode()
    freeze_client_heap()
    with tempfile.TemporaryDirectory() as tmp:
        port, database = _port(), f"sqlite:///{Path(tmp) / 'decisions.db'}"
        proc = _start([sys.executable, "-m", "pipelines.cli", "serve", "--port", str(port)],
                      {**env, "CUREFLOW_MODEL_URI": args.model, "CUREFLOW_INSECURE": "true",
                       "CUREFLOW_DATABASE_URL": database}, f"http://127.0.0.1:{port}/readyz")
        head = f"POST /v1/score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" \
               f"Content-Length: {len(body)}\r\n\r\n".encode()
        ok_total = 0
        try:
            ok_total += _summary(asyncio.run(_open_loop("127.0.0.1", port, head + body, 20, 2)), 2)["ok"]  # warm-up
            steady = _summary(asyncio.run(_open_loop("127.0.0.1", port, head + body, args.rate, args.duration)),
                              args.duration)
            ok_total += steady["ok"]
            print(f"fixed rate {args.rate:.0f}/s for {args.duration:.0f} s: {steady}")
            for rate in args.steps:
                step = _summary(asyncio.run(_open_loop("127.0.0.1", port, head + body, rate, args.step_seconds)),
                                args.step_seconds)
                ok_total += step["ok"]
                print(f"step {rate:5.0f}/s: answered {step['rps_ok']:6.1f}/s  p50 {step['p50']:8.1f} ms  "
                      f"p99 {step['p99']:8.1f} ms  shed (503) {step['shed'] / step['sent']:6.1%}  "
                      f"other {step['other']}  client late {step['client_late_ms']:.0f} ms")
            log = DecisionLog(database)  # every 200 was committed before it was sent: count before wrk
            records = log.count("api")
            log.close()
            print(f"decision records {records:,} for {ok_total:,} answers with 200 (equal: {records == ok_total})")
            if args.wrk and not shutil.which("wrk"):
                print("wrk cross-check skipped: no wrk on PATH (apt-get install wrk)")
            elif args.wrk:
                body_file = Path(tmp) / "request.json"
                body_file.write_bytes(body)
                for connections in args.wrk:
                    run = _wrk(f"http://127.0.0.1:{port}/v1/score", body_file, connections, args.step_seconds)
                    print(f"wrk {connections:4d} connections: {run['rps']:6.1f} req/s  p50 {run['p50']:8.1f} ms  "
                          f"p99 {run['p99']:8.1f} ms  non-2xx {run['non_2xx'] / max(run['requests'], 1):6.1%}  "
                          f"socket errors {run['socket_errors']}")
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()

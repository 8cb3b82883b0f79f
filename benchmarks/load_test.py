"""Benchmark: the service under a fixed arrival rate, then a step test to its saturation point.

Starts `cureflow serve` (one worker, the shipped settings: CUREFLOW_MAX_CONCURRENCY 32, the decision log on
SQLite synced before each answer) with the registered model, then sends the demo portfolio's realistic
request open-loop (arrivals on a fixed schedule, whatever the answers do, so a slow server is not let off
by a slow client):

1. `--rate` requests a second for `--duration` seconds: every answer must be a 200; p50 and p99;
2. a step test over `--steps` rates, `--step-seconds` each: achieved rate, p50, p99 and the share of
   503 load-shedding answers, to find the saturation point and show the shedding past it;
3. the decision log's record count against the number of 200 answers of the whole run (warm-up included).

    .venv/bin/python benchmarks/load_test.py --rate 100 --duration 300 --steps 100 150 200 300 400 600
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_latency import ROOT, _port, _post, _start, realistic_request  # noqa: E402

KEEP_ALIVE_S = 4.0  # reuse a connection only if idle for less than this (uvicorn closes idle ones at 5 s)


async def _open_loop(host: str, port: int, request: bytes, rate: float, seconds: float) -> list[tuple[int, float]]:
    """Arrivals every 1/rate s for `seconds`; a kept-alive connection is reused when one is free and fresh,
    otherwise a new one is opened. A failed connection is a result (-1), never retried."""
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

    tasks, begin = [], time.perf_counter()
    for i in range(int(rate * seconds)):
        delay = begin + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    for _, _, writer in idle:
        writer.close()
    return results


def _summary(results: list[tuple[int, float]], seconds: float) -> dict:
    codes = np.array([c for c, _ in results])
    ok = np.array([t for c, t in results if c == 200]) * 1000
    others = sorted({int(c) for c in codes if c not in (200, 503)})
    return {"sent": len(results), "ok": int((codes == 200).sum()), "shed": int((codes == 503).sum()),
            "other_codes": others,
            "other": int(((codes != 200) & (codes != 503)).sum()), "rps_ok": float((codes == 200).sum() / seconds),
            "p50": float(np.percentile(ok, 50)) if len(ok) else float("nan"),
            "p99": float(np.percentile(ok, 99)) if len(ok) else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models:/cureflow@champion")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "portfolio")
    parser.add_argument("--as-of", default="2026-11-01T00:00:00+09:00")
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--duration", type=float, default=300)
    parser.add_argument("--steps", type=float, nargs="+", default=[100, 150, 200, 300, 400, 600])
    parser.add_argument("--step-seconds", type=float, default=20)
    args = parser.parse_args()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{ROOT / 'mlflow.db'}")
    os.environ.update(MLFLOW_TRACKING_URI=env["MLFLOW_TRACKING_URI"])
    from models.registry import load_bundle
    from serving.decisions import DecisionLog

    request, _ = realistic_request(args.data, args.as_of, load_bundle(args.model).bundle)
    body = json.dumps(request).encode()
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
                      f"other {step['other']}")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        log = DecisionLog(database)
        records = log.count("api")
        log.close()
        print(f"decision records {records:,} for {ok_total:,} answers with 200 (equal: {records == ok_total})")


if __name__ == "__main__":
    main()

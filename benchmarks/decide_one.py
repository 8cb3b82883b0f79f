"""One account's decision in process, before and after, alternating: what a real-time request costs without HTTP.

    .venv/bin/python benchmarks/decide_one.py --before 0175984 --model outputs/train/bundle.joblib

Each round runs `models.scoring.score_requests_with_features` (the API's path: checks, arrays, `decide`) on one
account at a time, cycling over `--accounts` overdue accounts of `--data` (serve_latency's requests), `--requests`
times, once in a fresh process of this tree and once of `--before` (exported with `git archive`, its own modules
first on the path), taking turns for `--rounds` rounds, so the machine's load falls on both alike. Prints each
round's mean milliseconds per decision and the medians; both trees must give the same answers (but for the
decision ids the API draws at random) or the run stops.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(model: str, data: str, as_of: str, accounts: int, requests: int) -> dict:
    """In this process (the tree on sys.path first): ms per one-account decision, and the answers' digest."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from serve_latency import realistic_requests

    from models.registry import load_bundle
    from models.schemas import ScoreRequest
    from models.scoring import score_requests_with_features

    bundle = load_bundle(model).bundle
    asked = [ScoreRequest.model_validate(r).model_dump()
             for r, _ in realistic_requests(Path(data), as_of, bundle, accounts)]
    answers = [score_requests_with_features(bundle, [r])[0][0] for r in asked]  # and warm up
    for r in asked * 3:
        score_requests_with_features(bundle, [r])
    began = time.perf_counter()
    for k in range(requests):
        score_requests_with_features(bundle, [asked[k % len(asked)]])
    ms = (time.perf_counter() - began) / requests * 1e3
    return {"ms": ms, "answers": json.dumps(answers, sort_keys=True, default=str)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="main", help="the git revision to compare with")
    parser.add_argument("--model", default="outputs/train/bundle.joblib")
    parser.add_argument("--data", default=str(ROOT / "data" / "portfolio"))
    parser.add_argument("--as-of", default="2026-11-01T00:00:00+09:00")
    parser.add_argument("--accounts", type=int, default=32)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # one tree, in this process
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.model, args.data, args.as_of, args.accounts, args.requests)))
        return
    model = str(Path(args.model).resolve()) if Path(args.model).exists() else args.model
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "archive", args.before], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        trees = {f"before ({args.before})": Path(tmp), "after (this tree)": ROOT}
        times: dict[str, list[float]] = {name: [] for name in trees}
        seen: dict[str, str] = {}
        for _ in range(args.rounds):
            for name, tree in trees.items():
                out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "decide_one.py"), "--measure",
                                      "--model", model, "--data", str(Path(args.data).resolve()), "--as-of",
                                      args.as_of, "--accounts", str(args.accounts), "--requests", str(args.requests)],
                                     cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)},
                                     check=True, capture_output=True, text=True).stdout
                result = json.loads(out.strip().splitlines()[-1])
                times[name].append(result["ms"])
                seen.setdefault(name, result["answers"])
                print(f"{name}: {result['ms']:.3f} ms per decision", flush=True)
        if len(set(seen.values())) != 1:
            raise SystemExit("the two trees gave different answers")
        medians = {name: statistics.median(v) for name, v in times.items()}
        for name, value in medians.items():
            print(f"median {name}: {value:.3f} ms per one-account decision ({args.rounds} rounds of {args.requests})")
        before, after = medians.values()
        print(f"after / before: {after / before:.3f}")


if __name__ == "__main__":
    main()

"""Faults the service survives, each against real parts: a corrupt model at start, a model swap under load,
shutdown under load, and no personal data in the logs of a real server that scored real accounts."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from models.contract import read_dir
from models.decision_log import DecisionLog
from models.scoring import example_request
from serving.api import create_app
from serving.settings import load_settings
from tests.serving.test_api import ADMIN, HEADERS, KEY, _free_port, _requests_for, _wait_ready

pytestmark = pytest.mark.slow
AS_OF = "2026-11-01T00:00:00+09:00"


def _start(args: list[str], env: dict) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "serve", *args, "--port", str(port)],
                            env={**os.environ, "CUREFLOW_API_KEYS": KEY, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, f"http://127.0.0.1:{port}"


def test_corrupt_model_file_keeps_the_process_up_not_ready_says_why_and_recovers_once_fixed(trained, tmp_path):
    bundle = tmp_path / "bundle.joblib"
    bundle.write_bytes(b"not a joblib file at all")
    proc, base = _start(["--model", str(bundle)], {"CUREFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'd.db'}"})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
        ready = httpx.get(f"{base}/readyz", timeout=5)
        assert ready.status_code == 503 and "no model loaded" in ready.json()["reasons"][0]
        assert httpx.post(f"{base}/v1/score", json={}, headers=HEADERS, timeout=5).status_code in (422, 503)
        shutil.copyfile(trained["bundle_path"], bundle)  # the file is fixed: no restart, no admin call
        deadline = time.monotonic() + 30
        while httpx.get(f"{base}/readyz", timeout=5).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.3)
        assert httpx.get(f"{base}/readyz", timeout=5).status_code == 200
        assert httpx.post(f"{base}/v1/score", json=example_request(), headers=HEADERS, timeout=30).status_code == 200
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert '"message": "model load failed"' in out or "model load failed" in out
    assert "model loaded" in out


def test_model_swap_under_load_fails_no_request(trained, tmp_path):
    settings = load_settings(model_uri=str(trained["bundle_path"]), database_url=f"sqlite:///{tmp_path / 'd.db'}",
                             api_keys=KEY, admin_keys=ADMIN)
    request = _requests_for(trained["data"], [read_dir(trained["data"]).accounts["account_id"].iloc[0]], AS_OF)[0]
    codes: list[int] = []
    stop = threading.Event()
    with TestClient(create_app(settings), headers=HEADERS) as client:
        def hammer() -> None:
            while not stop.is_set():
                codes.append(client.post("/v1/score", json=request).status_code)

        def answered_more(than: int, deadline: float) -> None:  # the state, not a time: requests kept coming
            while len(codes) < than + len(workers) and time.monotonic() < deadline:
                time.sleep(0.01)

        workers = [threading.Thread(target=hammer) for _ in range(4)]
        for w in workers:
            w.start()
        swaps = []
        for _ in range(5):  # each swap starts with requests in flight and is followed by more of them
            answered_more(len(codes), time.monotonic() + 120)
            swaps.append(client.post("/v1/admin/reload", headers={"X-API-Key": ADMIN}).status_code)
        answered_more(len(codes), time.monotonic() + 120)
        stop.set()
        for w in workers:
            w.join()
        recorded = client.app.state.decisions.count("api")
    assert swaps == [200] * 5 and len(codes) >= 20 and set(codes) == {200}
    assert recorded == len(codes)


def test_clients_that_never_finish_their_body_hold_no_slot_and_get_408(trained, tmp_path):
    """Slowloris: as many connections as the server has slots each send a head and half a body, then stall.
    A normal request still gets its answer at once, and each stalled one gets 408 when its time is up."""
    proc, base = _start(["--model", str(trained["bundle_path"])], {
        "CUREFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'd.db'}", "CUREFLOW_MAX_CONCURRENCY": "4",
        "CUREFLOW_BODY_TIMEOUT_S": "5"})
    port = int(base.rsplit(":", 1)[1])

    async def slowloris() -> tuple[int, float, list[bytes]]:
        stalled = []
        for _ in range(4):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /v1/score HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                         b"X-API-Key: " + KEY.encode() + b"\r\nContent-Length: 1000\r\n\r\n{\"as_of\"")
            await writer.drain()
            stalled.append((reader, writer))
        arrived: list[float] = []

        async def head(reader: asyncio.StreamReader) -> bytes:
            line = await asyncio.wait_for(reader.readuntil(b"\r\n"), 30)
            arrived.append(time.monotonic())
            return line

        heads = [asyncio.create_task(head(reader)) for reader, _ in stalled]
        await asyncio.sleep(0.3)
        async with httpx.AsyncClient(timeout=30) as client:
            status = (await client.post(f"{base}/v1/score", json=example_request(), headers=HEADERS)).status_code
            answered = time.monotonic()
        lines = await asyncio.gather(*heads)
        for _, writer in stalled:
            writer.close()
        return status, answered < min(arrived), lines

    try:
        _wait_ready(base, proc)
        status, first, heads = asyncio.run(slowloris())
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert status == 200 and first  # answered before any stalled body timed out
    assert all(head.startswith(b"HTTP/1.1 408") for head in heads), heads


async def _until_in_flight(client: httpx.AsyncClient, base: str, seconds: float = 60) -> None:
    """Wait until the server says a request is in flight (`cureflow_requests_in_flight` >= 1): the state a
    shutdown test needs, however long a busy machine takes to get there (a fixed 50 ms sleep did not)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        text = (await client.get(f"{base}/metrics")).text
        if any(line.startswith("cureflow_requests_in_flight ") and float(line.split()[1]) >= 1
               for line in text.splitlines()):
            return
        await asyncio.sleep(0.005)
    pytest.fail("no request was ever in flight")


def test_shutdown_under_load_lets_requests_in_flight_finish_and_records_them(trained, tmp_path):
    database = tmp_path / "d.db"
    proc, base = _start(["--model", str(trained["bundle_path"])], {"CUREFLOW_DATABASE_URL": f"sqlite:///{database}"})
    ids = read_dir(trained["data"]).accounts["account_id"].head(24).tolist()
    requests = _requests_for(trained["data"], ids, AS_OF)

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=len(requests))) as client:
            async def one(body):
                return (await client.post(f"{base}/v1/score", json=body, headers=HEADERS)).status_code

            tasks = [asyncio.create_task(one(body)) for body in requests]
            await _until_in_flight(client, base)  # requests are inside the server: now ask it to stop
            proc.send_signal(signal.SIGTERM)
            return await asyncio.gather(*tasks, return_exceptions=True)

    try:
        _wait_ready(base, proc)
        results = asyncio.run(burst())
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    answered = [r for r in results if r == 200]
    refused = [r for r in results if isinstance(r, httpx.ConnectError)]  # never accepted by the stopping server
    assert answered and len(answered) + len(refused) == len(requests)  # nothing accepted was cut off or failed
    assert proc.returncode is not None
    log = DecisionLog(f"sqlite:///{database}")
    assert log.count("api") == len(answered)
    log.close()


def test_no_personal_data_in_the_logs_of_a_real_server(trained, tmp_path):
    p = read_dir(trained["data"])
    ids = p.accounts["account_id"].head(6).tolist()
    requests = _requests_for(trained["data"], ids, AS_OF)
    proc, base = _start(["--model", str(trained["bundle_path"])],
                        {"CUREFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'd.db'}", "CUREFLOW_LOG_LEVEL": "DEBUG"})
    try:
        _wait_ready(base, proc)
        for body in requests:
            assert httpx.post(f"{base}/v1/score", json=body, headers=HEADERS, timeout=30).status_code == 200
        bad = {**requests[0], "payments": [{"paid_at": AS_OF, "amount": -5, "method": "card"}]}
        assert httpx.post(f"{base}/v1/score", json=bad, headers=HEADERS, timeout=30).status_code == 422
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert out.strip()  # the server did log
    for request in requests:
        account = request["account"]
        for value in (account["account_id"], account["opened_on"], *(c["contact_id"] for c in request["contacts"])):
            assert value not in out, f"{value!r} reached the logs"
    assert KEY not in out

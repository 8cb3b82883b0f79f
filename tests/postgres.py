"""A real, throwaway PostgreSQL server for the tests (one per pytest-xdist worker).

`throwaway_postgres()` finds `initdb`/`pg_ctl` (PATH, then /usr/lib/postgresql/*/bin), creates a cluster in a
fresh temp dir, starts it on a free loopback port with its unix socket in that dir, creates a database and yields
a `PostgresServer` whose `url` is a `postgresql+psycopg://` SQLAlchemy URL; at the end the server is stopped and
the dir deleted. Clusters of sessions killed before their teardown ran are reaped by the next session.

initdb refuses to run as root, so as root every server command runs as the `postgres` system user
(`runuser -u postgres -- ...`) and the temp dir (made directly under the system temp dir, which that user can
traverse, unlike pytest's 0700 basetemp) is chowned to it.

With `CUREFLOW_TEST_POSTGRES_URL` set, that server is used instead: a database of our own is created on it and
dropped at the end (the role needs CREATEDB). Such a server cannot be stopped by the tests (`controllable` False).

No binaries and no URL is a failure, never a skip: the tests must run against a real server.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

ENV_URL = "CUREFLOW_TEST_POSTGRES_URL"
SUPERUSER = "cureflow_test"
PREFIX, OWNER_FILE = "cureflow-pg-", "owner.pid"
HINT = "run `scripts/ensure_postgres.sh` (installs the postgresql package) or set CUREFLOW_TEST_POSTGRES_URL"


def find_bin_dir() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres: PATH first, then the newest /usr/lib/postgresql/*/bin."""
    on_path = shutil.which("initdb")
    candidates = [Path(on_path).resolve().parent] if on_path else []
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: _version(p.parent.name), reverse=True)
    candidates += versions
    for directory in candidates:
        if all((directory / name).exists() for name in ("initdb", "pg_ctl", "postgres")):
            return directory
    return None


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def free_port() -> int:
    """A loopback port nobody listens on right now (may be taken before we bind it: callers retry)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    """A running server: `url` points at its test database; `stop`/`start` only for a server we own."""

    url: str
    controllable: bool
    _cluster: _Cluster | None = None

    def stop(self) -> None:
        """Stop the server at once (as a crash would); `start` brings it back with the same data."""
        self._own().stop(mode="immediate")

    def start(self) -> None:
        self._own().start()

    def freeze(self) -> None:
        """Stop every server process (SIGSTOP): the server hangs, up and accepting, answering nothing."""
        self._own().signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._own().signal(signal.SIGCONT)

    def _own(self) -> _Cluster:
        if self._cluster is None:
            raise RuntimeError(f"the server at {ENV_URL} is not ours to stop or start")
        return self._cluster


class _Cluster:
    """initdb / pg_ctl for one cluster in `root`, run as the postgres user when we are root."""

    def __init__(self, bin_dir: Path, root: Path):
        self.bin_dir, self.root = bin_dir, root
        self.data, self.sockets, self.logfile = root / "data", root / "sockets", root / "server.log"
        self.port = 0
        self.as_user = _server_user()

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.as_user:
            command = ["runuser", "-u", self.as_user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def init(self) -> None:
        """A trust-auth cluster (loopback and a private socket dir only) tuned for speed, not durability."""
        self.sockets.mkdir()
        if self.as_user:
            user = pwd.getpwnam(self.as_user)
            for path in (self.root, self.sockets):
                os.chown(path, user.pw_uid, user.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "--no-sync", "-E", "UTF8",
                  "--locale=C")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.sockets}'\n"
                       "fsync = off\nfull_page_writes = off\nmax_connections = 40\nshared_buffers = 16MB\n")

    def start(self) -> None:
        """Start on `self.port` (a fresh free port the first time; retried if another process took it)."""
        for attempt in range(3):
            port = self.port or free_port()
            try:
                self._run("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-w", "-t", "30",
                          "-o", f"-p {port}", "start")
                self.port = port
                return
            except RuntimeError:
                if self.port or attempt == 2:
                    raise RuntimeError(f"PostgreSQL did not start; server log:\n{self._log_tail()}") from None

    def signal(self, signum: int) -> None:
        """Send `signum` to the postmaster first (a stopped one forks no new backend), then its children."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signum)
        children = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True, text=True).stdout.split()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signum)

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no log)"


def _server_user() -> str | None:
    """None when we may run the server ourselves; 'postgres' as root (initdb refuses root)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail(f"running as root and there is no `postgres` system user to run PostgreSQL as: {HINT}",
                    pytrace=False)
    if shutil.which("runuser") is None:
        pytest.fail("running as root without `runuser` to drop to the postgres user", pytrace=False)
    return "postgres"


def _create_database(admin_url: str, name: str) -> str:
    """CREATE DATABASE `name` on the server at admin_url; the SQLAlchemy URL of the new database."""
    url = make_url(admin_url).set(drivername="postgresql+psycopg")
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False)


def _drop_database(admin_url: str, name: str) -> None:
    conninfo = make_url(admin_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with contextlib.suppress(psycopg.Error), psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _reap_orphans(bin_dir: Path) -> None:
    """Stop and delete clusters left by test sessions that were killed before their teardown ran."""
    for root in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        try:
            owner = int((root / OWNER_FILE).read_text())
            os.kill(owner, 0)
            continue  # its session is still running
        except ProcessLookupError:
            pass
        except (OSError, ValueError):
            continue  # not ours to judge (no or unreadable owner file, or another user's session)
        if (root / "data" / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                _Cluster(bin_dir, root).stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


def _database_name() -> str:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return f"cureflow_test_{worker}_{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL for this test session (see the module docstring); fails with a hint if there is none."""
    external = os.environ.get(ENV_URL)
    if external:
        name = _database_name()
        url = _create_database(external, name)
        try:
            yield PostgresServer(url=url, controllable=False)
        finally:
            _drop_database(external, name)
        return
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.fail(f"no PostgreSQL server binaries (initdb, pg_ctl) on PATH or in /usr/lib/postgresql: {HINT}",
                    pytrace=False)
    _reap_orphans(bin_dir)
    root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-"))
    (root / OWNER_FILE).write_text(str(os.getpid()))
    cluster = _Cluster(bin_dir, root)
    try:
        started = time.perf_counter()
        cluster.init()
        cluster.start()
        admin = f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{cluster.port}/postgres"
        url = _create_database(admin, "cureflow_test")
        print(f"\nthrowaway PostgreSQL on 127.0.0.1:{cluster.port} ready in {time.perf_counter() - started:.1f}s")
        yield PostgresServer(url=url, controllable=True, _cluster=cluster)
    finally:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            cluster.stop(mode="fast")
        shutil.rmtree(root, ignore_errors=True)

"""A throwaway PostgreSQL server for tests: `initdb` into a temporary folder, `pg_ctl start`
listening only on a Unix socket in that folder, one database, torn down afterwards.

    with postgres_server() as url:      # postgresql+psycopg://hnas@/hnas?host=/tmp/hnas-pg-...
        ...

A Unix socket in the server's own folder needs no free port (no race with other test runs) and
is reachable by nothing outside this machine. Trust authentication: the folder is private.

PostgreSQL refuses to run as root. Under root (containers, CI images) the server runs as the
`postgres` system account that the PostgreSQL packages create; the folder is handed to it.
Clients connect over the socket whatever user they are, since authentication is `trust`.

`postgres_control()` yields a `Server` that can also be stopped and started again under running
clients (the outage tests) and can create more databases (a fresh one per test).

`skip_reason()` says why no server can be started here (no binaries, no driver, root without a
`postgres` account), or None; the fixture in a test module skips with that reason.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

BINARIES = ("initdb", "pg_ctl", "postgres")
DATABASE = USER = "hnas"
PORT = 5432  # only names the socket file (.s.PGSQL.5432); no TCP listener is opened
SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux; the socket name adds 15
START_TIMEOUT_S = 60


class ServerError(RuntimeError):
    """initdb or pg_ctl failed; the message carries the server log's tail."""


def skip_reason() -> str | None:
    missing = [name for name in BINARIES if shutil.which(name) is None]
    if missing:
        return f"PostgreSQL binaries not on PATH: {', '.join(missing)}"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'hybrid-nas[postgres]')"
    if os.geteuid() == 0 and _postgres_account() is None:
        return "running as root, which PostgreSQL refuses, and no 'postgres' account to run as"
    return None


def _postgres_account() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        return None


class _Runner:
    """Runs the server's commands as ourselves, or as `postgres` when we are root."""

    def __init__(self) -> None:
        self.account = _postgres_account() if os.geteuid() == 0 else None

    def own(self, path: Path) -> None:
        if self.account is not None:
            os.chown(path, self.account.pw_uid, self.account.pw_gid)

    def run(self, *command: str, timeout: float = START_TIMEOUT_S) -> subprocess.CompletedProcess:
        kwargs = {}
        if self.account is not None:
            kwargs = {"user": self.account.pw_uid, "group": self.account.pw_gid,
                      "extra_groups": [], "env": {**os.environ, "HOME": self.account.pw_dir}}
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              cwd="/", check=False, **kwargs)


class Server:
    """A started server: its URL, and stop/start for outages (the data folder is kept)."""

    def __init__(self, runner: "_Runner", root: Path) -> None:
        self.runner, self.root = runner, root
        self.data, self.log = root / "data", root / "server.log"
        self.url = self.database_url(DATABASE)

    def database_url(self, name: str) -> str:
        return f"postgresql+psycopg://{USER}@/{name}?host={self.root}&port={PORT}"

    def start(self) -> None:
        _check(self.runner.run("pg_ctl", "start", "-w", "-t", str(START_TIMEOUT_S), "-D",
                               str(self.data), "-l", str(self.log)), "pg_ctl start", self.log)

    def stop(self, mode: str = "fast") -> None:
        """`fast` ends every client's connection, as an administrator's restart does."""
        _check(self.runner.run("pg_ctl", "stop", "-m", mode, "-w", "-D", str(self.data)),
               "pg_ctl stop", self.log)

    def create_database(self, name: str) -> str:
        _create_database(self.root, name)
        return self.database_url(name)


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server, create the database, yield its SQLAlchemy URL; always clean up."""
    with postgres_control() as server:
        yield server.url


@contextlib.contextmanager
def postgres_control() -> Iterator[Server]:
    """Start a server, create the database, yield the `Server`; always clean up."""
    reason = skip_reason()
    if reason is not None:
        raise ServerError(reason)
    runner = _Runner()
    # /tmp rather than a long TMPDIR: the socket's path must fit in sun_path.
    parent = "/tmp" if len(tempfile.gettempdir()) > SOCKET_PATH_MAX - 30 else None
    root = Path(tempfile.mkdtemp(prefix="hnas-pg-", dir=parent))
    server = Server(runner, root)
    started = False
    try:
        runner.own(root)
        _check(runner.run("initdb", "-D", str(server.data), "-U", USER, "-A", "trust", "-E",
                          "UTF8", "--no-sync", "--no-instructions"), "initdb", server.log)
        with (server.data / "postgresql.conf").open("a") as conf:
            # A test server: no TCP, socket in our folder, no durability (nothing to keep).
            conf.write(f"listen_addresses = ''\nunix_socket_directories = '{root}'\n"
                       f"port = {PORT}\nfsync = off\nsynchronous_commit = off\n"
                       "full_page_writes = off\nmax_connections = 200\n")
        started = True  # from here on a half-started server is stopped too
        server.start()
        _create_database(root, DATABASE)
        yield server
    finally:
        if started:
            runner.run("pg_ctl", "stop", "-m", "immediate", "-w", "-D", str(server.data))
        shutil.rmtree(root, ignore_errors=True)


def _create_database(socket_dir: Path, name: str) -> None:
    import psycopg

    with psycopg.connect(host=str(socket_dir), port=PORT, user=USER, dbname="postgres",
                         autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")


def _check(result: subprocess.CompletedProcess, what: str, log: Path) -> None:
    if result.returncode == 0:
        return
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise ServerError(f"{what} exited with {result.returncode}: {result.stderr.strip()}\n{tail}")

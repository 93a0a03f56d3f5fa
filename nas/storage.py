"""Study databases: which URL, how to open it, and what to say when it cannot be opened.

The study database is Optuna's RDB storage, reached through an SQLAlchemy URL. The default is an
SQLite file in the working directory (nothing to start); PostgreSQL is the choice for several
machines or more than a few workers, because SQLite lets one writer in at a time and every
worker waits its turn for each write (we give it a long busy timeout and WAL journaling, so
waiting is all that happens).

Heartbeats: every worker's running trial records a heartbeat every `HEARTBEAT_INTERVAL` seconds;
a trial whose heartbeat is older than `GRACE_PERIOD` belongs to a dead worker, is marked FAIL
and is re-queued once per death (Optuna's `RetryHeartbeatStaleTrialCallback`).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Any, Iterator

DEFAULT_FILE = "hnas.db"
HEARTBEAT_INTERVAL = int(os.environ.get("HNAS_HEARTBEAT_INTERVAL", "30"))
GRACE_PERIOD = int(os.environ.get("HNAS_GRACE_PERIOD", str(4 * HEARTBEAT_INTERVAL)))
MAX_RETRY = 3
SQLITE_BUSY_TIMEOUT_S = 120


class StorageError(ValueError):
    """A storage URL that cannot be used, or a study that is not there; one line for the user."""


def default_url() -> str:
    return f"sqlite:///{DEFAULT_FILE}"


def shown_url(url: str) -> str:
    """The URL with any password masked, for messages and tables."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown as given (it has no password)
        return url


def check_url(url: str) -> None:
    """Refuse URLs SQLAlchemy cannot parse or has no driver for, naming what is wrong."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StorageError(f"storage {url!r}: not an SQLAlchemy URL (examples: "
                           "sqlite:///hnas.db, postgresql+psycopg://user@host/db)") from None
    try:
        parsed.get_dialect()
    except NoSuchModuleError:
        raise StorageError(f"storage {shown_url(url)!r}: unknown database kind "
                           f"{parsed.drivername!r}") from None
    except ImportError as error:
        raise StorageError(f"storage {shown_url(url)!r}: the driver is not installed "
                           f"({error}); for PostgreSQL: pip install 'hybrid-nas[postgres]'") from None
    path = sqlite_file(url)
    if path is not None:
        folder = Path(path).expanduser().resolve().parent
        if not folder.is_dir():
            raise StorageError(f"storage {url!r}: folder {str(folder)!r} does not exist")


def sqlite_file(url: str) -> str | None:
    """The database file of an SQLite URL (None for other databases and in-memory SQLite)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return parsed.database


def engine_kwargs(url: str) -> dict[str, Any]:
    from sqlalchemy.engine import make_url

    if make_url(url).get_backend_name() == "sqlite":
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    # Long searches keep connections idle for minutes; check them before use.
    return {"pool_pre_ping": True}


def _use_wal(url: str) -> None:
    """SQLite in WAL mode lets readers (status, dashboard) work while a worker writes."""
    path = sqlite_file(url)
    if path is None:
        return
    import sqlite3

    with sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S) as connection:
        connection.execute("PRAGMA journal_mode=WAL")


def open_storage(url: str | None = None, *, heartbeat: bool = True):
    """Optuna RDB storage for `url` (default: the SQLite file), with heartbeats and retries."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    url = url or default_url()
    check_url(url)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # we report what happens ourselves
    try:
        _use_wal(url)
        with _quiet_optuna_warnings():
            kwargs: dict[str, Any] = {}
            if heartbeat:
                retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
                kwargs = {"heartbeat_interval": HEARTBEAT_INTERVAL, "grace_period": GRACE_PERIOD,
                          "heartbeat_stale_trial_callback": retry}
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url), **kwargs)
    except SQLAlchemyError as error:
        raise StorageError(f"storage {shown_url(url)!r}: cannot connect "
                           f"({first_line(error)})") from None
    except Exception as error:  # noqa: BLE001 - sqlite3 errors, schema checks: say which URL
        raise StorageError(f"storage {shown_url(url)!r}: {first_line(error)}") from None


def study_names(storage) -> list[str]:
    import optuna

    return [summary.study_name for summary in optuna.get_all_study_summaries(storage)]


def load_study(name: str, storage, sampler=None):
    """The study called `name`; StorageError listing the studies there when it is missing."""
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    except KeyError:
        names = study_names(storage)
        there = f"studies there: {', '.join(names)}" if names else "the database has no studies"
        raise StorageError(f"study {name!r} not found in {shown_url(storage.url)} "
                           f"({there})") from None


def first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@contextlib.contextmanager
def _quiet_optuna_warnings() -> Iterator[None]:
    """Heartbeats are marked experimental in Optuna; the warning means nothing to our users."""
    import optuna

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        yield

"""Study databases: which URL, how to open it, and what to say when it cannot be opened.

The study database is Optuna's RDB storage, reached through an SQLAlchemy URL. The default is an
SQLite file in the working directory (nothing to start); PostgreSQL is the choice for several
machines or more than a few workers, because SQLite lets one writer in at a time and every
worker waits its turn for each write (we give it a long busy timeout and WAL journaling, so
waiting is all that happens).

Heartbeats: every worker's running trial records a heartbeat every `HEARTBEAT_INTERVAL` seconds;
a trial whose heartbeat is older than `GRACE_PERIOD` belongs to a dead worker, is marked FAIL
and is re-queued once per death, up to `MAX_RETRY` times (`RequeueStaleTrial`).

Outages: Optuna wraps every database error of its RDB storage in `StorageInternalError` (with
the SQLAlchemy error as its cause); `is_outage` tells a database that is unreachable for now
(connection refused or dropped, server shutting down or starting, SQLite busy) from one that
will not work (read-only, damaged, full). `Patience` retries the first kind with backoff, for up
to `OUTAGE_WAIT_S` (default 10 minutes, `HNAS_OUTAGE_WAIT`), and says so once per outage.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import os
import sqlite3
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import optuna
from optuna.trial import TrialState
from sqlalchemy import exc
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from nas.record import TrialRecord
from search_spaces.errors import UserError

DEFAULT_FILE = "hnas.db"
HEARTBEAT_INTERVAL = int(os.environ.get("HNAS_HEARTBEAT_INTERVAL", "30"))
GRACE_PERIOD = int(os.environ.get("HNAS_GRACE_PERIOD", str(4 * HEARTBEAT_INTERVAL)))
MAX_RETRY = 3
SQLITE_BUSY_TIMEOUT_S = 120
PG_CONNECT_TIMEOUT_S = 10
OUTAGE_WAIT_S = float(os.environ.get("HNAS_OUTAGE_WAIT", "600"))
MAX_BACKOFF_S = 30.0
CREATE_TABLE_ATTEMPTS = 8
# Database errors that waiting will not cure (SQLite and PostgreSQL messages, lower case).
PERMANENT = ("readonly", "read-only", "read only", "malformed", "not a database",
             "no such table", "disk is full", "database or disk is full", "unable to open",
             "permission denied", "does not exist", "authentication failed")


class StorageError(UserError):
    """A storage URL that cannot be used, or a study that is not there; one line for the user."""


def default_url() -> str:
    return f"sqlite:///{DEFAULT_FILE}"


def shown_url(url: str) -> str:
    """The URL with any password masked, for messages and tables."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown as given (it has no password)
        return url


def check_url(url: str) -> None:
    """Refuse URLs SQLAlchemy cannot parse or has no driver for, naming what is wrong."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StorageError(f"storage {url!r}: not an SQLAlchemy URL (examples: "
                           "sqlite:///hnas.db, postgresql+psycopg://user@host/db)") from None
    try:
        parsed.get_dialect().import_dbapi()  # the driver module itself, as create_engine does
    except NoSuchModuleError:
        raise StorageError(f"storage {shown_url(url)!r}: unknown database kind "
                           f"{parsed.drivername!r}") from None
    except ImportError as error:
        raise StorageError(f"storage {shown_url(url)!r}: the driver is not installed "
                           f"({error}); for PostgreSQL: pip install 'hybrid-nas[postgres]'") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise StorageError(f"storage {url!r}: an in-memory database is gone when the command "
                           "exits and other workers cannot reach it; give a file, for example "
                           "sqlite:///hnas.db")
    path = sqlite_file(url)
    if path is not None:
        folder = Path(path).expanduser().resolve().parent
        if not folder.is_dir():
            raise StorageError(f"storage {url!r}: folder {str(folder)!r} does not exist")


def sqlite_file(url: str) -> str | None:
    """The database file of an SQLite URL (None for other databases and in-memory SQLite)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    if _sqlite_uri(parsed):  # sqlite:///file:PATH?mode=ro&uri=true
        return parsed.database.removeprefix("file:").split("?")[0] or None
    return parsed.database


def _sqlite_uri(parsed) -> bool:
    return str(parsed.query.get("uri", "")).lower() in ("true", "1")


def engine_kwargs(url: str) -> dict[str, Any]:
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    # Long searches keep connections idle for minutes; check them before use.
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if backend == "postgresql":
        # A host that stops answering (a network cut) fails a connection attempt after this
        # long, as an outage that `Patience` waits out, rather than hanging in the kernel's
        # TCP timeout with the heartbeat thread stuck behind it.
        kwargs["connect_args"] = {"connect_timeout": PG_CONNECT_TIMEOUT_S}
    return kwargs


def _use_wal(url: str) -> None:
    """SQLite in WAL mode lets readers (status, dashboard) work while a worker writes."""
    path = sqlite_file(url)
    if path is None:
        return

    parsed = make_url(url)
    if _sqlite_uri(parsed) and "mode=ro" in str(parsed.database) + str(parsed.query):
        return  # opened read-only on purpose: the reading commands work, writing says why
    with sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S) as connection:
        connection.execute("PRAGMA journal_mode=WAL")


class RequeueStaleTrial(optuna.storages.RetryHeartbeatStaleTrialCallback):
    """Optuna's heartbeat retry (the copy queued WAITING, `max_retry`, the `failed_trial` and
    `retry_history` system attributes), given only what the dead trial was asked to do
    (`TrialRecord.retried`) and none of our own system attributes: Optuna's copies every
    attribute, so the copy would carry a half-written record and the trial's budget slot, and,
    lost once more, read as a measurement it never made."""

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        asked = copy.copy(trial)
        asked.user_attrs = TrialRecord.from_frozen_trial(trial).retried(trial.number) \
            .to_user_attrs()
        asked.system_attrs = {key: value for key, value in trial.system_attrs.items()
                              if not key.startswith("hnas:")}
        super().__call__(study, asked)


def open_storage(url: str | None = None, *, heartbeat: bool = True):
    """Optuna RDB storage for `url` (default: the SQLite file), with heartbeats and retries.

    Workers started together on a fresh database all create Optuna's tables at once; the losers
    of that race see "already exists" or a duplicate key in PostgreSQL's catalogue, or, on a
    fresh SQLite file, a failed UNIQUE constraint on Optuna's version row or "database is
    locked" (two connections upgrading their locks at once get SQLITE_BUSY at once, without
    the busy timeout); they wait a moment and open the tables the winner made."""
    url = url or default_url()
    check_url(url)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # we report what happens ourselves
    for attempt in range(CREATE_TABLE_ATTEMPTS):
        try:
            _use_wal(url)
            with _quiet_optuna_warnings():
                kwargs: dict[str, Any] = {}
                if heartbeat:
                    retry = RequeueStaleTrial(max_retry=MAX_RETRY)
                    kwargs = {"heartbeat_interval": HEARTBEAT_INTERVAL,
                              "grace_period": GRACE_PERIOD,
                              "heartbeat_stale_trial_callback": retry}
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url),
                                                  **kwargs)
        except Exception as error:  # noqa: BLE001 - sqlite3 errors, schema checks: say which URL
            if _creation_race(error) and attempt + 1 < CREATE_TABLE_ATTEMPTS:
                time.sleep(0.2 * (attempt + 1))
                continue
            doing = "cannot connect" if isinstance(error, SQLAlchemyError) else "cannot open"
            raise StorageError(f"storage {shown_url(url)!r}: {doing} "
                               f"({first_line(error)})") from None
    raise AssertionError("unreachable")


def grace_period(storage: Any) -> float | None:
    """Seconds after its last heartbeat at which a running trial is taken for dead (None: the
    storage keeps no heartbeats). `storage`: an RDBStorage or Optuna's cache in front of one."""
    interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
    if interval is None:
        return None
    return getattr(getattr(storage, "_backend", storage), "grace_period", None) or 2 * interval


def _creation_race(error: BaseException) -> bool:
    text = " ".join(str(e).lower() for e in _chain(error))
    return any(sign in text for sign in ("already exists", "duplicate key",
                                          "unique constraint failed", "database is locked"))


def _chain(error: BaseException | None) -> list[BaseException]:
    """The error and the errors it was raised from (Optuna's wrapper, SQLAlchemy's, the
    driver's)."""
    chain = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or getattr(error, "orig", None)
    return chain


def is_outage(error: BaseException) -> bool:
    """True for a database that cannot be reached now and may come back (worth waiting for)."""
    chain = _chain(error)
    text = " ".join(str(e).lower() for e in chain)
    if any(marker in text for marker in PERMANENT):
        return False
    transient = (exc.OperationalError, exc.InterfaceError, exc.DisconnectionError,
                 exc.TimeoutError, exc.PendingRollbackError)
    return any(isinstance(e, transient) or getattr(e, "connection_invalidated", False)
               for e in chain)


def describe_storage_error(error: BaseException) -> str | None:
    """One line for a database error that reached a command, or None if it is not one."""
    chain = _chain(error)
    if not any(type(e).__module__.split(".")[0] in ("optuna", "sqlalchemy", "psycopg",
                                                      "psycopg2") or isinstance(e, sqlite3.Error)
               for e in chain):
        return None
    if type(error).__module__.split(".")[0] == "optuna" and \
            type(error).__name__ != "StorageInternalError":
        return None  # Optuna's own usage errors are bugs of ours
    cause = first_line(chain[-1])
    text = cause.lower()
    if "readonly" in text or "read-only" in text:
        return f"the study database is read-only ({cause})"
    if "malformed" in text or "not a database" in text:
        return f"the study database is damaged ({cause}); restore it from a copy"
    if is_outage(error):
        return f"the study database cannot be reached ({cause})"
    return f"the study database failed ({cause})"


def call_once(call, *args: Any, **kwargs: Any) -> Any:
    """`call(*args, **kwargs)`: where a `Patience` is optional, the call made without one."""
    return call(*args, **kwargs)


class Patience:
    """Retries storage calls through an outage: waits with doubling pauses (1 s up to
    MAX_BACKOFF_S) for up to `wait_s` seconds in total per outage, saying once that the database
    is unreachable and once that it is back. `outage_ended` is when the last outage ended (the
    worker waits after it before judging other workers' heartbeats stale, since theirs stopped
    during the outage too)."""

    def __init__(self, wait_s: float = OUTAGE_WAIT_S, log=None) -> None:
        self.wait_s = wait_s
        self.log = log or (lambda message: print(message, file=sys.stderr, flush=True))
        self.down_since: float | None = None
        self.outage_ended: float | None = None

    def __call__(self, call, *args: Any, **kwargs: Any) -> Any:
        delay = 1.0
        while True:
            try:
                result = call(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - re-raised unless it is an outage
                if not is_outage(error):
                    raise
                self.wait(error, delay)
                delay = min(2 * delay, MAX_BACKOFF_S)
                continue
            self.back()
            return result

    def down(self, error: BaseException) -> None:
        """Note an outage (from any thread); said once, when it starts."""
        if self.down_since is None:
            self.down_since = time.monotonic()
            self.log(f"the study database is unreachable ({first_line(error)}); waiting up to "
                     f"{self.wait_s:g} s for it")

    def wait(self, error: BaseException, delay: float) -> None:
        """One pause of an outage (StorageError once it has lasted `wait_s`)."""
        self.down(error)
        waited = time.monotonic() - (self.down_since or time.monotonic())
        if waited >= self.wait_s:
            raise StorageError(f"the study database has been unreachable for {waited:.0f} s "
                               f"({first_line(error)})") from None
        time.sleep(min(delay, self.wait_s - waited))

    def back(self) -> None:
        since = self.down_since
        if since is not None:
            self.down_since = None
            self.outage_ended = time.monotonic()
            self.log(f"the study database is back after {self.outage_ended - since:.0f} s")


def study_names(storage) -> list[str]:
    return [summary.study_name for summary in optuna.get_all_study_summaries(storage)]


def load_study(name: str, storage, sampler=None):
    """The study called `name`; StorageError listing the studies there when it is missing."""
    try:
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    except KeyError:
        names = study_names(storage)
        there = f"studies there: {', '.join(names)}" if names else "the database has no studies"
        raise StorageError(f"study {name!r} not found in {shown_url(storage.url)} "
                           f"({there})") from None


COPYING = "hnas:copy_incomplete"  # study system attribute of a copy not yet finished
CLAIM_PREFIX = "hnas:"  # nas.claims' keys (the copy mark aside), valid in their database only
# Study system attribute hnas:removed:<artifact id> -> {trial (number), reason}: a checkpoint
# removed from the artifact store (nas.continuation). It names a file, not a database row, so
# unlike the other claims a copy of the study keeps it.
REMOVED = "hnas:removed:"
MAX_STUDY_NAME = 512  # Optuna's column for study names (SQLite does not enforce it)


def copy_study(name: str, source, target) -> str:
    """Copy study `name` whole, or leave nothing behind; 'copied' or 'already copied'.

    The copy is marked incomplete until its last trial is in: a rerun after a crash finds the
    mark, removes the partial copy and starts it again. A study of that name that is not such
    a copy and differs from the source is refused (copying would mix two studies)."""
    study = load_study(name, source)
    if len(name) > MAX_STUDY_NAME and make_url(target.url).get_backend_name() != "sqlite":
        raise StorageError(f"study {name[:40]!r}...: its name is {len(name):,} characters, "
                           f"longer than the {MAX_STUDY_NAME} that {shown_url(target.url)} "
                           "holds; nothing of it was copied")
    trials = study.get_trials(deepcopy=False)
    if name in study_names(target):
        existing = optuna.load_study(study_name=name, storage=target)
        if target.get_study_system_attrs(existing._study_id).get(COPYING):
            optuna.delete_study(study_name=name, storage=target)
        elif existing.user_attrs == study.user_attrs and len(existing.trials) == len(trials):
            return "already copied"
        else:
            raise StorageError(f"study {name!r} already exists in {shown_url(target.url)} and "
                               "differs; copying would mix two studies")
    copied = optuna.create_study(study_name=name, storage=target, directions=study.directions)
    try:
        target.set_study_system_attr(copied._study_id, COPYING, True)
        for key, value in study.user_attrs.items():
            copied.set_user_attr(key, value)
        for key, value in source.get_study_system_attrs(study._study_id).items():
            if not key.startswith(CLAIM_PREFIX) or key.startswith(REMOVED):
                target.set_study_system_attr(copied._study_id, key, value)
        now = datetime.datetime.now()
        copied.add_trials([_as_copied(trial, now) for trial in trials])
        target.set_study_system_attr(copied._study_id, COPYING, False)
    except BaseException:
        with contextlib.suppress(Exception):  # the error that stopped the copy is the news
            optuna.delete_study(study_name=name, storage=target)
        raise
    return "copied"


def _as_copied(trial, now: datetime.datetime):
    """The trial as the copy holds it. Without the claims it held: they name trial ids of the
    source database (the copy's measured trials count against its budget as trials measured
    before claims did). A RUNNING trial fails at `now`, marked `copied_running`: no worker runs
    it in the copy, where it has no heartbeat to go stale by, so it is lost like the trial of a
    dead worker, and the copy's workers queue it again (`nas.study.requeue_lost`)."""
    running = trial.state == TrialState.RUNNING
    if not running and not any(key.startswith(CLAIM_PREFIX) for key in trial.system_attrs):
        return trial
    bare = copy.copy(trial)
    bare.system_attrs = {k: v for k, v in trial.system_attrs.items()
                         if not k.startswith(CLAIM_PREFIX)}
    if running:
        bare.state, bare.datetime_complete = TrialState.FAIL, now
        bare.user_attrs = {**trial.user_attrs,
                           **TrialRecord(copied_running=True).to_user_attrs()}
    return bare


def first_line(error: BaseException) -> str:
    """The first line of what went wrong, from the innermost error (Optuna's wrapper says only
    "an exception is raised during the commit"; its cause says which)."""
    innermost = _chain(error)[-1]
    text = str(innermost).strip()
    return text.splitlines()[0] if text else type(innermost).__name__


@contextlib.contextmanager
def _quiet_optuna_warnings() -> Iterator[None]:
    """Heartbeats are marked experimental in Optuna; the warning means nothing to our users."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        yield

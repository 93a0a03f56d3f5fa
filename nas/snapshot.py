"""Reading a whole study at once, fast, for the commands that only read (status, trials,
pareto, export).

Optuna's `RDBStorage` builds every trial through its ORM, loading each child table with an
`IN` list of trial ids; on a 1,000-trial study that, with the storage's start-up (Alembic,
table checks), took 1.5-2 s of `hnas status`'s 3 s. Here the same rows are read with one
SQLAlchemy Core query per table, joined on the study, and turned into the same
`FrozenTrial`s (tests check them equal to Optuna's field by field).

This reads Optuna's tables directly, so it is tied to their layout: it runs only on the
schema version it was written for (`KNOWN_SCHEMA_VERSION`, checked in the database's
`version_info` table) and on anything else falls back to Optuna's own reader, which also knows
how to say that a database needs `optuna storage upgrade`. Nothing here writes.
"""

from __future__ import annotations

import copy
import datetime
import json
from collections import defaultdict
from collections.abc import Container
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Protocol

import sqlalchemy
from optuna.distributions import json_to_distribution
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import String, select, type_coerce
from sqlalchemy.exc import SQLAlchemyError

from nas.record import DamagedRecord, check_attrs, short
from nas.storage import (StorageError, check_url, engine_kwargs, first_line, load_study,
                         open_storage, shown_url, sqlite_file, study_names)

# Optuna's RDB schema version (optuna.storages._rdb.models.SCHEMA_VERSION) whose tables
# `read_study` knows: unchanged from Optuna 3.2 up to 5.0.
KNOWN_SCHEMA_VERSION = 12


class ReadableStudy(Protocol):
    """What the reports read of a study: `optuna.Study` and `StudySnapshot` both have it."""

    study_name: str
    directions: Any
    user_attrs: dict[str, Any]

    def get_trials(self, deepcopy: bool = True, states: Container[Any] | None = None) -> list:
        ...


@dataclass(frozen=True)
class StudySnapshot:
    """A study's definition and trials as read at one moment; the read-only part of
    `optuna.Study` that our reports use (`study_name`, `user_attrs`, `directions`,
    `get_trials`), so they take either. `damaged`: trials left out because a row of theirs
    cannot be read (number, why), so that one bad row does not hide the rest of the study.
    `system_attrs`: the study's system attributes (claims, removed checkpoints; a value that
    is not JSON is left out), read with `study_system_attrs`."""

    study_name: str
    directions: tuple[Any, ...]  # optuna.study.StudyDirection
    user_attrs: dict[str, Any]
    trials: tuple[Any, ...] = field(repr=False)  # optuna.trial.FrozenTrial, by number
    damaged: tuple[tuple[int, str], ...] = ()
    system_attrs: dict[str, Any] = field(default_factory=dict, repr=False)

    def get_trials(self, deepcopy: bool = True, states: Container[Any] | None = None) -> list:
        chosen = [t for t in self.trials if states is None or t.state in states]
        return copy.deepcopy(chosen) if deepcopy else chosen


def study_system_attrs(study: Any) -> dict[str, Any]:
    """The system attributes of a `StudySnapshot` (as read) or of an `optuna.Study` (asked of
    its storage: Optuna 5 has no `Study.system_attrs`)."""
    if isinstance(study, StudySnapshot):
        return study.system_attrs
    return study._storage.get_study_system_attrs(study._study_id)


def read_study(name: str, url: str) -> StudySnapshot:
    """Study `name` in the database at `url`; StorageError when it cannot be read."""
    missing = missing_sqlite_file(url)
    if missing:
        raise StorageError(f"study {name!r} not found: no database file at {missing!r}")
    snapshot = _on_known_schema(url, lambda connection: _read(connection, name, url))
    if snapshot is None:
        snapshot = _read_with_optuna(name, open_storage(url, heartbeat=False))
    return snapshot


def read_studies(url: str) -> list[StudySnapshot]:
    """Every study in the database at `url`, oldest first; StorageError when it cannot be read.

    Optuna's `get_all_study_summaries` builds every trial of every study through its ORM as
    well; this is the same reading as `read_study`, once per study on one connection.
    """
    missing = missing_sqlite_file(url)
    if missing:
        raise StorageError(f"storage {shown_url(url)!r}: no database file at {missing!r}")

    def read_all(connection) -> list[StudySnapshot]:
        studies = models.StudyModel.__table__
        names = connection.execute(
            select(studies.c.study_name).order_by(studies.c.study_id)).scalars().all()
        return [_read(connection, name, url) for name in names]

    snapshots = _on_known_schema(url, read_all)
    if snapshots is None:
        storage = open_storage(url, heartbeat=False)
        snapshots = [_read_with_optuna(name, storage) for name in study_names(storage)]
    return snapshots


def _on_known_schema(url: str, read):
    """`read(connection)` on the database at `url`, or None when its schema is not the one this
    module knows (the caller then asks Optuna). Errors become one-line StorageErrors."""
    engine = sqlalchemy.create_engine(url, **engine_kwargs(url))
    try:
        try:
            connection = engine.connect()
        except SQLAlchemyError as error:
            raise StorageError(f"storage {shown_url(url)!r}: cannot connect "
                               f"({first_line(error)})") from None
        with connection:
            if _schema_version(connection) != KNOWN_SCHEMA_VERSION:
                return None
            return read(connection)
    except SQLAlchemyError as error:
        raise StorageError(f"storage {shown_url(url)!r}: cannot read "
                           f"({first_line(error)})") from None
    finally:
        engine.dispose()


def missing_sqlite_file(url: str) -> str | None:
    """Check the URL; then the path of its SQLite file when that does not exist (reading must
    not create it)."""
    check_url(url)
    path = sqlite_file(url)
    return None if path is None or Path(path).expanduser().exists() else path


def _schema_version(connection) -> int | None:
    """The schema version Optuna recorded, or None (no tables yet, or not an Optuna database)."""
    if not sqlalchemy.inspect(connection).has_table("version_info"):
        return None
    table = models.VersionInfoModel.__table__
    return connection.execute(sqlalchemy.select(table.c.schema_version)).scalar()


def _read_with_optuna(name: str, storage) -> StudySnapshot:
    """Optuna's own reader: slower, and right for every schema it supports. A trial whose
    attributes do not fit the record's schema is left out and named, as `_read` does."""
    study = load_study(name, storage)
    trials, damaged = [], []
    for trial in study.get_trials(deepcopy=False):
        try:
            check_attrs(trial.user_attrs)
        except DamagedRecord as problem:
            damaged.append((trial.number, str(problem)))
            continue
        trials.append(trial)
    return StudySnapshot(study.study_name, tuple(study.directions), dict(study.user_attrs),
                         tuple(trials), tuple(damaged), study_system_attrs(study))


def _read(connection, name: str, url: str) -> StudySnapshot:
    """One query per table, on Optuna's own table definitions (their column types turn the
    stored enums and datetimes back into Python values)."""
    studies = models.StudyModel.__table__
    study_id = connection.execute(
        select(studies.c.study_id).where(studies.c.study_name == name)).scalar()
    if study_id is None:
        names = connection.execute(
            select(studies.c.study_name).order_by(studies.c.study_id)).scalars().all()
        there = f"studies there: {', '.join(names)}" if names else "the database has no studies"
        raise StorageError(f"study {name!r} not found in {shown_url(url)} ({there})")
    directions = models.StudyDirectionModel.__table__
    direction_list = tuple(connection.execute(
        select(directions.c.direction).where(directions.c.study_id == study_id)
        .order_by(directions.c.objective)).scalars())

    def damaged_attr(key: str, value: Any) -> None:
        raise StorageError(f"study {name!r}: its attribute {key!r} is damaged (not JSON: "
                           f"{str(value)[:40]!r})")

    attrs = _study_attrs(connection, models.StudyUserAttributeModel, study_id, damaged_attr)

    # The trials first, then their rows: a trial that finishes meanwhile may show its new
    # values under its old state, never a COMPLETE state without its values (Optuna writes
    # both in one transaction). Rows of trials created after the first read are ignored.
    # State and dates as stored (text in SQLite), converted here row by row: a bogus value
    # damages its own trial only, where the typed columns would fail the whole query.
    trials_table = models.TrialModel.__table__
    trial_rows = connection.execute(
        select(trials_table.c.trial_id, trials_table.c.number,
               type_coerce(trials_table.c.state, String),
               type_coerce(trials_table.c.datetime_start, String),
               type_coerce(trials_table.c.datetime_complete, String))
        .where(trials_table.c.study_id == study_id).order_by(trials_table.c.trial_id)).all()
    last_id = trial_rows[-1][0] if trial_rows else -1
    children = _child_rows(connection, study_id, last_id)

    trials, damaged = [], []
    for trial_id, number, state, started, completed in trial_rows:
        try:
            if trial_id in children.damaged:
                raise DamagedRow(children.damaged[trial_id])
            trial = _frozen_trial(trial_id, number, state, started, completed, children)
            check_attrs(trial.user_attrs)
        except (DamagedRow, DamagedRecord) as problem:
            damaged.append((number, str(problem)))
            continue
        trials.append(trial)
    trials.sort(key=lambda trial: trial.number)
    # A damaged system attribute (a claim, a removal record) reads as absent.
    system_attrs = _study_attrs(connection, models.StudySystemAttributeModel, study_id,
                                lambda key, value: None)
    return StudySnapshot(name, direction_list, attrs, tuple(trials), tuple(sorted(damaged)),
                         system_attrs)


def _study_attrs(connection, model: Any, study_id: int,
                 damaged: Callable[[str, Any], None]) -> dict[str, Any]:
    """The study's rows of an attribute table (`model`), decoded; `damaged(key, value)` is
    called for a value that is not JSON (it raises, or the attribute is left out)."""
    table = model.__table__
    attrs = {}
    for key, value in connection.execute(select(table.c.key, table.c.value_json)
                                         .where(table.c.study_id == study_id)):
        try:
            attrs[key] = json.loads(value)
        except (TypeError, ValueError):
            damaged(key, value)
    return attrs


class DamagedRow(ValueError):
    """A stored trial row that cannot be read; the message says which field and why."""


def _frozen_trial(trial_id: int, number: int, state: str, started: Any, completed: Any,
                  children: "_Children"):
    try:
        trial_state = TrialState[state]
    except KeyError:
        raise DamagedRow(f"state {short(state)} is not a trial state") from None
    values = children.values.get(trial_id)
    params = children.params.get(trial_id, [])
    try:
        distributions = {p: _distribution(d) for p, _, d in params}
        external = {p: distributions[p].to_external_repr(v) for p, v, _ in params}
    except Exception:  # noqa: BLE001 - any malformed distribution JSON or value
        raise DamagedRow("a parameter or its distribution is malformed") from None
    try:
        return FrozenTrial(
            number=number, state=trial_state, value=None,
            values=[values[k] for k in sorted(values)] if values else None,
            datetime_start=_local(_stored_datetime(started, "start")),
            datetime_complete=_local(_stored_datetime(completed, "completion")),
            params=external, distributions=distributions,
            user_attrs=children.user_attrs.get(trial_id, {}),
            system_attrs=children.system_attrs.get(trial_id, {}),
            intermediate_values=children.intermediate.get(trial_id, {}),
            trial_id=trial_id)
    except (TypeError, ValueError) as error:  # FrozenTrial's own consistency checks
        raise DamagedRow(str(error).splitlines()[0]) from None


def _stored_datetime(value: Any, what: str) -> datetime.datetime | None:
    """SQLite keeps datetimes as text; PostgreSQL's driver gives datetime objects."""
    if value is None or isinstance(value, datetime.datetime):
        return value
    try:
        return datetime.datetime.fromisoformat(str(value))
    except ValueError:
        raise DamagedRow(f"{what} date {short(value)} is not a date") from None


@dataclass
class _Children:
    values: dict[int, dict[int, float]] = field(default_factory=lambda: defaultdict(dict))
    params: dict[int, list[tuple[str, float, str]]] = field(
        default_factory=lambda: defaultdict(list))
    user_attrs: dict[int, dict[str, Any]] = field(default_factory=lambda: defaultdict(dict))
    system_attrs: dict[int, dict[str, Any]] = field(default_factory=lambda: defaultdict(dict))
    intermediate: dict[int, dict[int, float]] = field(default_factory=lambda: defaultdict(dict))
    damaged: dict[int, str] = field(default_factory=dict)  # trial id -> the first problem


def _child_rows(connection, study_id: int, last_id: int) -> _Children:
    """Every child row of the study's trials up to `last_id`, grouped by trial id."""
    trials_table = models.TrialModel.__table__

    def of_trials(model, *columns, order=None):
        table = model.__table__
        query = (select(table.c.trial_id, *(table.c[name] for name in columns))
                 .join(trials_table, trials_table.c.trial_id == table.c.trial_id)
                 .where(trials_table.c.study_id == study_id, table.c.trial_id <= last_id))
        return connection.execute(query if order is None else query.order_by(table.c[order]))

    children = _Children()
    for trial_id, objective, value, kind in of_trials(
            models.TrialValueModel, "objective", "value", "value_type"):
        if isinstance(value, (int, float)) or value is None:
            children.values[trial_id][objective] = _stored_float(value, kind)
        else:
            children.damaged.setdefault(trial_id, f"objective {objective}'s value "
                                                  f"{short(value)} is not a number")
    # Optuna orders a trial's parameters by param_id (the order they were suggested in).
    for trial_id, name, value, distribution in of_trials(
            models.TrialParamModel, "param_name", "param_value", "distribution_json",
            order="param_id"):
        children.params[trial_id].append((name, value, distribution))
    for model, target in ((models.TrialUserAttributeModel, children.user_attrs),
                          (models.TrialSystemAttributeModel, children.system_attrs)):
        for trial_id, key, value in of_trials(model, "key", "value_json"):
            try:
                target[trial_id][key] = json.loads(value)
            except (TypeError, ValueError):
                children.damaged.setdefault(trial_id, f"attribute {key!r} is not JSON "
                                                      f"({short(value)})")
    for trial_id, step, value, kind in of_trials(
            models.TrialIntermediateValueModel, "step", "intermediate_value",
            "intermediate_value_type"):
        children.intermediate[trial_id][step] = _stored_float(value, kind)
    return children


# Optuna stores infinities (and NaN intermediate values) as NULL plus a type.
_SPECIAL_FLOATS = {"INF_POS": float("inf"), "INF_NEG": float("-inf"), "NAN": float("nan")}


def _stored_float(value: float | None, kind) -> float:
    return _SPECIAL_FLOATS.get(kind.name, value)


def _local(stored):
    """Optuna stores naive UTC datetimes and hands out naive local ones."""
    if stored is None:
        return None
    return stored.replace(tzinfo=datetime.timezone.utc).astimezone().replace(tzinfo=None)


@lru_cache(maxsize=None)
def _distribution(distribution_json: str):
    """A parameter's distribution; the same few JSON strings repeat over every trial."""
    return json_to_distribution(distribution_json)

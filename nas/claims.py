"""Claims: how workers on any number of machines share one study without colliding.

Three things must belong to one worker at a time, and each is a row in Optuna's own
`study_system_attributes` table (no tables of our own), whose key is unique per study
(`UniqueConstraint(study_id, key)` in Optuna's schema):

    hnas:worker:<i>        a worker's index, so that each worker's sampler has its own seed
    hnas:slot:<k>          one of the study's N budget slots; a trial trains only holding one
    hnas:arch:<fp>         the canonical architecture with fingerprint <fp> is being trained

Why this is atomic on SQLite and PostgreSQL: a claim is a plain INSERT of that key, committed
on its own. The database's unique index admits exactly one of any number of concurrent inserts
of one key: PostgreSQL makes the second inserter wait for the first transaction and then raises
a unique violation; SQLite runs one writing transaction at a time, and the later one finds the
row. Whoever gets IntegrityError has lost and reads the holder instead.

A claim's value is the holder's trial id. A holder that died (its trial was failed by the
heartbeat check, or pruned) leaves its claim behind; the claim is taken over with a
compare-and-swap, `UPDATE ... SET value = mine WHERE key = k AND value = the dead holder`,
which changes one row for exactly one of any number of concurrent takers: on PostgreSQL (read
committed) the later UPDATE waits for the earlier one's commit and then re-checks its WHERE
against the new value; SQLite serialises the two writes. So a claim is live exactly while its
holder trial is running, waiting or measured, and at most one live trial holds it.

Optuna's `set_study_system_attr` cannot do this: it reads and then inserts or overwrites, so two
workers would both "win". The rows are Optuna's, so `optuna.copy_study` and the dashboard see them.
"""

from __future__ import annotations

import json
from typing import Any

from optuna.storages._rdb import models
from optuna.trial import TrialState
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from nas.record import is_measured

WORKER, SLOT, ARCH = "hnas:worker:", "hnas:slot:", "hnas:arch:"
TRIAL_SLOT = "hnas:slot"  # trial system attribute: the slot the trial holds


class Claims:
    """Claims in one study. Every method is one short transaction on the storage's engine."""

    def __init__(self, study: Any) -> None:
        self.storage = study._storage  # Optuna's cache in front of an RDBStorage
        self.engine = getattr(self.storage, "_backend", self.storage).engine
        self.study_id = study._study_id
        self.table = models.StudySystemAttributeModel.__table__

    # -- primitives ---------------------------------------------------------------------------

    def insert(self, key: str, value: Any) -> bool:
        """True if this call created the claim; False if it existed (someone else holds it)."""
        try:
            with self.engine.begin() as connection:
                connection.execute(self.table.insert().values(
                    study_id=self.study_id, key=key, value_json=json.dumps(value)))
        except IntegrityError:
            return False
        return True

    def read(self, key: str) -> Any:
        with self.engine.connect() as connection:
            value = connection.execute(select(self.table.c.value_json).where(
                self.table.c.study_id == self.study_id, self.table.c.key == key)).scalar()
        return None if value is None else json.loads(value)

    def swap(self, key: str, old: Any, new: Any) -> bool:
        """Compare-and-swap: set `key` to `new` only if it still holds `old`."""
        with self.engine.begin() as connection:
            changed = connection.execute(update(self.table).where(
                self.table.c.study_id == self.study_id, self.table.c.key == key,
                self.table.c.value_json == json.dumps(old)).values(value_json=json.dumps(new)))
        return changed.rowcount == 1

    def values(self, prefix: str) -> dict[str, Any]:
        """Every claim whose key starts with `prefix`, in one query."""
        with self.engine.connect() as connection:
            rows = connection.execute(select(self.table.c.key, self.table.c.value_json).where(
                self.table.c.study_id == self.study_id,
                self.table.c.key.startswith(prefix, autoescape=True)))
            return {key: json.loads(value) for key, value in rows}

    # -- claims held by trials ----------------------------------------------------------------

    def take(self, key: str, trial_id: int) -> int | None:
        """Claim `key` for the trial; None when it now holds it, else the live holder's id."""
        while True:
            if self.insert(key, trial_id):
                return None
            holder = self.read(key)
            if holder == trial_id:
                return None
            if holder is not None and self.holds(holder):
                return holder
            if self.swap(key, holder, trial_id):
                return None
            # Someone else took it over between the read and the swap: look again.

    def holds(self, trial_id: Any) -> bool:
        """Whether the trial with this id still holds its claims (running, waiting or measured);
        a failed-and-lost or pruned trial does not."""
        if not isinstance(trial_id, int):
            return False  # a damaged value: take the claim over
        try:
            return is_live(self.storage.get_trial(trial_id))
        except KeyError:
            return False

    def take_slot(self, trial_id: int, slots: int, trials: list[Any]) -> int | None:
        """The index of a free budget slot, now held by the trial, or None if all `slots` are
        held (by running or measured trials). Recorded on the trial too, for `unslotted`.

        `trials` (the study's, read just before) only saves asking about slots whose holders
        were live then (a holder newer than that read counts as live): a finished trial never
        comes back to life, so no free slot is missed, and `take` decides each claim itself."""
        held = self.values(SLOT)
        by_id = {trial._trial_id: trial for trial in trials}
        for index in range(slots):
            holder = held.get(f"{SLOT}{index}")
            if holder is not None and holder != trial_id and (
                    holder not in by_id or is_live(by_id[holder])):
                continue
            if self.take(f"{SLOT}{index}", trial_id) is None:
                self.storage.set_trial_system_attr(trial_id, TRIAL_SLOT, index)
                return index
        return None

    # -- workers ------------------------------------------------------------------------------

    def worker_index(self, about: dict[str, Any]) -> int:
        """The lowest index no worker of this study has had: 0 for the first worker ever."""
        taken = {int(key.removeprefix(WORKER)) for key in self.values(WORKER)
                 if key.removeprefix(WORKER).isdigit()}
        index = 0
        while True:
            while index in taken:
                index += 1
            if self.insert(f"{WORKER}{index}", about):
                return index
            taken.add(index)


def is_live(trial: Any) -> bool:
    """A trial that holds its claims: running, waiting or measured (not lost, not pruned)."""

    return trial.state in (TrialState.RUNNING, TrialState.WAITING) or is_measured(trial)


def unslotted(trials: list[Any]) -> int:
    """Trials that count toward the budget (new architectures measured) but hold no slot:
    measured before budget slots existed (a study made by an older hnas). They use up the
    budget all the same, so there are that many fewer slots."""
    from nas.halving import counts_toward_budget  # here: nas.halving imports this module

    return sum(1 for trial in trials
               if counts_toward_budget(trial) and TRIAL_SLOT not in trial.system_attrs)

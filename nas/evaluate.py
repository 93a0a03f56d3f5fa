"""The Optuna objective: sample a candidate, check it, train it (or reuse a twin), record it.

One call evaluates one trial:

    sample (pattern decisions, then dims)  ->  constraints set on the trial
      infeasible?       -> PRUNED at once, never trained, violations recorded
      a promotion?      -> (successive halving, nas.halving) take its claim, train at its rung
      already measured? -> the twin's values, marked duplicate_of (Optuna does not deduplicate);
                           a duplicate takes no budget slot: `--n-trials` counts architectures
      being trained?    -> wait for that trial (its architecture is claimed), then its values
      take a budget slot (nas.claims; waits while every slot is held by a running trial)
      budget reached?   -> PRUNED, marked surplus (two workers started the last trial at once)
      otherwise         -> trials.run_trial on the suite, then the objective values (a
                           promotion continues its parent's checkpoint: nas.continuation)
      candidate failed  -> FAIL with the reason (NaN loss, oom, ...): failure is a result too

Everything the toolkit knows about a trial goes into its user attributes (plain JSON), so plain
Optuna and optuna-dashboard read it; `nas.record.TrialRecord` is their schema (with rungs, its
`rung`, `candidate`, `promoted_from` and `rung_scores`: nas.halving).
"""

from __future__ import annotations

import dataclasses
import gc
import math
import signal
import time
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from nas.claims import ARCH, Claims, unslotted
from nas.continuation import (REMOVED, CheckpointUnavailable, load_checkpoints,
                              save_checkpoints)
from nas.definition import StudyDefinition
from nas.halving import (counts_toward_budget, promotion_key, rung_of, rung_scores,
                         with_shared_warmup)
from nas.objectives import analytic_costs, decode_context
from nas.record import TrainedResult, TrialRecord, is_measured
from nas.storage import call_once
from search_spaces.space.space import InvalidCandidate


class CandidateFailed(Exception):
    """The candidate could not be evaluated (its trial is recorded as FAIL with the reason)."""


def trial_budget(definition: StudyDefinition):
    """The training budget, with decoding timed where an objective needs it."""
    from trials.train import Budget  # torch and Lightning: the reading commands import us

    budget = definition.load_budget()
    context = decode_context(definition.objective_list)
    if context is not None and budget.decode_context != context:
        budget = Budget.from_dict({**budget.to_dict(), "decode_context": context})
    return budget


class Evaluator:
    """Callable objective for `study.optimize`, built once per worker from the study definition.

    `run` is `trials.run_trial` unless a caller substitutes another evaluation with the same
    signature (the orchestration benchmark times the search machinery with an instant one).
    `patience` runs each storage call (retrying through an outage; default: call once) and
    `idle` is called between polls while the trial waits for a slot or a twin (the worker fails
    stale trials there, so that a dead holder is noticed even when every worker is waiting).
    `artifacts`: an Optuna artifact store, where successive halving under the wsd schedule keeps
    the checkpoints that promotions continue from (nas.continuation); None: promotions retrain.
    """

    def __init__(self, definition: StudyDefinition, run: Callable[..., Any] | None = None, *,
                 patience: Callable[..., Any] | None = None,
                 idle: Callable[[], None] | None = None, poll_seconds: float = 2.0,
                 artifacts: Any = None) -> None:
        self.definition = definition
        self.space = definition.space()
        self.objectives = definition.objective_list
        self.suite = definition.load_suite()
        self.budget = trial_budget(definition)
        self.rungs = definition.rungs
        if self.rungs is not None:
            self.budget = with_shared_warmup(self.budget, self.rungs)
        self._run = run
        self.patience = patience or call_once
        self.idle = idle or (lambda: None)
        self.poll_seconds = poll_seconds
        self.artifacts = artifacts
        # Continuation needs rungs, and a schedule under which a run agrees with a longer one.
        self.continues = self.rungs is not None and self.budget.decay_start is not None

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        try:
            candidate = self.patience(self.space.sample, trial)
        except InvalidCandidate as error:
            self._write(trial, TrialRecord(violations={"invalid": str(error)}))
            raise optuna.TrialPruned(f"invalid candidate: {error}") from None
        arch = candidate.arch
        fingerprint = arch.fingerprint()
        analytic = analytic_costs(arch, self.objectives)
        self._write(trial, TrialRecord(pattern=arch.pattern, arch=arch.to_dict(),
                                       fingerprint=fingerprint, analytic=analytic))
        if not candidate.feasible:
            self._write(trial, TrialRecord(violations=candidate.violations))
            raise optuna.TrialPruned("infeasible: " + ", ".join(
                f"{name} over by {value:.3g}" for name, value in candidate.violations.items()))
        claims = Claims(trial.study)
        rung, parent = 0, None
        if self.rungs is not None and rung_of(trial) > 0:
            rung = rung_of(trial)
            parent = self._claim_promotion(trial, claims, rung)
        else:
            twin = self.patience(find_measured, trial.study, fingerprint,
                                 exclude=trial.number) \
                or self._claim_arch(trial, claims, fingerprint)
            if twin is not None:
                return self._reuse(trial, twin)
            self._take_slot(trial, claims)
            if self.rungs is not None:
                self._write(trial, TrialRecord(rung=0, candidate=trial.number))
        budget = self.budget if self.rungs is None else \
            dataclasses.replace(self.budget, steps=self.rungs.steps[rung])
        resume, continued = None, TrialRecord()
        if parent is not None and self.continues:
            resume, continued = self._parent_checkpoint(parent, claims)
        try:
            result = self._evaluate(arch, budget, resume)
        except (KeyboardInterrupt, SystemExit):
            # Lightning answers Ctrl-C inside `fit` with sys.exit(1), after setting SIGINT to be
            # ignored; both mean Ctrl-C: put Ctrl-C back and let Optuna fail the trial.
            _restore_ctrl_c()
            self._write(trial, TrialRecord(interrupted=True))
            raise KeyboardInterrupt from None
        weights = {entry.name: entry.weight for entry in self.suite}
        record = TrialRecord(result=TrainedResult.from_trial_result(result, weights),
                             wall_seconds=result.wall_seconds)
        values = None
        if result.ok:
            values = self._values(analytic, record.result)
            bad = [o.name for o, v in zip(self.objectives, values) if not math.isfinite(v)]
            if bad:
                record, values = record.with_failure(f"non-finite objective {', '.join(bad)}"), None
        if self.rungs is not None:
            record = dataclasses.replace(
                record, rung_scores=rung_scores(parent, budget.steps, self.objectives, values),
                resumed_step=continued.resumed_step, retrained=continued.retrained)
            if values is not None and self.continues and rung + 1 < len(self.rungs.steps):
                record = dataclasses.replace(record, checkpoint=self._save(trial, result))
        self._write(trial, record)
        if record.failure is not None:
            raise CandidateFailed(record.failure)
        return values

    # -- steps --------------------------------------------------------------------------------

    def _write(self, trial: optuna.Trial, record: TrialRecord) -> None:
        """Store the keys this (partial) record has; each write is one storage call."""
        for key, value in record.to_user_attrs().items():
            self.patience(trial.set_user_attr, key, value)

    def _take_slot(self, trial: optuna.Trial, claims: Claims) -> None:
        """Hold one of the budget's slots before training a new architecture (a duplicate,
        which reuses its twin's result, holds none and does not count): the budget is never
        exceeded, however many workers start at once."""
        n_trials = self.definition.n_trials
        while True:
            trials = self.patience(trial.study.get_trials, deepcopy=False)
            slots = n_trials - unslotted(trials)
            if slots > 0 and self.patience(claims.take_slot, trial._trial_id, slots,
                                           trials) is not None:
                return
            if sum(1 for t in trials if counts_toward_budget(t)) >= n_trials:
                self._write(trial, TrialRecord(surplus=True))
                raise optuna.TrialPruned("surplus: the study reached its budget meanwhile")
            self._pause()  # every slot is held by a running trial, which may still die

    def _claim_promotion(self, trial: optuna.Trial, claims: Claims,
                         rung: int) -> optuna.trial.FrozenTrial:
        """Hold the claim on this promotion (nas.halving); the trial it continues."""
        record = TrialRecord.from_user_attrs(trial.user_attrs)
        holder = self.patience(claims.take, promotion_key(rung - 1, record.candidate),
                               trial._trial_id)
        if holder is not None:
            self._write(trial, TrialRecord(promotion_taken=True))
            raise optuna.TrialPruned(f"promotion of candidate {record.candidate} to rung {rung} "
                                     f"is held by trial id {holder}")
        storage = trial.study._storage
        parent_id = self.patience(storage.get_trial_id_from_study_id_trial_number,
                                  trial.study._study_id, record.promoted_from)
        return self.patience(storage.get_trial, parent_id)

    def _claim_arch(self, trial: optuna.Trial, claims: Claims,
                    fingerprint: str) -> optuna.trial.FrozenTrial | None:
        """None once this trial may train the architecture; or the measured trial that trained
        it, after waiting for it while it was being trained elsewhere."""
        while True:
            holder = self.patience(claims.take, f"{ARCH}{fingerprint}", trial._trial_id)
            if holder is None:
                return None
            twin = self.patience(trial.study._storage.get_trial, holder)
            if is_measured(twin) and TrialRecord.from_frozen_trial(twin).duplicate_of is None:
                return twin
            self._pause()  # running elsewhere: its result, or its death, will come

    def _parent_checkpoint(self, parent: optuna.trial.FrozenTrial,
                           claims: Claims) -> tuple[Any, TrialRecord]:
        """The training states a promotion continues from, with the record fields that say so:
        `resumed_step`, or (no states: it trains afresh) `retrained` and why."""
        artifact = TrialRecord.from_frozen_trial(parent).checkpoint
        if self.artifacts is None:
            return None, TrialRecord(retrained="no artifact store")
        if artifact is None:
            return None, TrialRecord(retrained=f"trial {parent.number} stored no checkpoint")
        try:
            states, step = load_checkpoints(self.artifacts, artifact,
                                            [entry.name for entry in self.suite],
                                            self.budget.rates)
        except CheckpointUnavailable as error:
            removal = self.patience(claims.read, f"{REMOVED}{artifact}")
            if isinstance(removal, dict):  # the budget grew after its rung was decided
                error = f"removed ({removal.get('reason')})"
            return None, TrialRecord(retrained=f"checkpoint of trial {parent.number}: {error}")
        return states, TrialRecord(resumed_step=step)

    def _save(self, trial: optuna.Trial, result: Any) -> str | None:
        """Upload the run's pre-decay states; their artifact id (None: none to keep, or the
        store failed, and a promotion of this trial will retrain)."""
        if self.artifacts is None or not result.checkpoints:
            return None
        try:
            return self.patience(save_checkpoints, self.artifacts, trial, result.checkpoints)
        except OSError:  # a full or read-only disk costs the promotion its head start only
            return None

    def _pause(self) -> None:
        self.idle()
        time.sleep(self.poll_seconds)

    def _evaluate(self, arch, budget, resume=None):
        """The candidate's `trials.TrialResult` at `budget` (continuing `resume`'s states)."""
        if self._run is None:
            from trials.train import run_trial  # Lightning: loaded by the first trial to train

            self._run = run_trial
        extra = {} if resume is None else {"resume": resume}
        result = self._run(arch, self.suite, budget, seed=self.definition.seed, **extra)
        if result.device != "cpu":
            release_accelerator_memory()
        return result

    def _values(self, analytic: dict[str, float], result: TrainedResult) -> tuple[float, ...]:
        return tuple(objective.value(analytic, result) for objective in self.objectives)

    def _reuse(self, trial: optuna.Trial, twin: optuna.trial.FrozenTrial) -> tuple[float, ...]:
        result = TrialRecord.from_frozen_trial(twin).result
        self._write(trial, TrialRecord(result=result, duplicate_of=twin.number))
        if twin.state == TrialState.FAIL:
            raise CandidateFailed(f"{result.failure} (duplicate of trial {twin.number})")
        return tuple(twin.values)


def _restore_ctrl_c() -> None:
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    except ValueError:  # not the main thread: nothing was changed there
        pass


def release_accelerator_memory() -> None:
    """Free the finished model's GPU memory before the next candidate (Lightning's trainer and
    module hold reference cycles that only the collector breaks). Not done on CPU: a full
    collection of a process with torch loaded costs about half a second."""
    import torch  # loaded already by the training that ran; named here, not at module load

    gc.collect()
    torch.cuda.empty_cache()


def find_measured(study: optuna.Study, fingerprint: str,
                  exclude: int | None = None) -> optuna.trial.FrozenTrial | None:
    """The first trial that measured the architecture with this fingerprint (at the first rung,
    in a study with rungs), if any."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
        record = TrialRecord.from_frozen_trial(trial)
        if (trial.number != exclude and record.fingerprint == fingerprint
                and counts_toward_budget(trial)):
            return trial
    return None

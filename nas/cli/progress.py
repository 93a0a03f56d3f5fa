"""What a running search shows: a rich progress bar, or one log line per trial (`--quiet`).

The counts are the study's, read from the database, so the bar is right with several workers
and after a resume: measured trials out of the budget, failures, the Pareto front's size.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable

from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

from nas.cli.common import console, human
from nas.record import BASELINE, DUPLICATE_OF, FAILURE
from nas.report import objectives_of, pareto_front, trial_row
from nas.storage import call_once
from nas.study import count_trials


class SearchProgress:
    """`patience` runs the bar's database reads (`nas.storage.Patience`: through an outage, as a
    worker's own calls; default: once)."""

    def __init__(self, study: Any, n_trials: int, *, quiet: bool = False,
                 patience: Callable[..., Any] | None = None) -> None:
        self.study = study
        self.n_trials = n_trials
        self._call = patience or call_once
        self.quiet = quiet or not console().is_terminal
        self._progress = None
        self._task = None
        self._started = time.monotonic()
        self._done_at_start: int | None = None

    # -- context -------------------------------------------------------------------------------

    def __enter__(self) -> "SearchProgress":
        self._done_at_start = self._call(count_trials, self.study).distinct
        if not self.quiet:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[extra]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                console=console(), transient=False)
            self._progress.__enter__()
            self._task = self._progress.add_task(self.study.study_name, total=self.n_trials,
                                                 completed=self._done_at_start, extra="")
            self._call(self.refresh)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
            self._progress = None

    # -- updates -------------------------------------------------------------------------------

    def note(self, message: str) -> None:
        print(message, file=sys.stderr)

    def refresh(self) -> None:
        trials = self.study.get_trials(deepcopy=False)
        counts = count_trials(self.study, trials)
        if self._progress is not None:
            extra = (f"failed {counts.failed}  infeasible {counts.pruned}  "
                     f"running {counts.running}  front {len(pareto_front(self.study, trials))}")
            self._progress.update(self._task, completed=min(counts.distinct, self.n_trials),
                                  extra=extra)

    def trial_done(self, study: Any, trial: Any) -> None:
        if self.quiet:
            print(self._log_line(trial), file=sys.stderr, flush=True)
        else:
            self.refresh()

    def _log_line(self, trial: Any) -> str:
        row = trial_row(trial, objectives_of(self.study))
        parts = [f"trial {row.trial}", row.state, row.pattern or "-"]
        if row.rung is not None:
            parts.append(f"rung {row.rung}")
        parts += [f"{name}={_fmt(value)}" for name, value in row.values.items()
                  if value is not None]
        parts += [f"{key}={value}" for key, value in ((BASELINE, row.baseline),
                                                      (DUPLICATE_OF, row.duplicate_of),
                                                      (FAILURE, row.failure))
                  if value is not None]
        return "  ".join(str(part) for part in parts)

    def summary(self) -> None:
        counts = count_trials(self.study)
        print(f"study {self.study.study_name!r}: {counts.distinct}/{self.n_trials} measured "
              f"({counts.complete} complete, {counts.failed} failed), {counts.pruned} "
              f"infeasible, Pareto front {len(pareto_front(self.study))}; "
              f"{time.monotonic() - self._started:.1f} s", file=sys.stderr)


def _fmt(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e4 else human(value)

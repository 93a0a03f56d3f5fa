"""Writes tests/data/format1_study.db (and .json, what the reports of that commit said of it): a study recorded by the trial-attribute format of commit
e32964e (before `nas.record.TrialRecord`), kept so that `tests/test_record.py` proves studies
written then still read. Not run by the tests; kept to say how the file was made:

    PYTHONPATH=$PWD python tests/data/make_format1_study.py

Real training (`trials.run_trial`, 3 steps of the quick suite) wrapped to give every kind of
record the format has: complete, duplicate, infeasible (pruned with violations), a candidate
failure (first layer L: "nan_loss at step 2"), an interrupted trial and its retry, a baseline.
"""

from __future__ import annotations

import sys
from pathlib import Path

import optuna
import pytest

from nas.definition import StudyDefinition, toolkit_versions
from nas.storage import open_storage
from nas.study import create_or_check, run_worker
from search_spaces import SearchSpace
from trials.tasks import load_suite
from trials.train import Budget, run_trial

SPACE = """
name: format1
pattern: "{A|M|L} {A|M}"
dims: {d_model: [16, 32], n_heads: 2, d_state: 4, window: 8}
constraints:
  max_params: 25K
"""

BASELINE_SPACE = """
name: format1_baseline
pattern: "{A|R}*6"
dims: {d_model: 16, n_heads: 2}
"""


class Wrapped:
    def __init__(self) -> None:
        self.interrupted = False

    def __call__(self, arch, suite, budget, seed=0):
        if not self.interrupted:
            self.interrupted = True
            raise KeyboardInterrupt
        result = run_trial(arch, suite, budget, seed=seed)
        if arch.layers[0].mixer == "L":
            result.status, result.failure = "failed", "nan_loss at step 2"
        return result


def main(path: Path) -> None:
    path.unlink(missing_ok=True)
    storage = open_storage(f"sqlite:///{path}")
    space = SearchSpace.from_yaml(SPACE)
    suite = load_suite("quick")
    spec = StudyDefinition(space.to_yaml(), space.fingerprint(), suite.to_dict(),
                           suite.fingerprint(), Budget(steps=3, eval_batches=2).to_dict(),
                           "quality,params,decode_ms@64", "random", 9, 0, (), toolkit_versions())
    run = Wrapped()
    study, _ = create_or_check("format1", storage, spec)
    with pytest.raises(KeyboardInterrupt):
        run_worker(study, spec, run=run)
    run_worker(study, spec, run=run)
    # A second study with a baseline that its space produces (hawk: R*6, d_model adjusted).
    space = SearchSpace.from_yaml(BASELINE_SPACE)
    spec = StudyDefinition(space.to_yaml(), space.fingerprint(), suite.to_dict(),
                           suite.fingerprint(), Budget(steps=3, eval_batches=2).to_dict(),
                           "quality,params", "random", 2, 0, ("hawk",), toolkit_versions())
    with_baseline, opened = create_or_check("format1_baseline", storage, spec)
    print(opened)
    run_worker(with_baseline, spec, run=run)
    for trial in study.trials + with_baseline.trials:
        print(trial.number, trial.state.name, trial.values, sorted(trial.user_attrs))


def expected(path: Path) -> dict:
    """What today's reports say about the file: the test holds later code to the same."""
    from nas import report
    from nas.snapshot import read_study

    out = {}
    for name in ("format1", "format1_baseline"):
        study = read_study(name, f"sqlite:///{path}")
        objectives = report.objectives_of(study)
        out[name] = {"status": report.status(study), "trials": report.trial_rows(study),
                     "pareto": [report.trial_row(t, objectives)
                                for t in report.pareto_front(study)]}
    return out


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    import json

    target = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("format1_study.db"))
    main(target)
    target.with_suffix(".json").write_text(json.dumps(expected(target), indent=1, default=str)
                                           + "\n")


"""Builds and trains candidate architectures (torch).

The public names, importable from the package as `search_spaces`' are from theirs:

    build_model(arch)                           an ArchConfig -> a torch model
    run_trial(arch, suite, budget, seed=0)      train and measure one candidate -> TrialResult
    load_suite(name_or_yaml), Suite             the proxy tasks a candidate is trained on
    Budget                                      steps, seconds, batch size, learning rate(s)

Importing this package loads torch and Lightning; the command line imports it only in the
commands that train.
"""

from trials.builder import build_model
from trials.tasks import Suite, SuiteError, TaskError, load_suite
from trials.train import (Budget, BudgetError, TaskResult, TrialResult, run_trial,
                          use_training_threads)

__all__ = ["Budget", "BudgetError", "Suite", "SuiteError", "TaskError", "TaskResult",
           "TrialResult", "build_model", "load_suite", "run_trial", "use_training_threads"]

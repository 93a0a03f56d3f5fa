"""Brief training of candidates on proxy tasks with Lightning, and what it measures."""

from trials.train.budget import Budget, BudgetError
from trials.train.module import TrainingState
from trials.train.result import TaskResult, TrialResult
from trials.train.run import describe_failure, run_trial
from trials.train.threads import training_threads, use_training_threads

__all__ = ["Budget", "BudgetError", "TaskResult", "TrainingState", "TrialResult",
           "describe_failure", "run_trial", "training_threads", "use_training_threads"]

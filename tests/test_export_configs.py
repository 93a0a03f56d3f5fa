"""nas.export.configs.select_trials on a hand-made study: what `hnas export` picks."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution

from nas.export.configs import ExportError, select_trials
from nas.record import TrainedResult, TrialRecord
from nas.storage import open_storage
from nas.study import create_or_check
from search_spaces import ArchConfig

from test_study import definition


def add(study, quality: float, pattern: str, **record) -> None:
    arch = ArchConfig.from_pattern(pattern, d_model=16, n_heads=2, d_state=4, window=8)
    study.add_trial(optuna.trial.create_trial(
        values=[quality, 1000.0], params={"x": 0},
        distributions={"x": CategoricalDistribution([0])},
        user_attrs=TrialRecord(pattern=arch.pattern, arch=arch.to_dict(),
                               result=TrainedResult(quality=quality), **record).to_user_attrs()))


@pytest.fixture
def study(tmp_path):
    study, _ = create_or_check("s", open_storage(f"sqlite:///{tmp_path / 's.db'}"),
                               definition())
    return study


def test_top_k_names_k_architectures_not_a_twin_twice(study):
    add(study, 0.9, "A M")  # trial 0
    add(study, 0.9, "A M", duplicate_of=0)  # trial 1: the same architecture drawn again
    add(study, 0.5, "M M")  # trial 2
    chosen = select_trials(study, top=2, by="quality")
    assert [t.number for t in chosen] == [0, 2]


def test_an_unknown_by_names_the_option(study):
    add(study, 0.9, "A M")
    with pytest.raises(ExportError, match=r"^--by 'loss': not an objective of this study "
                                          r"\(its objectives: quality, params\)$"):
        select_trials(study, top=1, by="loss")

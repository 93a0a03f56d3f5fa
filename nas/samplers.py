"""Optuna samplers by name, set up for architecture search.

All of them read the constraints that `SearchSpace.sample` sets with `trial.set_constraint`.
`grid` is a random sampler over a study whose every assignment was enqueued at creation
(`SearchSpace.enumerate`), since Optuna's GridSampler needs one fixed set of parameters and a
pattern's parameters are conditional.
"""

from __future__ import annotations

import warnings

import optuna

from nas.definition import SAMPLERS, DefinitionError


def make_sampler(name: str, seed: int | None, n_trials: int = 20):
    if name == "nsga2":
        # A generation of 50 (Optuna's default) would make a 20-trial study pure random search.
        population = max(4, min(50, n_trials // 4))
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=population)
    if name == "tpe":
        # group: the pattern's parameters are conditional (a window only where L was chosen);
        # constant_liar: parallel workers do not all propose the same point.
        with warnings.catch_warnings():  # `group` and `multivariate` are marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                              constant_liar=True,
                                              n_startup_trials=min(10, n_trials))
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name in ("random", "grid"):
        return optuna.samplers.RandomSampler(seed=seed)
    raise DefinitionError(f"sampler {name!r}: unknown (valid: {', '.join(SAMPLERS)})")

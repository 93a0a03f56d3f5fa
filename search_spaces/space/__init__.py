"""Search spaces: YAML spec, sampling through Optuna, constraints, size and enumeration."""

from search_spaces.space.constraints import Constraints, parse_quantity
from search_spaces.space.dims import SpaceError, dim_names
from search_spaces.space.space import Candidate, InvalidCandidate, ParamInfo, SearchSpace

__all__ = ["Candidate", "Constraints", "InvalidCandidate", "ParamInfo", "SearchSpace",
           "SpaceError", "dim_names", "parse_quantity"]

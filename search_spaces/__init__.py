"""Search spaces over hybrid architectures: the pattern language, ArchConfig, spaces, costs.

Pure Python (PyYAML, pydantic, Optuna for sampling); never imports torch.
"""

from search_spaces.arch import ArchConfig, ArchConfigError
from search_spaces.errors import UserError
from search_spaces.hf_import import from_hf
from search_spaces.layers import Layer
from search_spaces.pattern import PatternError, format_layers, parse, unparse
from search_spaces.presets import arch_names, load_arch, load_space, space_names
from search_spaces.space import Candidate, SearchSpace, SpaceError

__all__ = ["ArchConfig", "ArchConfigError", "Candidate", "Layer", "PatternError", "SearchSpace",
           "SpaceError", "UserError", "arch_names", "format_layers", "from_hf", "load_arch",
           "load_space", "parse", "space_names", "unparse"]

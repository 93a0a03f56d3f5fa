"""SearchSpace: a pattern with open decisions, the dims, the constraints; sampled through Optuna.

    pattern: "(M*{run: 3..7} {attn: A|L|S})*{blocks: 2..4}"
    dims:
      d_model: [64, 128]
      window: [32, 128]          # only asked when a bare L was chosen
      d_state: {int: [8, 32], step: 8}
    constraints:
      max_params: 5M

`sample(trial)` uses Optuna's define-by-run API: the pattern's decisions first, then only the
dims that the chosen layers use, so a window is a parameter only where a local attention layer
was chosen and the MoE widths only where an MoE layer was.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml
from pydantic import ValidationError

from search_spaces.arch import DEFAULT_WINDOW, ArchConfig, ArchConfigError, relevant_fields
from search_spaces.layers import FFNS, LOCAL_ATTENTION, MLP
from search_spaces.pattern import (
    Choice,
    Count,
    MAX_LAYERS,
    Group,
    Node,
    PatternError,
    Repeat,
    Seq,
    Token,
    decisions,
    expand,
    parse,
    resolve_layers,
    unparse,
    walk,
)
from search_spaces.space.constraints import Constraints
from search_spaces.space.counting import count_assignments
from search_spaces.space.dims import DimSpec, FixedDim, SpaceError, parse_dim
from search_spaces.space.enumerate import enumerate_params
from search_spaces.yaml_input import load_yaml, read_text

TOP_LEVEL_KEYS = ("name", "description", "pattern", "dims", "constraints")
# Dims whose combinations can make an architecture invalid (heads dividing widths, top-k <= E).
INTERACTING_DIMS = ("d_model", "n_heads", "n_kv_heads", "lru_width", "expand", "m2_head_dim",
                    "m2_n_groups", "moe_experts", "moe_top_k", "hyena_order", "hyena_pos_dim")
MAX_CHECKED_COMBINATIONS = 20_000
MAX_PARAM_NAME = 512  # Optuna's RDB storage keeps parameter names in a 512-character column


class InvalidCandidate(SpaceError):
    """A sampled combination of dims that no model can have (only where the space's load-time
    check could not enumerate every combination)."""


@dataclass(frozen=True)
class Candidate:
    """One sampled architecture, the parameters that chose it, and its constraint values."""

    arch: ArchConfig
    params: dict[str, Any]
    constraints: dict[str, float] = field(default_factory=dict)

    @property
    def violations(self) -> dict[str, float]:
        return {name: value for name, value in self.constraints.items() if value > 0}

    @property
    def feasible(self) -> bool:
        return not self.violations


class _TrialResolver:
    """Answers a pattern's decisions with an Optuna trial's suggestions."""

    def __init__(self, trial: Any) -> None:
        self.trial = trial

    def choose(self, name: str, options: tuple[str, ...], node: Choice) -> int:
        return options.index(self.trial.suggest_categorical(name, list(options)))

    def count(self, name: str, node: Count) -> int:
        if node.is_range:
            return self.trial.suggest_int(name, node.values[0], node.values[-1])
        return self.trial.suggest_categorical(name, list(node.values))


@dataclass(frozen=True)
class ParamInfo:
    """A parameter as Optuna will see it, for `hnas space check`."""

    name: str
    distribution: str
    when: str


@dataclass(frozen=True)
class SearchSpace:
    pattern: str
    tree: Seq
    dims: dict[str, DimSpec]
    constraints: Constraints
    name: str | None = None
    description: str | None = None

    # -- loading -------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Any, source: str = "space") -> "SearchSpace":
        if not isinstance(data, dict):
            raise SpaceError(f"{source}: a search space must be a mapping with a 'pattern' key")
        unknown = [key for key in data if key not in TOP_LEVEL_KEYS]
        if unknown:
            raise SpaceError(f"{unknown[0]}: unknown key (valid keys: {', '.join(TOP_LEVEL_KEYS)})")
        pattern = data.get("pattern")
        if not isinstance(pattern, str):
            raise SpaceError("pattern: missing or not a string")
        try:
            tree = parse(pattern)
        except PatternError as error:
            raise SpaceError(f"pattern: {error}") from None
        raw_dims = data.get("dims") or {}
        if not isinstance(raw_dims, dict):
            raise SpaceError("dims: expected a mapping of dim name to value, list or range")
        dims = {str(name): parse_dim(str(name), raw) for name, raw in raw_dims.items()}
        try:
            constraints = Constraints.model_validate(data.get("constraints") or {})
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in ("constraints", *first["loc"]))
            raise SpaceError(f"{where}: {first['msg']}") from None
        for key in ("name", "description"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise SpaceError(f"{key}: expected a string")
        space = cls(pattern, tree, dims, constraints, data.get("name"), data.get("description"))
        space._check()
        return space

    @classmethod
    def from_yaml(cls, text: str, source: str = "space") -> "SearchSpace":
        return cls.from_dict(load_yaml(text, source, SpaceError), source)

    @classmethod
    def from_file(cls, path: str | Path) -> "SearchSpace":
        return cls.from_yaml(read_text(path, SpaceError), str(path))

    def _check(self) -> None:
        """Refuse spaces that cannot work, where that can be told before sampling."""
        names = _decision_names(self.tree)
        clash = sorted(names & set(self.dims))
        if clash:
            raise SpaceError(f"pattern: the name {clash[0]!r} is both a pattern decision and a dim")
        low, high = _depth_range(self.tree)
        if high > MAX_LAYERS:
            raise SpaceError(f"pattern: can expand to {high:,} layers; a candidate may have at "
                             f"most {MAX_LAYERS:,}")
        long_name = next((name for name in names if len(name) > MAX_PARAM_NAME), None)
        if long_name is not None:
            raise SpaceError(f"pattern: the decision name {long_name[:40]!r}... is "
                             f"{len(long_name):,} characters long; at most {MAX_PARAM_NAME}")
        if self.constraints.depth is not None:
            want_low, want_high = self.constraints.depth
            if high < want_low or low > want_high:
                raise SpaceError(f"constraints.depth: [{want_low:g}, {want_high:g}] cannot be met; "
                                 f"the pattern has {low}..{high} layers")
        self._check_dim_combinations()

    def _check_dim_combinations(self) -> None:
        kinds = _possible_kinds(self.tree, self.dims)
        specs = [self.dims[n] for n in INTERACTING_DIMS if n in self.dims]
        value_lists = [spec.values() for spec in specs]
        if any(v is None for v in value_lists):
            return
        total = 1
        for values in value_lists:
            total *= len(values)
        if total > MAX_CHECKED_COMBINATIONS:
            return  # too many to try: sample() reports an invalid combination when it occurs
        fixed = {name: spec.values()[0] for name, spec in self.dims.items()
                 if isinstance(spec, FixedDim) and name not in ("window", "ffn")}
        probe_layers = _probe_layers(kinds)
        for combo in itertools.product(*value_lists):
            dims = {**fixed, **{spec.name: value for spec, value in zip(specs, combo)}}
            try:
                ArchConfig(layers=probe_layers, **dims)
            except ArchConfigError as error:
                shown = ", ".join(f"{spec.name}={value}" for spec, value in zip(specs, combo))
                raise SpaceError(f"dims: {error} (the space allows {shown})") from None

    # -- sampling ------------------------------------------------------------------------------

    def decide(self, trial: Any) -> tuple[tuple, dict[str, Any]]:
        """The resolved layers and the dims, asking `trial` for every open decision."""
        tokens = expand(self.tree, _TrialResolver(trial))
        window = DEFAULT_WINDOW
        ffn = MLP
        if any(t.mixer == LOCAL_ATTENTION and t.arg is None for t in tokens):
            window = self._suggest("window", trial, DEFAULT_WINDOW)
        if any(t.ffn is None for t in tokens):
            ffn = self._suggest("ffn", trial, MLP)
        layers = resolve_layers(tokens, window=window, ffn=ffn)
        kinds = {layer.mixer for layer in layers} | {layer.ffn for layer in layers}
        dims = {name: self.dims[name].suggest(trial)
                for name in relevant_fields(kinds) if name in self.dims}
        return layers, dims

    def _suggest(self, name: str, trial: Any, default: Any) -> Any:
        spec = self.dims.get(name)
        return default if spec is None else spec.suggest(trial)

    def sample(self, trial: Any) -> Candidate:
        """Draw one architecture through `trial` (an Optuna Trial, FixedTrial, ...).

        Constraint values are set on the trial with `trial.set_constraint` when it has one, so
        Optuna's constrained samplers see them; they are also on the returned candidate.
        """
        layers, dims = self.decide(trial)
        try:
            arch = ArchConfig(layers=layers, **dims)
        except ArchConfigError as error:
            raise InvalidCandidate(f"dims: {error}") from None
        constraints = self.constraints.evaluate(arch)
        set_constraint = getattr(trial, "set_constraint", None)
        if set_constraint is not None:
            for name, value in constraints.items():
                set_constraint(name, value)
        return Candidate(arch, dict(getattr(trial, "params", {})), constraints)

    # -- describing ----------------------------------------------------------------------------

    def size(self) -> int | None:
        """Distinct parameter assignments (what a grid would visit); None if infinite."""
        return count_assignments(self.tree, self.dims)

    def enumerate(self, limit: int = 100_000) -> Iterator[dict[str, Any]]:
        """Every parameter assignment, in a fixed order (for grid search via enqueue_trial)."""
        return enumerate_params(self, limit)

    def params(self) -> list[ParamInfo]:
        """The parameters Optuna will see, with the condition under which each is asked."""
        rows = _pattern_params(self.tree)
        tokens_possible = _possible_kinds(self.tree, self.dims, raw=True)
        if "bare L" in tokens_possible and "window" in self.dims and self.dims["window"].searchable:
            rows.append(ParamInfo("window", self.dims["window"].describe(), "when a bare L is chosen"))
        if "default ffn" in tokens_possible and "ffn" in self.dims and self.dims["ffn"].searchable:
            rows.append(ParamInfo("ffn", self.dims["ffn"].describe(),
                                  "when a layer without a suffix is chosen"))
        for name, spec in self.dims.items():
            if name in ("window", "ffn") or not spec.searchable:
                continue
            users = [kind for kind, fields in ArchConfig.RELEVANT.items() if name in fields]
            when = "always" if name in ArchConfig.ALWAYS else "when the layers include " + \
                ", ".join(users)
            rows.append(ParamInfo(name, spec.describe(), when))
        return rows

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.name:
            data["name"] = self.name
        if self.description:
            data["description"] = self.description
        data["pattern"] = unparse(self.tree)
        data["dims"] = {name: spec.to_yaml() for name, spec in self.dims.items()}
        data["constraints"] = self.constraints.to_yaml()
        return data

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def fingerprint(self) -> str:
        """Identifies what the space can produce (not its name or description)."""
        data = self.to_dict()
        data.pop("name", None)
        data.pop("description", None)
        payload = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


# -- static facts about a pattern tree -----------------------------------------------------------


def _decision_names(tree: Node) -> set[str]:
    return {node.name for node in decisions(tree) if node.name is not None}


def _possible_kinds(tree: Node, dims: dict[str, DimSpec], raw: bool = False) -> set[str]:
    """Every mixer and FFN kind some sample could contain (raw: also 'bare L'/'default ffn')."""
    kinds: set[str] = set()
    for node in walk(tree):
        if isinstance(node, Token):
            layer = node.layer
            kinds.add(layer.mixer)
            if layer.ffn is None:
                kinds.add("default ffn")
                ffn_spec = dims.get("ffn")
                kinds.update(ffn_spec.values() if ffn_spec else (MLP,))
            else:
                kinds.add(layer.ffn)
            if layer.mixer == LOCAL_ATTENTION and layer.arg is None:
                kinds.add("bare L")
    if not raw:
        kinds -= {"default ffn", "bare L"}
    return kinds


def _probe_layers(kinds: set[str]) -> tuple:
    """A stack that has every mixer and every FFN the space can produce (each at least once),
    so that one ArchConfig checks all of the width rules that could apply."""
    from itertools import cycle, islice

    from search_spaces.layers import MIXERS, SHARED, Layer

    default_arg = {LOCAL_ATTENTION: 1, SHARED: 0}  # any valid window / block id will do
    mixers = [m for m in MIXERS if m in kinds] or ["M"]
    ffns = [f for f in FFNS if f in kinds] or [MLP]
    depth = max(len(mixers), len(ffns))
    return tuple(Layer(mixer, default_arg.get(mixer), ffn)
                 for mixer, ffn in zip(islice(cycle(mixers), depth), islice(cycle(ffns), depth)))


def _depth_range(node: Node) -> tuple[int, int]:
    if isinstance(node, Token):
        return 1, 1
    if isinstance(node, Seq):
        parts = [_depth_range(item) for item in node.items]
        return sum(p[0] for p in parts), sum(p[1] for p in parts)
    if isinstance(node, Group):
        return _depth_range(node.body)
    if isinstance(node, Repeat):
        low, high = _depth_range(node.item)
        return low * min(node.count.values), high * max(node.count.values)
    if isinstance(node, Choice):
        parts = [_depth_range(alt) for alt in node.alternatives]
        return min(p[0] for p in parts), max(p[1] for p in parts)
    raise TypeError(f"not a pattern node: {node!r}")


def _pattern_params(tree: Node) -> list[ParamInfo]:
    rows: list[ParamInfo] = []
    seen: set[str] = set()

    def visit(node: Node, depth: int, condition: str) -> None:
        if isinstance(node, Seq):
            for item in node.items:
                visit(item, depth, condition)
        elif isinstance(node, Group):
            visit(node.body, depth, condition)
        elif isinstance(node, Repeat):
            count = node.count
            if count.braced:
                add(count, depth, condition,
                    f"int {count.values[0]}..{count.values[-1]}" if count.is_range
                    else "one of " + ", ".join(map(str, count.values)))
            visit(node.item, depth + 1, condition)
        elif isinstance(node, Choice):
            from search_spaces.pattern import choice_options

            options = choice_options(node)
            name = add(node, depth, condition, "one of " + ", ".join(repr(o) for o in options))
            for option, alternative in zip(options, node.alternatives):
                visit(alternative, depth, f"when {name} = {option!r}")

    def add(node: Choice | Count, depth: int, condition: str, distribution: str) -> str:
        from search_spaces.pattern import decision_name

        if node.name is not None:
            name = node.name
        else:
            indices = ",".join("ijklmnop"[level % 8] for level in range(depth))
            name = decision_name(node, ()) + (f"[{indices}]" if depth else "")
        if name not in seen:
            seen.add(name)
            per_rep = "; one per repetition" if depth and node.name is None else ""
            rows.append(ParamInfo(name, distribution, (condition or "always") + per_rep))
        return name

    visit(tree, 0, "")
    return rows

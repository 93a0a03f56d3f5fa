"""`hnas cost`: the analytic costs of one or more architectures, side by side."""

from __future__ import annotations

import json
from typing import Any, Optional

import typer

from nas.cli.app import app
from nas.cli.common import console, fail, human, ratio, user_errors

def kind_order() -> tuple[str, ...]:
    """Breakdown rows in the order of the kind records (attention kinds first)."""
    from search_spaces.layers import FFNS, MIXER_KINDS, NO_FFN

    mixers = sorted(MIXER_KINDS, key=lambda kind: not kind.attention)
    return ("embedding", *(kind.symbol for kind in mixers), *(f for f in FFNS if f != NO_FFN),
            "norm", "lm_head")


def parse_dim_options(options: list[str]) -> dict[str, Any]:
    """`--dim key=value` options; values read as YAML (64 -> int, 1e3 -> float, true -> bool)."""
    from search_spaces import SpaceError
    from search_spaces.yaml_input import load_yaml

    dims: dict[str, Any] = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key.strip():
            fail(f"--dim {option!r}: expected KEY=VALUE, for example --dim n_heads=8")
        dims[key.strip()] = load_yaml(value, f"--dim {key.strip()}", SpaceError)
    return dims


def build_arch(reference: str, dims: dict[str, Any]):
    """A preset name, an ArchConfig file, or a concrete pattern, with dims applied."""
    from search_spaces import ArchConfig
    from search_spaces.presets import is_arch_reference, load_arch

    if is_arch_reference(reference):
        return load_arch(reference, **dims)
    return ArchConfig.from_pattern(reference, **dims)


@app.command()
@user_errors
def cost(
    patterns: list[str] = typer.Argument(..., help="Patterns, preset names or config files."),
    d_model: Optional[int] = typer.Option(None, "--d-model", help="Model width."),
    context: int = typer.Option(8192, "--context", help="Context length for FLOPs and cache."),
    dtype: str = typer.Option("bf16", "--dtype", help="Cache dtype: fp32, bf16, fp16, fp8."),
    state_dtype: Optional[str] = typer.Option(
        None, "--state-dtype", help="Dtype of recurrent states (SSM, RG-LRU), if not --dtype: "
                                    "many decoders keep them in fp32."),
    dim: list[str] = typer.Option([], "--dim", help="Any other dim as KEY=VALUE (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Parameters, active parameters, FLOPs/token and inference cache of architectures.

    With one architecture: a row per layer kind and the total. With several: a row each and
    ratios against the first, e.g. `hnas cost "A*24" "(M*7 A)*3" --d-model 2048`.
    """
    from search_spaces.cost import DTYPE_BYTES, estimate

    for option, value in (("--dtype", dtype), ("--state-dtype", state_dtype)):
        if value is not None and value not in DTYPE_BYTES:
            fail(f"{option} {value!r}: valid dtypes are {', '.join(DTYPE_BYTES)}")
    if context < 1:
        fail(f"--context {context}: must be at least 1")
    dims = parse_dim_options(dim)
    if d_model is not None:
        dims["d_model"] = d_model
    archs = [build_arch(p, dims) for p in patterns]
    reports = [estimate(a, context=context, dtype=dtype, state_dtype=state_dtype) for a in archs]
    if as_json:
        rows = [{"input": p, "pattern": a.pattern, "fingerprint": a.fingerprint(), **r.to_dict()}
                for p, a, r in zip(patterns, archs, reports)]
        typer.echo(json.dumps(rows[0] if len(rows) == 1 else rows, indent=2))
        return
    if len(archs) == 1:
        _print_breakdown(archs[0], reports[0])
    else:
        _print_comparison(archs, reports)


def _print_breakdown(arch, report) -> None:
    from rich.table import Table

    table = Table(title=f"{arch.pattern}  (d_model={arch.d_model}, context={report.context}, "
                        f"cache dtype={_dtypes(report)})")
    for column in ("kind", "count", "params", "active params", "FLOPs/token", "cache"):
        table.add_column(column, justify="left" if column == "kind" else "right")
    order = kind_order()
    kinds = sorted(report.breakdown, key=lambda k: order.index(k) if k in order else len(order))
    for kind in kinds:
        part = report.breakdown[kind]
        table.add_row(kind, str(part.count), human(part.params), human(part.active_params),
                      human(part.flops_per_token), human(part.cache_bytes, binary=True))
    table.add_row("total", str(arch.depth) + " layers", human(report.params),
                  human(report.active_params), human(report.flops_per_token),
                  human(report.cache_bytes, binary=True), style="bold")
    console().print(table)


def _print_comparison(archs, reports) -> None:
    from rich.table import Table

    base = reports[0]
    base_kv = _kv_cache(base)
    table = Table(title=f"context={base.context}, cache dtype={_dtypes(base)}; "
                        "ratios (x) against the first row")
    columns = ("pattern", "layers", "params", "active", "FLOPs/token", "KV cache", "state cache",
               "cache", "params x", "FLOPs x", "KV x", "cache x")
    for column in columns:
        table.add_column(column, justify="left" if column == "pattern" else "right")
    for arch, report in zip(archs, reports):
        kv = _kv_cache(report)
        table.add_row(arch.pattern, str(arch.depth), human(report.params),
                      human(report.active_params), human(report.flops_per_token),
                      human(kv, binary=True), human(report.cache_bytes - kv, binary=True),
                      human(report.cache_bytes, binary=True),
                      ratio(report.params, base.params),
                      ratio(report.flops_per_token, base.flops_per_token),
                      ratio(kv, base_kv), ratio(report.cache_bytes, base.cache_bytes))
    console().print(table)


def _dtypes(report) -> str:
    if report.state_dtype == report.dtype:
        return report.dtype
    return f"{report.dtype}, recurrent states {report.state_dtype}"


def _kv_cache(report) -> int:
    """Bytes of attention KV cache (A, L, S); the rest of the cache is recurrent state."""
    from search_spaces.layers import ATTENTION_MIXERS

    return sum(report.breakdown[k].cache_bytes for k in ATTENTION_MIXERS
               if k in report.breakdown)

"""`hnas cost`: the analytic costs of one or more architectures, side by side."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.table import Table

from nas.cli.common import (AsJson, DModel, Dims, build_arch, console, fail, human,
                            parse_dim_options, ratio)


def kind_order() -> tuple[str, ...]:
    """Breakdown rows in the order of the kind records (attention kinds first)."""
    from search_spaces.layers import FFNS, MIXER_KINDS, NO_FFN  # not at --help (see nas.cli)

    mixers = sorted(MIXER_KINDS, key=lambda kind: not kind.attention)
    return ("embedding", *(kind.symbol for kind in mixers), *(f for f in FFNS if f != NO_FFN),
            "norm", "lm_head")


def cost(
    patterns: list[str] = typer.Argument(..., help="Patterns, preset names or config files."),
    d_model: DModel = None,
    context: int = typer.Option(8192, "--context", help="Context length for FLOPs and cache."),
    dtype: str = typer.Option("bf16", "--dtype", help="Cache dtype: fp32, bf16, fp16, fp8."),
    state_dtype: Optional[str] = typer.Option(
        None, "--state-dtype", help="Dtype of recurrent states (SSM, RG-LRU), if not --dtype: "
                                    "many decoders keep them in fp32."),
    dim: Dims = [],  # noqa: B006 - typer's way to give a repeatable option no values
    as_json: AsJson = False,
) -> None:
    """Parameters, active parameters, FLOPs/token and inference cache of architectures.

    With one architecture: a row per layer kind and the total. With several: a row each and
    ratios against the first, e.g. `hnas cost "A*24" "(M*7 A)*3" --d-model 2048`.
    """
    from search_spaces.cost import DTYPE_BYTES, estimate  # not at --help (see nas.cli)

    for option, value in (("--dtype", dtype), ("--state-dtype", state_dtype)):
        if value is not None and value not in DTYPE_BYTES:
            fail(f"{option} {value!r}: valid dtypes are {', '.join(DTYPE_BYTES)}")
    if context < 1:
        fail(f"--context {context}: must be at least 1")
    dims = parse_dim_options(dim, d_model)
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
    from search_spaces.layers import ATTENTION_MIXERS  # not at --help (see nas.cli)

    return sum(report.breakdown[k].cache_bytes for k in ATTENTION_MIXERS
               if k in report.breakdown)

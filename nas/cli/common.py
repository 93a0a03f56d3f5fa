"""What the commands share: their common options and help texts, reading their inputs
(architectures, `--dim` options, a study to read), turning user mistakes into one line and exit
code 2, and number formatting for tables.

Nothing here imports torch or Optuna at module level: `hnas --help` imports this module.
"""

from __future__ import annotations

import functools
import shutil
import sys
from typing import Annotated, Any, Callable, Optional, TypeVar

import typer
from rich.console import Console

F = TypeVar("F", bound=Callable[..., Any])
USAGE_ERROR = 2
MAX_SEED = 2**31 - 1  # leaves room under NumPy's 2**32 for each worker's offset

STORAGE_HELP = "SQLAlchemy URL of the study database (default: sqlite:///hnas.db here)."
OUTAGE_HELP = ("Seconds to wait for an unreachable study database before giving up "
               "(default 600, or $HNAS_OUTAGE_WAIT).")
LR_HELP = ("Peak learning rate (AdamW, warm-up, then the suite's schedule; default: the suite's "
           "calibrated rate, 3e-3 held constant on recall64, otherwise 1e-3 with a cosine "
           "decay). Repeat it to sweep: each task trains at every rate and scores its best, at "
           "that many times the cost.")
SUITE_HELP = "quick, mad, mqar, lm, capacity, recall64 or a suite YAML."
DIM_HELP = "Any other dim as KEY=VALUE (repeatable)."

# Options several commands take, written once (`name: Storage = None` in a signature).
Storage = Annotated[Optional[str], typer.Option("--storage", help=STORAGE_HELP)]
OutageWait = Annotated[Optional[float], typer.Option("--outage-wait", help=OUTAGE_HELP)]
ARTIFACTS_HELP = ("Folder of the checkpoints successive halving's promotions continue from "
                  "(default: beside a SQLite database; with PostgreSQL, a folder every worker "
                  "can read, or promotions retrain).")
Artifacts = Annotated[Optional[str], typer.Option("--artifacts", help=ARTIFACTS_HELP)]
Quiet = Annotated[bool, typer.Option("--quiet", help="A log line per trial, no progress bar.")]
Suite = Annotated[str, typer.Option("--suite", help=SUITE_HELP)]
LearningRates = Annotated[list[float], typer.Option("--lr", help=LR_HELP)]
BatchSize = Annotated[int, typer.Option("--batch-size")]
Seed = Annotated[int, typer.Option("--seed")]
DModel = Annotated[Optional[int], typer.Option("--d-model", help="Model width.")]
Dims = Annotated[list[str], typer.Option("--dim", help=DIM_HELP)]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
StudyName = Annotated[str, typer.Argument(metavar="NAME")]


def user_errors(func: F) -> F:
    """Report the toolkit's input errors (`UserError`) and failures of the world around the
    command as `error: ...` on stderr and exit 2, no traceback. The one place they are caught;
    the registry in `nas.cli.app` wraps every command in it."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        # When a command runs, not at `hnas --help`: importing search_spaces loads its parser
        # and presets.
        from search_spaces.errors import UserError

        try:
            return func(*args, **kwargs)
        except UserError as error:
            fail(describe(error))
        except Exception as error:  # noqa: BLE001 - only the kinds below; the rest propagate
            message = environment_error(error)
            if message is None:
                raise
            fail(message)

    return wrapper  # type: ignore[return-value]


def describe(error) -> str:
    """The one line for a `UserError`: its own, or the CLI's words for a refused study."""
    from nas.definition import DefinitionChanged  # with an error only (see nas.cli)

    return describe_refusal(error) if isinstance(error, DefinitionChanged) else error.describe()


def environment_error(error: BaseException) -> str | None:
    """One line for a failure of the world around the command rather than of its input's
    form: the study database (Optuna wraps database errors in StorageInternalError) or a file
    that cannot be written. None for anything else, which is a bug and keeps its traceback."""
    # On a failure only: these load search_spaces and name SQLAlchemy's errors.
    from nas.storage import describe_storage_error
    from search_spaces.errors import shorten

    described = describe_storage_error(error)
    if described is not None:
        return described
    if isinstance(error, OSError) and error.filename is not None:
        return f"{shorten(str(error.filename))}: {error.strerror or error}"
    return None


def describe_change(change) -> str:
    """A `nas.definition.Change` in words: `budget (steps 3 -> 5)`."""
    if change.field == "space":
        return "search space"
    if change.field == "suite":
        return f"suite ({change.old} -> {change.new})" if change.old != change.new else \
            "suite's tasks"
    if change.field == "budget":
        return "budget (" + ", ".join(f"{key} {change.old[key]} -> {change.new[key]}"
                                      for key in change.old) + ")"
    return f"{change.field} ({change.old} -> {change.new})"


def describe_refusal(error) -> str:
    """Why an existing study was not continued (`nas.definition.DefinitionChanged`)."""
    if error.fixed:
        objectives = next(c for c in error.changes if c.field == "objectives")
        return (f"study {error.study!r} exists with objectives {objectives.old}; a study's "
                "objectives cannot change (start a new --study)")
    return (f"study {error.study!r} exists with a different "
            f"{' and '.join(map(describe_change, error.changes))}; pass --allow-changes to "
            "continue it anyway, or use a new --study name")


def parse_dim_options(options: list[str], d_model: int | None = None) -> dict[str, Any]:
    """`--dim key=value` options (and `--d-model`); values read as YAML (64 -> int,
    1e3 -> float, true -> bool)."""
    from search_spaces import SpaceError  # not at --help (see nas.cli)
    from search_spaces.yaml_input import load_yaml

    dims: dict[str, Any] = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key.strip():
            fail(f"--dim {option!r}: expected KEY=VALUE, for example --dim n_heads=8")
        dims[key.strip()] = load_yaml(value, f"--dim {key.strip()}", SpaceError)
    if d_model is not None:
        dims["d_model"] = d_model
    return dims


def build_arch(reference: str, dims: dict[str, Any]):
    """A preset name, an ArchConfig file, or a concrete pattern, with dims applied."""
    from search_spaces import ArchConfig  # not at --help (see nas.cli)
    from search_spaces.presets import is_arch_reference, load_arch

    if is_arch_reference(reference):
        return load_arch(reference, **dims)
    return ArchConfig.from_pattern(reference, **dims)


def open_for_reading(name: str, storage: str | None):
    """The study as one read (`nas.snapshot`): the reading commands need no live storage.
    Trials whose stored rows are damaged are named on stderr and left out."""
    from nas.snapshot import read_study  # Optuna and SQLAlchemy: not at --help (see nas.cli)
    from nas.storage import default_url

    snapshot = read_study(name, storage or default_url())
    warn_damaged(snapshot)
    return snapshot


def warn_damaged(snapshot) -> None:
    for number, reason in snapshot.damaged:
        print(f"warning: study {snapshot.study_name!r}, trial {number} skipped: {reason}",
              file=sys.stderr)


def check_seed(option: str, seed: int | None) -> None:
    """Seeds go to NumPy and torch, which take 0 .. 2**32 - 1; workers add their index."""
    if seed is not None and not 0 <= seed <= MAX_SEED:
        fail(f"{option} {seed}: expected a whole number from 0 to {MAX_SEED:,}")


def check_timeout(timeout: float | None) -> None:
    """`--timeout` of the commands that run trials: a wall time, so more than 0 seconds."""
    if timeout is not None and not timeout > 0:
        fail(f"--timeout {timeout:g}: expected more than 0 seconds")


DEFAULT_SUITE = "recall64"  # calibrated: see trials.tasks.suite.RECALL64_TRAINING


def suite_training(values: list[float], suite) -> dict[str, Any]:
    """Budget keyword arguments from the suite's calibration (a trials Suite's `training`: its
    rate, schedule and warm-up), with the --lr options given, if any, in place of its rate."""
    settings = suite.training.budget_settings()
    if values:
        settings["lr"] = tuple(values)
    return settings


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(USAGE_ERROR)


def human(value: float, binary: bool = False) -> str:
    """1234567 -> '1.23M'; with binary=True, bytes -> '1.18 MiB'."""
    if binary:
        for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
            if abs(value) >= scale:
                return f"{value / scale:.2f} {unit}"
        return f"{int(value)} B"
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"


def ratio(value: float, base: float) -> str:
    if base == 0:
        return "-" if value == 0 else "inf"
    return f"{value / base:.3g}x"


def console():
    """A rich console that prints user text literally (patterns contain `[i]`, which rich would
    read as markup) and keeps tables readable when the output is not a terminal."""
    plain = Console(markup=False, highlight=False)
    if not plain.is_terminal:
        return Console(markup=False, highlight=False,
                       width=max(shutil.get_terminal_size().columns, 160))
    return plain

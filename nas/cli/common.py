"""What every command shares: turning user mistakes into one line and exit code 2, and
number formatting for tables."""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])
USAGE_ERROR = 2
MAX_SEED = 2**31 - 1  # leaves room under NumPy's 2**32 for each worker's offset
LR_HELP = ("Peak learning rate (AdamW, warm-up then cosine; default 1e-3). Repeat it to sweep: "
           "each task trains at every rate and scores its best, at that many times the cost.")


def user_errors(func: F) -> F:
    """Report the toolkit's input errors as `error: ...` on stderr and exit 2, no traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        # Imported when a command runs, not when it is registered: `hnas --help` stays light.
        from nas.definition import DefinitionChanged, DefinitionError
        from nas.objectives import ObjectiveError
        from nas.storage import StorageError
        from search_spaces import ArchConfigError, PatternError, SpaceError
        from search_spaces.yaml_input import shorten

        try:
            return func(*args, **kwargs)
        except DefinitionChanged as error:
            fail(describe_refusal(error))
        except PatternError as error:
            fail(f"pattern {shorten(error.text)!r}: {error}" if error.text is not None
                 else str(error))
        except (ArchConfigError, SpaceError, StorageError, DefinitionError,
                ObjectiveError) as error:
            fail(str(error))
        except Exception as error:  # noqa: BLE001 - only the kinds below; the rest propagate
            message = environment_error(error)
            if message is None:
                raise
            fail(message)

    return wrapper  # type: ignore[return-value]


def environment_error(error: BaseException) -> str | None:
    """One line for a failure of the world around the command rather than of its input's
    form: the study database (Optuna wraps database errors in StorageInternalError) or a file
    that cannot be written. None for anything else, which is a bug and keeps its traceback.

    Recognised by module and type, so that commands that never touch a database do not have to
    import Optuna or SQLAlchemy here."""
    from nas.storage import describe_storage_error

    described = describe_storage_error(error)
    if described is not None:
        return described
    if isinstance(error, OSError) and error.filename is not None:
        from search_spaces.yaml_input import shorten

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


def check_seed(option: str, seed: int | None) -> None:
    """Seeds go to NumPy and torch, which take 0 .. 2**32 - 1; workers add their index."""
    if seed is not None and not 0 <= seed <= MAX_SEED:
        fail(f"{option} {seed}: expected a whole number from 0 to {MAX_SEED:,}")


def learning_rates(values: list[float]) -> dict[str, Any]:
    """Budget keyword arguments for the --lr options given (none: the budget's default)."""
    return {"lr": tuple(values)} if values else {}


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
    import shutil

    from rich.console import Console

    plain = Console(markup=False, highlight=False)
    if not plain.is_terminal:
        return Console(markup=False, highlight=False, width=max(shutil.get_terminal_size().columns, 160))
    return plain

"""Choosing trials of a study and writing their architectures as files.

    yaml / json   our ArchConfig (schema_version 1): `trials.build_model` rebuilds the model
                  exactly and `hnas train FILE` trains it further
    hf            a Hugging Face transformers config folder (`config.json`) per family the
                  architecture fits exactly (`nas.export.hf.HF_FAMILIES`: Jamba, NemotronH,
                  Zamba2, RecurrentGemma, Mamba, Mamba2, Llama, Mistral, Mixtral)

Files are named after the study and trial: `<study>-trial<N>.yaml`, `<study>-trial<N>-<family>/`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from nas.export.hf import HF_FAMILIES, HFExportError, hf_config_object, hf_families_for
from nas.halving import rung_of
from nas.record import TrialRecord
from nas.report import objectives_of, pareto_front, shown_rung, trial_rows
from search_spaces import ArchConfig
from search_spaces.errors import UserError


class ExportError(UserError):
    """Nothing to export, or an architecture no requested format can express."""


def select_trials(study: Any, *, trial: int | None = None, pareto: bool = False,
                  top: int | None = None, by: str | None = None) -> list[FrozenTrial]:
    """Exactly one of: a trial number, the Pareto front, the best `top` by objective `by`
    (duplicates left out, as on the front). In a study with rungs the front and the best are
    those at the rung `nas.report.shown_rung` picks (`rung_label` says which)."""
    if sum(x is not None and x is not False for x in (trial, pareto or None, top)) != 1:
        raise ExportError("choose what to export: --trial N, --pareto or --top K --by OBJECTIVE")
    complete = {t.number: t for t in study.get_trials(deepcopy=False,
                                                       states=(TrialState.COMPLETE,))}
    if trial is not None:
        if trial not in complete:
            known = sorted(complete)
            raise ExportError(f"trial {trial} of study {study.study_name!r} is not a complete "
                              f"trial (complete: {_ranges(known) or 'none'})")
        return [complete[trial]]
    rung = shown_rung(study, list(complete.values()))
    if pareto:
        front = pareto_front(study, rung=rung)
        if not front:
            raise ExportError(f"study {study.study_name!r} has no complete trials yet")
        return front
    if top < 1:
        raise ExportError(f"--top: expected at least 1, got {top}")
    names = [o.name for o in objectives_of(study)]
    if by is None:
        if len(names) > 1:
            raise ExportError(f"--top needs --by, one of: {', '.join(names)}")
        by = names[0]
    if by not in names:
        raise ExportError(f"--by {by!r}: not an objective of this study (its objectives: "
                          f"{', '.join(names)})")
    # a duplicate repeats its twin's architecture and values: the best K are K architectures
    rows = [row for row in trial_rows(study, state="complete", sort=by)
            if row.duplicate_of is None
            and (rung is None or rung_of(complete[row.trial]) == rung)][:top]
    if not rows:
        raise ExportError(f"study {study.study_name!r} has no complete trials yet")
    return [complete[row.trial] for row in rows]


def arch_of(trial: FrozenTrial):
    record = TrialRecord.from_frozen_trial(trial)
    if record.arch is None:
        raise ExportError(f"trial {trial.number} has no recorded architecture")
    return ArchConfig.from_dict(record.arch)


def write_trial(study: Any, trial: FrozenTrial, fmt: str, out_dir: Path, *,
                hf_family: str | None = None) -> list[Path]:
    """Write one trial's architecture; returns the paths written."""
    arch = arch_of(trial)
    stem = f"{_safe(study.study_name)}-trial{trial.number}"
    if fmt in ("yaml", "json"):
        path = out_dir / f"{stem}.{fmt}"
        if fmt == "yaml":
            header = _provenance(study, trial)
            path.write_text(header + arch.to_yaml())
        else:
            path.write_text(arch.to_json() + "\n")
        return [path]
    return _write_hf(arch, stem, out_dir, hf_family)


def _write_hf(arch: Any, stem: str, out_dir: Path, family: str | None) -> list[Path]:
    if family is not None and family not in HF_FAMILIES:
        raise ExportError(f"--hf-family {family!r}: unknown (valid: {', '.join(HF_FAMILIES)})")
    reasons = hf_families_for(arch)
    families = [family] if family else [name for name, why in reasons.items() if why is None]
    if family and reasons[family] is not None:
        raise ExportError(f"{arch.pattern}: {reasons[family]}")
    if not families:
        raise ExportError(f"{arch.pattern} fits no Hugging Face config: " +
                          "; ".join(f"{why}" for why in reasons.values()))
    paths = []
    for name in families:
        folder = out_dir / f"{stem}-{name}"
        try:
            hf_config_object(arch, name).save_pretrained(folder)
        except HFExportError as error:
            raise ExportError(str(error)) from None
        paths.append(folder / "config.json")
    return paths


def _provenance(study: Any, trial: FrozenTrial) -> str:
    values = ", ".join(f"{o.name}={v:.6g}" for o, v in zip(objectives_of(study), trial.values))
    return (f"# exported by hnas from study {study.study_name!r}, trial {trial.number}\n"
            f"# {values}\n")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _ranges(numbers: list[int]) -> str:
    if len(numbers) > 12:
        return f"{numbers[0]}..{numbers[-1]} ({len(numbers)} trials)"
    return ", ".join(map(str, numbers))

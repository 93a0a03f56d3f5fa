"""Exporting architectures beyond our own ArchConfig files: Hugging Face transformers configs."""

from nas.export.hf import (
    HF_FAMILIES,
    HFExportError,
    hf_config_object,
    hf_families_for,
    to_hf_config,
)

__all__ = ["HF_FAMILIES", "HFExportError", "hf_config_object", "hf_families_for", "to_hf_config"]

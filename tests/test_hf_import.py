"""Hugging Face import: published configs become ArchConfigs whose cost model equals the HF
model parameter for parameter, export(import(cfg)) gives back every architecture field, and
whatever ArchConfig cannot represent is refused with every such field named.

The published configs are in tests/data/hf (sources in SOURCES.md). HF models are built on the
meta device at the published sizes (no weights, no download) and for real at tiny widths.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from nas.cli import app  # noqa: E402
from nas.export import hf_config_object, to_hf_config  # noqa: E402
from search_spaces import ArchConfig, ArchConfigError, from_hf, load_arch  # noqa: E402
from search_spaces.cost import estimate  # noqa: E402
from search_spaces.hf_families import FAMILIES, GENERIC_IGNORED, HFConfigError  # noqa: E402

DATA = Path(__file__).parent / "data" / "hf"
PUBLISHED = sorted(p.name for p in DATA.glob("*.json"))
GiB = 2**30

# Each published config shrunk to widths a CPU builds in a blink; layer keys are kept.
TINY = {
    "jamba-v0.1.json": {"hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4,
                        "num_key_value_heads": 2, "num_experts": 4, "mamba_dt_rank": 8,
                        "vocab_size": 128, "num_hidden_layers": 16},
    "zamba2-1.2b-like.json": {"hidden_size": 64, "intermediate_size": 96,
                              "num_attention_heads": 4, "num_key_value_heads": 4,
                              "n_mamba_heads": 8, "mamba_d_state": 16, "adapter_rank": 8,
                              "vocab_size": 128, "use_shared_attention_adapter": True,
                              "num_mem_blocks": 1},
    "zamba2-2.7b.json": {"hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4,
                         "num_key_value_heads": 4, "n_mamba_heads": 8, "mamba_d_state": 16,
                         "adapter_rank": 8, "vocab_size": 128},
    "recurrentgemma-2b.json": {"hidden_size": 64, "intermediate_size": 192, "lru_width": 64,
                               "num_attention_heads": 4, "head_dim": 16, "vocab_size": 128,
                               "num_hidden_layers": 5, "attention_window_size": 16},
    "nemotron-h-8b-base-8k.json": {"hidden_size": 64, "intermediate_size": 96,
                                   "num_attention_heads": 4, "num_key_value_heads": 2,
                                   "attention_head_dim": 16, "head_dim": 16,
                                   "mamba_num_heads": 8,
                                   "mamba_head_dim": 16, "n_groups": 2, "ssm_state_size": 16,
                                   "vocab_size": 128},
    "mamba-2.8b.json": {"hidden_size": 64, "intermediate_size": 128, "time_step_rank": 4,
                        "vocab_size": 128, "num_hidden_layers": 3, "n_layer": 3},
    "mamba-codestral-7b.json": {"hidden_size": 64, "num_heads": 8, "head_dim": 16,
                                "n_groups": 2, "state_size": 16, "vocab_size": 128,
                                "num_hidden_layers": 3},
    "llama-2-7b.json": {"hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4,
                        "num_key_value_heads": 4, "vocab_size": 128, "num_hidden_layers": 2},
    "mistral-7b-v0.2.json": {"hidden_size": 64, "intermediate_size": 96,
                             "num_attention_heads": 4, "num_key_value_heads": 2,
                             "vocab_size": 128, "num_hidden_layers": 2},
    "mixtral-8x7b-v0.1.json": {"hidden_size": 64, "intermediate_size": 96,
                               "num_attention_heads": 4, "num_key_value_heads": 2,
                               "num_local_experts": 4, "vocab_size": 128,
                               "num_hidden_layers": 2},
}


def published(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def hf_config(data: dict):
    """The transformers config class's own object for a config.json dict."""
    return transformers.AutoConfig.for_model(**data)


def hf_params(config, arch: ArchConfig, device: str = "meta") -> tuple[int, int]:
    """(parameters, parameters one token uses) of the HF model built from `config`: the
    experts of each MoE block count K/E for the active figure."""
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    inactive = 0
    for module in model.modules():
        experts = getattr(module, "experts", None)
        if isinstance(experts, torch.nn.Module) and type(module).__name__.endswith("MoeBlock"):
            per_expert = sum(p.numel() for p in experts.parameters()) / arch.moe_experts
            inactive += per_expert * (arch.moe_experts - arch.moe_top_k)
    return total, total - round(inactive)


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_config_costs_exactly_the_hf_model(name):
    data = published(name)
    arch = from_hf(data)
    total, active = hf_params(hf_config(data), arch)
    report = estimate(arch)
    assert (report.params, report.active_params) == (total, active)


@pytest.mark.parametrize("name", PUBLISHED + ["zamba2-1.2b-like.json"])
def test_tiny_config_from_the_config_class_costs_exactly_the_built_model(name):
    source = "zamba2-2.7b.json" if name == "zamba2-1.2b-like.json" else name  # attention LoRA
    config = hf_config({**published(source), **TINY[name]})
    arch = from_hf(config)  # a config object: read through its full to_dict()
    assert from_hf(config.to_dict()) == arch
    total, active = hf_params(config, arch, device="cpu")
    assert (estimate(arch).params, estimate(arch).active_params) == (total, active)


def _architecture_fields(config) -> dict:
    """The config's keys that describe the architecture, as the config class stores them."""
    family = FAMILIES[config.model_type]
    data = config.to_dict()
    if data.get("head_dim") is None and "head_dim" in data:  # None means hidden/heads
        data["head_dim"] = data["hidden_size"] // data["num_attention_heads"]
    # older files' names of derived widths, checked on import, and keys that may only be null
    skip = GENERIC_IGNORED | family.ignored | {link.hf for link in family.links
                                               if not link.exported}
    skip |= {key for key in family.null_only if data.get(key) is None}
    if family.name == "nemotron_h":  # it ignores num_hidden_layers: its pattern decides
        skip |= {"num_hidden_layers"}
    return {key: value for key, value in data.items() if key not in skip}


@pytest.mark.parametrize("name", PUBLISHED)
def test_export_of_the_import_gives_back_every_architecture_field(name):
    data = published(name)
    arch = from_hf(data)
    family = data["model_type"]
    exported = hf_config_object(arch, family)
    assert _architecture_fields(exported) == _architecture_fields(hf_config(data))
    assert from_hf(to_hf_config(arch, family)) == arch


@pytest.mark.parametrize("name, pattern", [
    ("jamba-v0.1.json", "((M M+moe)*2 A M+moe M M+moe)*4"),
    ("mamba-2.8b.json", "M+none*64"),
    ("llama-2-7b.json", "A*32"),
    ("mixtral-8x7b-v0.1.json", "A+moe*32"),
    ("recurrentgemma-2b.json", "R*2 (L2048 R*2)*8"),
])
def test_imports_print_as_compact_patterns_that_mean_them(name, pattern):
    arch = from_hf(published(name))
    assert arch.pattern == pattern
    assert ArchConfig.from_pattern(arch.pattern).layers == arch.layers


def test_jamba_paper_kv_cache_table_at_256k_context():
    """Jamba (Lieber et al. 2024), Table 1: KV cache at 256K tokens in 16-bit precision:
    Llama-2 7B 128GB, Mistral 7B 32GB, Mixtral 8x7B 32GB, Jamba 4GB."""
    files = ["llama-2-7b.json", "mistral-7b-v0.2.json", "mixtral-8x7b-v0.1.json",
             "jamba-v0.1.json"]
    result = CliRunner().invoke(app, ["cost", *(str(DATA / f) for f in files),
                                      "--context", "262144", "--dtype", "bf16", "--json"])
    assert result.exit_code == 0, result.output
    kv = [sum(row["breakdown"][k]["cache_bytes"] for k in ("A", "L", "S")
              if k in row["breakdown"]) / GiB for row in json.loads(result.output)]
    assert kv == [128, 32, 32, 4]


# -- refusals ---------------------------------------------------------------------------------


def _refusal(data: dict) -> str:
    with pytest.raises(HFConfigError) as caught:
        from_hf(data)
    return str(caught.value)


def test_every_field_that_cannot_be_represented_is_named_at_once():
    data = {**published("llama-2-7b.json"), "rope_scaling": {"rope_type": "llama3"},
            "head_dim": 96, "hidden_act": "tanh", "mlp_only_flag": 1}
    message = _refusal(data)
    assert message.startswith("LlamaConfig cannot be represented: ")
    for named in ("mlp_only_flag=1: not a field this importer knows", "head_dim=96",
                  "hidden_act='tanh': activation 'tanh' is none of ours",
                  "rope_scaling={'rope_type': 'llama3'}"):
        assert named in message


@pytest.mark.parametrize("name, changes, named", [
    ("jamba-v0.1.json", {"mamba_proj_bias": True}, "mamba_proj_bias=True: ours needs False"),
    ("jamba-v0.1.json", {"sliding_window": 4096}, "sliding_window=4096: ours can represent "
                                                  "only null"),
    ("nemotron-h-8b-base-8k.json", {"hybrid_override_pattern": "M-E*-"},
     "hybrid_override_pattern[2]='E': NemotronH's MoE adds an always-on shared expert"),
    ("nemotron-h-8b-base-8k.json", {"hybrid_override_pattern": "M--*"},
     "hybrid_override_pattern[2]='-': a feed-forward entry that does not follow a mixer"),
    ("zamba2-2.7b.json", {"use_shared_attention_adapter": True, "num_key_value_heads": 8},
     "shared_lora_attention with n_kv_heads=8 != n_heads=32"),
    ("zamba2-2.7b.json", {"n_mamba_heads": 7}, "n_mamba_heads=7: mamba_expand*hidden_size / "
                                               "heads = 5120/7 is not a whole number"),
    ("recurrentgemma-2b.json", {"logits_soft_cap": 50.0}, "logits_soft_cap=50.0: ours needs 30.0"),
    ("mamba-2.8b.json", {"use_bias": True}, "use_bias=True: ours needs False"),
    ("mamba-codestral-7b.json", {"norm_before_gate": True}, "norm_before_gate=True"),
    ("mistral-7b-v0.2.json", {"rope_parameters": {"rope_type": "yarn", "factor": 4.0}},
     "rope_parameters.rope_type='yarn'"),
    ("mixtral-8x7b-v0.1.json", {"vocab_size": None}, "vocab_size"),
    ("jamba-v0.1.json", {"attn_layer_period": 0, "num_experts": "16"},
     "attn_layer_period=0: expected an integer >= 1; num_experts='16': expected an integer"),
    ("zamba2-2.7b.json", {"num_mem_blocks": 0}, "num_mem_blocks=0: expected an integer >= 1"),
    ("zamba2-2.7b.json", {"tie_word_embeddings": False}, "tie_word_embeddings=False: "
                                                         "Zamba2ForCausalLM shares its blocks'"),
    ("nemotron-h-8b-base-8k.json", {"tie_word_embeddings": True}, "tie_word_embeddings=True: "
                                                                  "NemotronHForCausalLM never"),
])
def test_refusals_name_the_field(name, changes, named):
    assert named in _refusal({**published(name), **changes})


def test_unknown_family_is_named_with_the_valid_ones():
    assert "model_type='gpt2': not a family this toolkit imports (valid: jamba, " in \
        _refusal({"model_type": "gpt2"})
    assert issubclass(HFConfigError, ArchConfigError)


def test_sliding_window_imports_as_local_attention():
    arch = from_hf({**published("mistral-7b-v0.2.json"), "sliding_window": 4096})
    assert arch.pattern == "L4096*32"
    assert to_hf_config(arch, "mistral")["sliding_window"] == 4096


# -- the CLI ----------------------------------------------------------------------------------


def test_cli_import_prints_an_arch_file_that_the_other_commands_read(tmp_path):
    folder = tmp_path / "Zamba2-2.7B"
    folder.mkdir()
    (folder / "config.json").write_text((DATA / "zamba2-2.7b.json").read_text())
    runner = CliRunner()
    printed = runner.invoke(app, ["import", str(folder)])
    assert printed.exit_code == 0, printed.output
    assert printed.output.startswith(f"# imported from {folder / 'config.json'} (Zamba2Config)")
    target = tmp_path / "zamba2.yaml"
    written = runner.invoke(app, ["import", str(folder), "-o", str(target)])
    assert written.exit_code == 0, written.output
    arch = load_arch(target)
    assert arch == from_hf(published("zamba2-2.7b.json"))
    assert written.output.strip() == f"{arch.pattern}  ->  {target}"
    as_json = json.loads(runner.invoke(app, ["import", str(folder), "--json"]).output)
    assert ArchConfig.from_dict(as_json) == arch
    cost = json.loads(runner.invoke(app, ["cost", str(folder), "--json"]).output)
    assert cost["params"] == estimate(arch).params and cost["pattern"] == arch.pattern


@pytest.mark.parametrize("content, message", [
    ('{"model_type": "llama", "hidden_act": "tanh"}',
     "config.json: LlamaConfig cannot be represented"),
    ("[1, 2]", "must be a JSON object"),
    ("{not json", "not a readable JSON file"),
])
def test_cli_import_errors_are_one_line_and_exit_2(tmp_path, content, message):
    path = tmp_path / "config.json"
    path.write_text(content)
    result = CliRunner().invoke(app, ["import", str(path)])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    missing = CliRunner().invoke(app, ["import", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "neither a config.json nor a folder" in missing.output


def test_published_mamba_sizes_are_what_the_model_cards_say():
    """Sanity of the typed-in data: the model names' sizes."""
    sizes = {name: estimate(from_hf(published(name))).params / 1e9
             for name in ("mamba-2.8b.json", "zamba2-2.7b.json", "llama-2-7b.json",
                          "jamba-v0.1.json")}
    assert [math.floor(v * 10) / 10 for v in sizes.values()] == [2.7, 2.6, 6.7, 51.5]


@pytest.mark.parametrize("preset, name", [
    ("jamba_full", "jamba-v0.1.json"), ("zamba2_full", "zamba2-2.7b.json"),
    ("recurrentgemma_full", "recurrentgemma-2b.json"),
    ("nemotron_h_full", "nemotron-h-8b-base-8k.json"), ("mamba_full", "mamba-2.8b.json"),
])
def test_full_size_presets_are_the_published_models(preset, name):
    assert load_arch(preset) == from_hf(published(name))


def test_recurrent_states_can_be_costed_in_their_own_dtype():
    """Nemotron-H keeps its SSM states in fp32 (mamba_ssm_cache_dtype): --state-dtype fp32
    doubles the Mamba-2 state bytes against bf16 and leaves keys, values and conv windows."""
    path = str(DATA / "nemotron-h-8b-base-8k.json")
    rows = [json.loads(CliRunner().invoke(app, ["cost", path, "--context", "8192", "--json",
                                                *extra]).output)
            for extra in ([], ["--state-dtype", "fp32"])]
    arch = from_hf(published("nemotron-h-8b-base-8k.json"))
    heads = arch.expand * arch.d_model // arch.m2_head_dim
    ssm_state = 24 * heads * arch.m2_head_dim * arch.m2_d_state  # 24 Mamba-2 layers
    bf16, fp32 = (row["breakdown"]["M2"]["cache_bytes"] for row in rows)
    assert fp32 - bf16 == ssm_state * (4 - 2)
    assert rows[0]["breakdown"]["A"] == rows[1]["breakdown"]["A"]
    assert (rows[0]["state_dtype"], rows[1]["state_dtype"]) == ("bf16", "fp32")
    bad = CliRunner().invoke(app, ["cost", path, "--state-dtype", "fp64"])
    assert bad.exit_code == 2 and "--state-dtype 'fp64': valid dtypes are" in bad.output


# -- the same function, not only the same parameter count ---------------------------------------

# Our parameter names -> the HF model's, per family (regex, replacement), first match wins.
_LLAMA_NAMES = [(r"^embedding", "model.embed_tokens"), (r"^final_norm", "model.norm"),
                (r"^blocks\.(\d+)\.mixer_norm", r"model.layers.\1.input_layernorm"),
                (r"^blocks\.(\d+)\.ffn_norm", r"model.layers.\1.post_attention_layernorm"),
                (r"^blocks\.(\d+)\.mixer\.", r"model.layers.\1.self_attn."),
                (r"^blocks\.(\d+)\.ffn\.router", r"model.layers.\1.mlp.gate"),
                (r"^blocks\.(\d+)\.ffn\.(gate|up|down)\.", r"model.layers.\1.mlp.\2_proj."),
                (r"^blocks\.(\d+)\.ffn\.", r"model.layers.\1.mlp.experts.")]
_NAMES = {
    "llama": _LLAMA_NAMES, "mistral": _LLAMA_NAMES, "mixtral": _LLAMA_NAMES,
    "jamba": [(r"^embedding", "model.embed_tokens"), (r"^final_norm", "model.final_layernorm"),
              (r"^blocks\.(\d+)\.mixer_norm", r"model.layers.\1.input_layernorm"),
              (r"^blocks\.(\d+)\.ffn_norm", r"model.layers.\1.pre_ff_layernorm"),
              (r"^blocks\.(\d+)\.mixer\.([qkvo])_proj", r"model.layers.\1.self_attn.\2_proj"),
              (r"^blocks\.(\d+)\.mixer\.inner_norms\.0", r"model.layers.\1.mamba.dt_layernorm"),
              (r"^blocks\.(\d+)\.mixer\.inner_norms\.1", r"model.layers.\1.mamba.b_layernorm"),
              (r"^blocks\.(\d+)\.mixer\.inner_norms\.2", r"model.layers.\1.mamba.c_layernorm"),
              (r"^blocks\.(\d+)\.mixer\.conv_(weight|bias)", r"model.layers.\1.mamba.conv1d.\2"),
              (r"^blocks\.(\d+)\.mixer\.", r"model.layers.\1.mamba."),
              (r"^blocks\.(\d+)\.ffn\.router", r"model.layers.\1.feed_forward.router"),
              (r"^blocks\.(\d+)\.ffn\.(gate|up|down)\.", r"model.layers.\1.feed_forward.\2_proj."),
              (r"^blocks\.(\d+)\.ffn\.", r"model.layers.\1.feed_forward.experts.")],
    "mamba2": "mamba",
    "mamba": [(r"^embedding", "backbone.embeddings"), (r"^final_norm", "backbone.norm_f"),
              (r"^blocks\.(\d+)\.mixer_norm", r"backbone.layers.\1.norm"),
              (r"^blocks\.(\d+)\.mixer\.conv_(weight|bias)", r"backbone.layers.\1.mixer.conv1d.\2"),
              (r"^blocks\.(\d+)\.mixer\.", r"backbone.layers.\1.mixer.")],
}


def _nemotron_names(arch: ArchConfig) -> list[tuple[str, str]]:
    """NemotronH numbers mixer and FFN entries apart: our layer i is its entry e, its FFN e+1."""
    names = [(r"^embedding", "model.embeddings"), (r"^final_norm", "model.norm_f")]
    entry = 0
    for i, layer in enumerate(arch.layers):
        names += [(rf"^blocks\.{i}\.mixer_norm", f"model.layers.{entry}.norm"),
                  (rf"^blocks\.{i}\.mixer\.conv_(weight|bias)",
                   rf"model.layers.{entry}.mixer.conv1d.\1"),
                  (rf"^blocks\.{i}\.mixer\.", f"model.layers.{entry}.mixer.")]
        if layer.ffn != "none":
            entry += 1
            names += [(rf"^blocks\.{i}\.ffn_norm", f"model.layers.{entry}.norm"),
                      (rf"^blocks\.{i}\.ffn\.(up|down)\.",
                       rf"model.layers.{entry}.mixer.\1_proj.")]
        entry += 1
    return names


def _load_hf_weights(ours, hf, family: str) -> None:
    """Copy the HF model's weights into ours; stacked experts are split (HF keeps gate and up
    as one (E, 2F, d) tensor, transposed against ours)."""
    import re

    state = hf.state_dict()
    names = (_nemotron_names(ours.arch) if family == "nemotron_h"
             else _NAMES[_NAMES[family]] if isinstance(_NAMES[family], str) else _NAMES[family])
    with torch.no_grad():
        for name, param in ours.named_parameters():
            target = next((re.sub(pattern, repl, name) for pattern, repl in names
                           if re.search(pattern, name)), name)  # lm_head: the same name
            if name.endswith(("w_gate", "w_up")):
                fused = state[re.sub(r"w_(gate|up)$", "gate_up_proj", target)]
                half = fused.shape[1] // 2
                part = fused[:, :half] if name.endswith("w_gate") else fused[:, half:]
                param.copy_(part.transpose(1, 2))
            elif name.endswith("w_down"):
                param.copy_(state[re.sub(r"w_down$", "down_proj", target)].transpose(1, 2))
            else:
                param.copy_(state[target].reshape(param.shape))


@pytest.mark.parametrize("name, window", [
    ("llama-2-7b.json", None), ("mistral-7b-v0.2.json", None), ("mistral-7b-v0.2.json", 4),
    ("mixtral-8x7b-v0.1.json", None), ("mixtral-8x7b-v0.1.json", 4), ("jamba-v0.1.json", None),
    ("mamba-2.8b.json", None), ("mamba-codestral-7b.json", None),
    ("nemotron-h-8b-base-8k.json", None),
])
def test_imported_model_computes_what_the_hf_model_computes(name, window):
    """With the HF model's weights, ours gives the same logits: the import describes the
    function, not only the parameter count (Jamba: no RoPE, dt/B/C norms, a router without
    renormalisation; Mistral with a sliding window shorter than the sequence; Mamba-2's gated
    norm over each of its 2 groups; Nemotron-H's relu2 MLPs and attention without RoPE)."""
    from trials.builder import build_model

    data = {**published(name), **TINY[name]}
    del data["torch_dtype"]  # both models in fp32
    if window is not None:  # a sliding window shorter than the sequence
        data["sliding_window"] = window
    config = hf_config(data)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    hf = transformers.AutoModelForCausalLM.from_config(config).eval()
    arch = from_hf(config)
    ours = build_model(arch).eval()
    _load_hf_weights(ours, hf, data["model_type"])
    tokens = torch.randint(0, arch.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(tokens, use_cache=False).logits
        torch.testing.assert_close(ours(tokens).logits, expected, atol=2e-5, rtol=1e-4)

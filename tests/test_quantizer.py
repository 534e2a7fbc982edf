"""FourierApproxConfig + FourierApproxHfQuantizer: quantize on load, pre-quantized round trip, remote code, bad input."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from safetensors import safe_open
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers import AutoModelForCausalLM, CLIPVisionConfig, CLIPVisionModel, Qwen2Config, Qwen2ForCausalLM  # noqa: E402

from llava_fa.quantization import (  # noqa: E402
    FourierApproxConfig,
    compression_report,
    fourier_integration,
    is_fourier_linear,
)
from llava_fa.testing.isolation import run_without_package  # noqa: E402

QCFG = dict(rank=8, amplitude_bits=4, phase_bits=4)


def _qwen2_config(**kw):
    base = dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, tie_word_embeddings=False, max_position_embeddings=64)
    base.update(kw)
    return Qwen2Config(**base)


def _safetensors_keys(folder):
    keys = {}
    for f in os.listdir(folder):
        if f.endswith(".safetensors"):
            with safe_open(os.path.join(folder, f), "pt") as h:
                keys.update({k: h.get_slice(k).get_dtype() for k in h.keys()})
    return keys


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory):
    """(dense model, src folder, quantized model, saved quantized folder, input ids)."""
    root = tmp_path_factory.mktemp("qwen2")
    torch.manual_seed(0)
    dense = Qwen2ForCausalLM(_qwen2_config()).eval()
    dense.save_pretrained(root / "src")
    quant = AutoModelForCausalLM.from_pretrained(root / "src", quantization_config=FourierApproxConfig(**QCFG))
    quant.save_pretrained(root / "quant")
    ids = torch.randint(0, 96, (2, 9), generator=torch.Generator().manual_seed(1))
    return dense, root / "src", quant, root / "quant", ids


# ---------------------------------------------------------------- config
@pytest.mark.parametrize("bad, error, match", [
    (dict(rank=-1), ValueError, "rank"), (dict(rank=2.5), TypeError, "rank"), (dict(amplitude_bits=0), ValueError,
                                                                               "amplitude_bits"),
    (dict(phase_bits=9), ValueError, "phase_bits"), (dict(group_size=0), ValueError, "group_size"),
    (dict(transform="dct"), ValueError, "transform"), (dict(max_iters=0), ValueError, "max_iters"),
    (dict(svd_method="lanczos"), ValueError, "svd_method"), (dict(codebook="kmeans"), ValueError, "codebook"),
    (dict(compute_dtype="int8"), ValueError, "compute_dtype"), (dict(factor_dtype="float64"), ValueError,
                                                                "factor_dtype"),
    (dict(calibration=3), TypeError, "calibration"), (dict(channel_alpha=2.0), ValueError, "channel_alpha"),
    (dict(calibration_stats=["power", "hessian"]), ValueError, "calibration_stats"),
    (dict(overrides={"(": {"rank": 2}}), ValueError, r"overrides\['\('\]"),
    (dict(overrides={"vision": {"rank": -3}}), ValueError, r"overrides\['vision'\]: rank"),
    (dict(overrides={"vision": {"rank": "4"}}), TypeError, r"overrides\['vision'\]: rank"),
    (dict(overrides={"vision": {"bias": True}}), ValueError, "bias"), (dict(not_a_field=1), TypeError, "not_a_field"),
    (dict(modules_to_not_convert="lm_head"), TypeError, "modules_to_not_convert"),
    (dict(phase_aware="yes"), TypeError, "phase_aware"),
])
def test_bad_config_values_raise(bad, error, match):
    with pytest.raises(error, match=f"FourierApproxConfig.*{match}"):
        FourierApproxConfig(**bad)


def test_overrides_match_module_name_suffixes_like_peft():
    cfg = FourierApproxConfig(rank=8, overrides={"layers.1": {"rank": 2}, r"layers\.3\..*": {"rank": 3},
                                                 "up_proj": {"rank": 4}, "layers.5.mlp.down_proj": {"rank": 5}})
    assert cfg.settings_for("model.layers.1").rank == 2
    assert cfg.settings_for("model.layers.12.self_attn.q_proj").rank == 8  # "layers.1" does not hit layers.12
    assert cfg.settings_for("model.layers.1.self_attn.q_proj").rank == 8  # nor the children of layers.1
    assert cfg.settings_for("model.layers.3.self_attn.q_proj").rank == 3
    assert cfg.settings_for("model.layers.13.self_attn.q_proj").rank == 8
    assert cfg.settings_for("model.layers.0.mlp.up_proj").rank == 4
    assert cfg.settings_for("model.layers.0.mlp.gate_up_proj").rank == 8  # whole dotted components only
    assert cfg.settings_for("model.layers.5.mlp.down_proj").rank == 5
    assert cfg.settings_for("model.layers.15.mlp.down_proj").rank == 8


def test_config_round_trip_and_overrides():
    cfg = FourierApproxConfig(rank=8, amplitude_bits=3, phase_bits=5, group_size=None, transform="rfft2",
                              compute_dtype=torch.bfloat16, overrides={"vision_tower": {"rank": 4, "phase_bits": 3}})
    d = cfg.to_dict()
    assert d["quant_method"] == "fourier_approx" and d["compute_dtype"] == "bfloat16"
    again = FourierApproxConfig.from_dict(json.loads(json.dumps(d)))
    assert again.to_dict() == d and again == cfg
    assert cfg.settings_for("model.vision_tower").rank == 4
    assert cfg.settings_for("model.vision_tower").phase_bits == 3
    assert cfg.settings_for("model.vision_tower.encoder.layers.0.mlp.fc1").rank == 8  # suffix match, not search
    assert cfg.settings_for("model.language_model.layers.0.mlp.up_proj").rank == 8
    assert "lm_head" in FourierApproxConfig().modules_to_not_convert


# ---------------------------------------------------------------- quantize on load (Qwen2)
def test_qwen2_quantize_on_load(qwen2):
    dense, _, quant, _, ids = qwen2
    converted = [n for n, m in quant.named_modules() if is_fourier_linear(m)]
    assert len(converted) == 2 * 7  # q, k, v, o, gate, up, down per layer
    assert type(quant.lm_head) is nn.Linear
    q_proj = quant.model.layers[0].self_attn.q_proj
    assert q_proj.rank == 8 and q_proj.amplitude_bits == 4 and not hasattr(q_proj, "weight")
    assert 0 < float(q_proj.approx_error) < 0.2
    with torch.no_grad():
        assert _rel(quant(ids).logits, dense(ids).logits) < 0.3
    assert quant.config.quantization_config.rank == 8


def test_qwen2_save_reload_identical(qwen2):
    _, _, quant, folder, ids = qwen2
    saved = _safetensors_keys(folder)
    for name, module in quant.named_modules():
        if is_fourier_linear(module):
            assert f"{name}.weight" not in saved  # never a dense weight for a converted module
            # factors are saved in factor_dtype (float16 by default), trained as float32 parameters
            assert saved[f"{name}.codes"] == "U8" and saved[f"{name}.lowrank_l1"] == "F16"
    assert json.loads((folder / "config.json").read_text())["quantization_config"]["quant_method"] == "fourier_approx"
    again = AutoModelForCausalLM.from_pretrained(folder)
    assert sum(is_fourier_linear(m) for m in again.modules()) == 14
    factor = again.model.layers[0].mlp.up_proj.lowrank_l1
    assert factor.dtype == torch.float32 and factor.requires_grad
    with torch.no_grad():
        assert torch.equal(again(ids).logits, quant(ids).logits)
    for (n1, t1), (n2, t2) in zip(quant.state_dict().items(), again.state_dict().items()):
        assert n1 == n2 and torch.equal(t1, t2), n1
    # a reloaded model saves again (no dense weight appears)
    again.save_pretrained(folder.parent / "resaved")
    assert _safetensors_keys(folder.parent / "resaved").keys() == saved.keys()


def test_qwen2_dequantize(qwen2):
    _, _, _, folder, ids = qwen2
    model = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        before = model(ids).logits
    model.dequantize()
    assert not any(is_fourier_linear(m) for m in model.modules())
    assert type(model.model.layers[0].mlp.up_proj) is nn.Linear
    assert getattr(model.config, "quantization_config", None) is None
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, before, atol=1e-5)


def test_compression_report(qwen2):
    _, _, quant, folder, _ = qwen2
    report = compression_report(quant)
    assert len(report.modules) == 14
    row = next(m for m in report.modules if m.name.endswith("layers.0.mlp.up_proj"))
    assert row.shape == (64, 32) and row.rank == 8
    module = quant.model.layers[0].mlp.up_proj
    assert row.bits_per_weight == pytest.approx(module.nbits() / (64 * 32))
    assert row.bf16_bytes == 64 * 32 * 2 and row.ratio == pytest.approx(row.bf16_bytes / row.stored_bytes)
    # stored_bytes is what save_pretrained writes for the module (factors in float16)
    prefix = "model.layers.0.mlp.up_proj."
    with safe_open(os.path.join(folder, "model.safetensors"), "pt") as h:
        on_disk = sum(h.get_tensor(k).numel() * h.get_tensor(k).element_size() for k in h.keys()
                      if k.startswith(prefix) and not k.endswith("bias"))
    assert row.stored_bytes == on_disk
    assert 0 < report.mean_error < 0.2 and report.model_stored_bytes > 0
    text = str(report)
    assert "layers.0.mlp.up_proj" in text and "whole model" in text
    assert report.to_dict()["total"]["modules"] == 14


def test_overrides_change_rank_and_bits(qwen2):
    _, src, _, _, _ = qwen2
    cfg = FourierApproxConfig(**QCFG, overrides={r"mlp\..*": {"rank": 2, "amplitude_bits": 3}})
    model = AutoModelForCausalLM.from_pretrained(src, quantization_config=cfg)
    assert model.model.layers[1].mlp.down_proj.rank == 2
    assert model.model.layers[1].mlp.down_proj.amplitude_bits == 3
    assert model.model.layers[1].self_attn.o_proj.rank == 8


# ---------------------------------------------------------------- CLIP vision
def test_clip_vision_quantize_on_load(tmp_path):
    torch.manual_seed(0)
    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=28, patch_size=14)
    dense = CLIPVisionModel(cfg).eval()
    dense.save_pretrained(tmp_path / "clip")
    quant = CLIPVisionModel.from_pretrained(tmp_path / "clip", quantization_config=FourierApproxConfig(rank=4))
    converted = [n for n, m in quant.named_modules() if is_fourier_linear(m)]
    assert len(converted) == 2 * 6  # q, k, v, out_proj, fc1, fc2
    pix = torch.randn(1, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = quant(pixel_values=pix).last_hidden_state
        assert _rel(expected, dense(pixel_values=pix).last_hidden_state) < 0.3
    # the saved folder loads through remote code where llava_fa cannot be imported
    quant.save_pretrained(tmp_path / "quant")
    assert json.loads((tmp_path / "quant" / "config.json").read_text())["auto_map"] == {
        "AutoConfig": "configuration_fourier_approx.CLIPVisionConfig"}
    torch.save(dict(pix=pix, expected=expected), tmp_path / "io.pt")
    code = """
import sys, torch
from transformers import AutoModel
io = torch.load(sys.argv[2])
model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True)
with torch.no_grad():
    out = model(pixel_values=io["pix"]).last_hidden_state
print("CLASS", type(model).__name__, "EQUAL", torch.equal(out, io["expected"]))
"""
    result = run_without_package(code, [str(tmp_path / "quant"), str(tmp_path / "io.pt")],
                                 modules_cache=tmp_path / "modules")
    assert "CLASS CLIPVisionModel EQUAL True" in result.stdout


# ---------------------------------------------------------------- bad input
def test_override_matching_nothing_and_too_small_module_warn(qwen2, monkeypatch):
    _, src, _, _, _ = qwen2
    messages = []
    monkeypatch.setattr(fourier_integration.logger, "warning", lambda msg, *a, **k: messages.append(str(msg)))
    cfg = FourierApproxConfig(rank=4, overrides={"no_such_module": {"rank": 2}, "k_proj": {"rank": 40}})
    model = AutoModelForCausalLM.from_pretrained(src, quantization_config=cfg)
    assert any("no_such_module" in m and "match no" in m for m in messages)
    assert any("too small" in m and "layers.0.self_attn.k_proj" in m for m in messages)
    assert type(model.model.layers[0].self_attn.k_proj) is nn.Linear  # kept dense
    assert is_fourier_linear(model.model.layers[0].self_attn.q_proj)


def test_quantized_checkpoint_with_wrong_config_fails_cleanly(qwen2, tmp_path):
    _, _, _, folder, _ = qwen2
    bad = tmp_path / "bad_rank"
    shutil.copytree(folder, bad)
    config = json.loads((bad / "config.json").read_text())
    config["quantization_config"]["rank"] = 6
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"lowrank_l1: checkpoint \(\d+, 8, 2\) vs expected \(\d+, 6, 2\)"):
        AutoModelForCausalLM.from_pretrained(bad)


def test_quantized_checkpoint_for_other_model_fails_cleanly(qwen2, tmp_path):
    _, _, _, folder, _ = qwen2
    bad = tmp_path / "bad_model"
    shutil.copytree(folder, bad)
    config = json.loads((bad / "config.json").read_text())
    config["intermediate_size"] = 48
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="mlp.up_proj"):
        AutoModelForCausalLM.from_pretrained(bad)


def test_truncated_safetensors_fails_cleanly(qwen2, tmp_path):
    _, src, _, folder, _ = qwen2
    for name, source, qcfg in (("pre", folder, None), ("dense", src, FourierApproxConfig(**QCFG))):
        bad = tmp_path / name
        shutil.copytree(source, bad)
        data = (bad / "model.safetensors").read_bytes()
        (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
        before = sorted(os.listdir(bad))
        # pre-quantized: our layout check names the file; dense: transformers' own loader error
        with pytest.raises(Exception, match="corrupt or truncated|safetensors|Error while deserializing"):
            AutoModelForCausalLM.from_pretrained(bad, **({} if qcfg is None else {"quantization_config": qcfg}))
        assert sorted(os.listdir(bad)) == before  # nothing written next to it


def test_missing_calibration_file_fails_before_loading(qwen2, tmp_path):
    _, src, _, _, _ = qwen2
    with pytest.raises(FileNotFoundError, match="calibration"):
        AutoModelForCausalLM.from_pretrained(src, quantization_config=FourierApproxConfig(
            **QCFG, calibration=str(tmp_path / "nope.safetensors")))


# ---------------------------------------------------------------- LLaVA-FA + remote code
llava = pytest.importorskip("llava_fa.modeling", reason="LLaVA-FA modeling not available")


@pytest.fixture(scope="module")
def llava_quant(tmp_path_factory):
    from llava_fa.modeling import LlavaFAForConditionalGeneration
    from llava_fa.testing import save_tiny_llava_fa

    root = tmp_path_factory.mktemp("llava")
    src = save_tiny_llava_fa(root / "src", seed=0)
    dense = LlavaFAForConditionalGeneration.from_pretrained(src).eval()
    quant = LlavaFAForConditionalGeneration.from_pretrained(src, quantization_config=FourierApproxConfig(**QCFG))
    quant.save_pretrained(root / "quant")
    cfg = quant.config
    ids = torch.randint(4, 50, (1, 12), generator=torch.Generator().manual_seed(0))
    ids[0, 2:2 + cfg.image_seq_length] = cfg.image_token_index
    size = cfg.vision_config.image_size
    pix = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    return dense, quant, root / "quant", dict(input_ids=ids, pixel_values=pix)


def test_llava_fa_quantize_on_load(llava_quant):
    dense, quant, _, inputs = llava_quant
    converted = [n for n, m in quant.named_modules() if is_fourier_linear(m)]
    assert any("vision_tower" in n for n in converted)
    assert {"model.multi_modal_projector.linear_1", "model.multi_modal_projector.linear_2"} <= set(converted)
    assert any("language_model" in n for n in converted)
    assert type(quant.lm_head) is nn.Linear
    with torch.no_grad():
        assert _rel(quant(**inputs).logits, dense(**inputs).logits) < 0.3


def test_llava_fa_save_reload_identical(llava_quant):
    from llava_fa.modeling import LlavaFAForConditionalGeneration

    _, quant, folder, inputs = llava_quant
    saved = _safetensors_keys(folder)
    names = [n for n, m in quant.named_modules() if is_fourier_linear(m)]
    # saved keys use LLaVA's legacy names (transformers reverts its conversion mapping on save)
    prefixes = {k[: -len(".codes")] for k in saved if k.endswith(".codes")}
    assert len(prefixes) == len(names)
    assert not any(f"{p}.weight" in saved for p in prefixes)
    assert any("vision" in p for p in prefixes) and any("multi_modal_projector" in p for p in prefixes)
    again = LlavaFAForConditionalGeneration.from_pretrained(folder)
    with torch.no_grad():
        assert torch.equal(again(**inputs).logits, quant(**inputs).logits)


def test_folder_saved_with_legacy_factor_names_loads_and_resaves_new_names(qwen2, tmp_path):
    from safetensors.torch import load_file, save_file

    _, _, quant, folder, ids = qwen2
    old = tmp_path / "old"
    shutil.copytree(folder, old)
    state = load_file(old / "model.safetensors")
    save_file({k.replace(".lowrank_l", ".lora_l"): v for k, v in state.items()}, old / "model.safetensors",
              metadata={"format": "pt"})
    again = AutoModelForCausalLM.from_pretrained(old)
    with torch.no_grad():
        assert torch.equal(again(ids).logits, quant(ids).logits)
    again.save_pretrained(tmp_path / "new")
    keys = set(_safetensors_keys(tmp_path / "new"))
    assert not any("lora" in k for k in keys) and any(k.endswith(".lowrank_l1") for k in keys)


def test_quantize_on_load_config_and_model_pickle(qwen2, tmp_path):
    import copy
    import pickle

    _, _, quant, _, ids = qwen2
    again = pickle.loads(pickle.dumps(quant.config))
    assert type(again).__name__ == "Qwen2Config" and again.to_dict() == quant.config.to_dict()
    assert type(copy.deepcopy(quant.config)) is type(quant.config)
    torch.save(quant, tmp_path / "model.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, quant(ids).logits)
    loaded.save_pretrained(tmp_path / "resaved")  # the unpickled config still ships the quantizer shim
    assert (tmp_path / "resaved" / "configuration_fourier_approx.py").is_file()


def test_saved_quantized_qwen2_folder_ships_only_what_it_needs(qwen2):
    _, _, _, folder, _ = qwen2
    shipped = {p.name for p in folder.glob("*.py")}
    assert {"configuration_fourier_approx.py", "fourier_quantizer.py", "fourier_linear.py", "polar_quant.py"} <= shipped
    assert not shipped & {"modeling_llava_fa.py", "processing_llava_fa.py", "configuration_llava_fa.py", "tiny.py",
                          "isolation.py", "report.py"}
    for path in folder.glob("*.json"):  # no local path in any saved JSON
        text = path.read_text()
        assert str(folder.parent) not in text and "/tmp" not in text, path.name


RESAVE = """
import sys, torch
from transformers import {auto}
model = {auto}.from_pretrained(sys.argv[1], trust_remote_code=True)
model.save_pretrained(sys.argv[2])
"""


def _check_resaved_remote_folder(folder, tmp_path, auto, inputs_code, expected_logits):
    """Load `folder` through remote code (no package), re-save it, and load the re-saved folder in a fresh process."""
    torch.save(expected_logits, tmp_path / "expected.pt")
    run_without_package(RESAVE.format(auto=auto), [str(folder), str(tmp_path / "resaved")],
                        modules_cache=tmp_path / "m1")
    code = f"""
import sys, torch
from transformers import {auto}
model = {auto}.from_pretrained(sys.argv[1], trust_remote_code=True)
{inputs_code}
with torch.no_grad():
    out = model(**inputs).logits
print("EQUAL", torch.equal(out, torch.load(sys.argv[2])))
"""
    result = run_without_package(code, [str(tmp_path / "resaved"), str(tmp_path / "expected.pt")],
                                 modules_cache=tmp_path / "m2")
    assert "EQUAL True" in result.stdout


def test_resaved_remote_code_qwen2_folder_loads_through_remote_code(qwen2, tmp_path):
    _, _, quant, folder, ids = qwen2
    torch.save(ids, tmp_path / "ids.pt")
    with torch.no_grad():
        expected = quant(ids).logits
    _check_resaved_remote_folder(folder, tmp_path, "AutoModelForCausalLM",
                                 f"inputs = dict(input_ids=torch.load({str(tmp_path / 'ids.pt')!r}))", expected)


def test_quantized_qwen2_folder_loads_through_remote_code_without_package(qwen2, tmp_path):
    _, _, quant, folder, ids = qwen2
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == {"AutoConfig": "configuration_fourier_approx.Qwen2Config"}
    assert (folder / "configuration_fourier_approx.py").is_file() and (folder / "fourier_quantizer.py").is_file()
    with torch.no_grad():
        expected = quant(ids).logits
    torch.save(dict(ids=ids, expected=expected), tmp_path / "io.pt")
    code = """
import sys, torch
from transformers import AutoModelForCausalLM
io = torch.load(sys.argv[2])
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True)
n = sum(getattr(m, "is_fourier_linear", False) for m in model.modules())
with torch.no_grad():
    out = model(io["ids"]).logits
print("CLASS", type(model).__name__, "FOURIER", n, "EQUAL", torch.equal(out, io["expected"]))
"""
    result = run_without_package(code, [str(folder), str(tmp_path / "io.pt")], modules_cache=tmp_path / "modules")
    n_expected = sum(is_fourier_linear(m) for m in quant.modules())
    assert f"CLASS Qwen2ForCausalLM FOURIER {n_expected} EQUAL True" in result.stdout


def test_llava_fa_checkpoint_with_wrong_config_fails_cleanly(llava_quant, tmp_path):
    from llava_fa.modeling import LlavaFAForConditionalGeneration

    _, _, folder, _ = llava_quant
    bad = tmp_path / "bad_rank"
    shutil.copytree(folder, bad)
    config = json.loads((bad / "config.json").read_text())
    config["quantization_config"]["rank"] = QCFG["rank"] + 2
    (bad / "config.json").write_text(json.dumps(config))
    # Llava saves `language_model.model.*` keys; the check must see through transformers' renaming.
    with pytest.raises(ValueError, match=r"\d+ tensor\(s\) do not match.*quantization_config.*model\.vision_tower\.encoder"
                                         r"\.layers\.0\.self_attn\.k_proj\.lowrank_l1: checkpoint [^;]*\(32, 8, 2\)[^;]* vs "
                                         r"expected \(32, 10, 2\)"):
        LlavaFAForConditionalGeneration.from_pretrained(bad)


def test_resaved_remote_code_llava_fa_folder_loads_through_remote_code(llava_quant, tmp_path):
    _, quant, folder, inputs = llava_quant
    torch.save(inputs, tmp_path / "inputs.pt")
    with torch.no_grad():
        expected = quant(**inputs).logits
    _check_resaved_remote_folder(folder, tmp_path, "AutoModelForImageTextToText",
                                 f"inputs = torch.load({str(tmp_path / 'inputs.pt')!r})", expected)


def test_llava_fa_remote_code_without_package(llava_quant, tmp_path):
    _, quant, folder, inputs = llava_quant
    with torch.no_grad():
        expected = quant(**inputs).logits
    torch.save(dict(inputs=inputs, expected=expected), tmp_path / "io.pt")
    assert (folder / "fourier_quantizer.py").is_file() and (folder / "polar_quant.py").is_file()
    code = """
import sys, torch
from transformers import AutoModelForImageTextToText
io = torch.load(sys.argv[2])
model = AutoModelForImageTextToText.from_pretrained(sys.argv[1], trust_remote_code=True)
n = sum(getattr(m, "is_fourier_linear", False) for m in model.modules())
with torch.no_grad():
    out = model(**io["inputs"]).logits
print("FOURIER", n, "EQUAL", torch.equal(out, io["expected"]))
"""
    result = run_without_package(code, [str(folder), str(tmp_path / "io.pt")], modules_cache=tmp_path / "modules")
    n_expected = sum(is_fourier_linear(m) for m in quant.modules())
    assert f"FOURIER {n_expected} EQUAL True" in result.stdout

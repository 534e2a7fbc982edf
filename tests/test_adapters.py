"""Fourier-factor adapters through peft: init exactness, disable, save/load, merge, export, bad input."""

from __future__ import annotations

import os
import warnings

import pytest
import torch
from safetensors import safe_open

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fourier_train_child import (  # noqa: E402
    load_compressed,
    shared_compressed_folder,
    tiny_inputs,
)
from peft import PeftModel  # noqa: E402

from llava_fa.adapters import (  # noqa: E402
    FourierLoraLayer,
    dequantize_codes_only,
    export_real_lora,
    fourier_linear_classes,
    fourier_lora_config,
    get_fourier_peft_model,
    load_fourier_adapter,
)
from llava_fa.adapters.layer import base_factors, lowrank_forward, real_lowrank  # noqa: E402
from llava_fa.quantization import dequantize_model, is_fourier_linear  # noqa: E402


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return shared_compressed_folder(tmp_path_factory)


@pytest.fixture(scope="module")
def inputs(folder):
    return {k: v for k, v in tiny_inputs(load_compressed(folder).config).items() if k != "labels"}


def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def _perturb(peft_model, seed=0, size=0.05):
    """Stand-in for training: move every adapter factor (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if ".fourier_l" in name:
                param.add_(size * torch.randn(param.shape, generator=gen))


def _fourier_layers(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, FourierLoraLayer)}


def test_targets_ranks_and_trainable_parameters(folder):
    model = load_compressed(folder)
    with pytest.warns(UserWarning, match="rank 0"):
        peft_model = get_fourier_peft_model(model, parts=None)
    layers = _fourier_layers(peft_model)
    names = set(layers)
    assert names and not any("k_proj" in n for n in names)  # rank 0 (TEST_COMPRESSION) left out
    assert not any("vision_tower.encoder.layers.1." in n for n in names)  # never read (feature layer -2)
    assert any("vision_tower.encoder.layers.0." in n for n in names)
    assert any("multi_modal_projector" in n for n in names) and any("language_model" in n for n in names)
    trainable = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all(".fourier_l1." in n or ".fourier_l2." in n for n in trainable)
    expected = 0
    for layer in layers.values():
        base = layer.get_base_layer()
        assert layer.r["default"] == base.rank and layer.scaling["default"] == 1.0
        expected += 2 * base.rank * (base.out_features + base.n_cols)
        l1, l2 = base_factors(base)
        assert not l1.requires_grad and not l2.requires_grad
    assert sum(p.numel() for p in trainable.values()) == expected
    assert {layer.r["default"] for layer in layers.values()} == {1, 2}  # v_proj rank 1 via rank_pattern


def test_step0_exact_and_disable_gives_shipped_model(folder, inputs):
    compressed = load_compressed(folder)
    reference = _logits(compressed, inputs)
    peft_model = get_fourier_peft_model(load_compressed(folder))
    assert torch.equal(_logits(peft_model, inputs), reference)  # max abs diff 0
    peft_model.train()
    assert torch.equal(peft_model(**inputs).logits.detach(), reference)  # grad-mode path too
    peft_model.eval()
    _perturb(peft_model)
    moved = _logits(peft_model, inputs)
    assert (moved - reference).abs().max() > 1e-3
    with peft_model.disable_adapter():
        assert torch.equal(_logits(peft_model, inputs), reference)
    assert torch.equal(_logits(peft_model, inputs), moved)


def test_lowrank_branch_matches_dense_weight(folder):
    model = load_compressed(folder)
    base = model.model.language_model.layers[0].mlp.down_proj
    l1, l2 = base_factors(base)
    x = torch.randn(3, 5, base.in_features, generator=torch.Generator().manual_seed(0))
    dense = base.dense_weight() - dequantize_codes_only(torch.nn.Sequential(base)).get_submodule("0").weight
    torch.testing.assert_close(lowrank_forward(base, x, l1, l2), x @ dense.T, rtol=1e-4, atol=1e-5)
    a, b = real_lowrank(base, l1, l2)
    assert a.shape == (base.out_features, 2 * base.rank) and b.shape == (2 * base.rank, base.in_features)
    torch.testing.assert_close(a @ b, dense, rtol=1e-4, atol=1e-6)


def test_gradients_reach_only_adapter_factors(folder, inputs):
    peft_model = get_fourier_peft_model(load_compressed(folder), lora_dropout=0.1)
    peft_model.train()
    loss = peft_model(**inputs, labels=inputs["input_ids"]).loss
    loss.backward()
    grads = {n: p.grad for n, p in peft_model.named_parameters() if p.requires_grad}
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert sum(float(g.abs().sum()) for g in grads.values()) > 0
    assert all(p.grad is None for n, p in peft_model.named_parameters() if not p.requires_grad)


def test_save_load_round_trip(folder, inputs, tmp_path):
    peft_model = get_fourier_peft_model(load_compressed(folder))
    _perturb(peft_model)
    expected = _logits(peft_model, inputs)
    peft_model.save_pretrained(tmp_path / "adapter")
    files = sorted(os.listdir(tmp_path / "adapter"))
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(files)
    assert not [f for f in files if f.endswith((".safetensors", ".bin")) and f != "adapter_model.safetensors"]
    with safe_open(str(tmp_path / "adapter" / "adapter_model.safetensors"), "pt") as handle:
        keys = list(handle.keys())
        assert keys and all(k.endswith((".fourier_l1", ".fourier_l2")) for k in keys)
        assert all(handle.get_slice(k).get_dtype() == "F32" for k in keys)
    adapter_bytes = (tmp_path / "adapter" / "adapter_model.safetensors").stat().st_size
    model_bytes = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    assert adapter_bytes < 0.2 * model_bytes
    reloaded = load_fourier_adapter(load_compressed(folder), tmp_path / "adapter")
    assert isinstance(reloaded, PeftModel)
    assert torch.equal(_logits(reloaded, inputs), expected)
    assert not any(p.requires_grad for p in reloaded.parameters())
    trainable = load_fourier_adapter(load_compressed(folder), tmp_path / "adapter", is_trainable=True)
    assert any(p.requires_grad for p in trainable.parameters())


def test_merge_unmerge_and_unload(folder, inputs, tmp_path):
    from llava_fa.training.trainer_support import float32_factors

    peft_model = get_fourier_peft_model(load_compressed(folder))
    _perturb(peft_model)
    expected = _logits(peft_model, inputs)
    original = _logits(load_compressed(folder), inputs)
    peft_model.merge_adapter()
    assert torch.equal(_logits(peft_model, inputs), expected)
    peft_model.unmerge_adapter()
    with peft_model.disable_adapter():
        assert torch.equal(_logits(peft_model, inputs), original)
    merged = peft_model.merge_and_unload()
    assert not isinstance(merged, PeftModel)
    assert not _fourier_layers(merged)
    assert type(merged.model.language_model.layers[0].self_attn.q_proj).__name__ == "FourierLinear"
    assert not any(n.endswith(".weight") and "q_proj" in n for n, _ in merged.named_parameters())
    assert torch.equal(_logits(merged, inputs), expected)
    with float32_factors(merged):
        merged.save_pretrained(tmp_path / "merged")
    again = load_compressed(tmp_path / "merged")
    assert torch.equal(_logits(again, inputs), expected)


def test_export_real_lora_reproduces_outputs(folder, inputs, tmp_path):
    peft_model = get_fourier_peft_model(load_compressed(folder), parts=None)
    _perturb(peft_model)
    expected = _logits(peft_model, inputs)
    out = export_real_lora(peft_model, tmp_path / "real")
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as handle:
        name = "base_model.model.model.language_model.layers.0.mlp.up_proj"
        a, b = handle.get_tensor(f"{name}.lora_A.weight"), handle.get_tensor(f"{name}.lora_B.weight")
    assert a.shape == (4, 64) and b.shape == (128, 4)  # rank 2r = 4
    dense = dequantize_codes_only(load_compressed(folder))
    assert not any(is_fourier_linear(m) for m in dense.modules())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        real = PeftModel.from_pretrained(dense, str(out))
    torch.testing.assert_close(_logits(real, inputs), expected, rtol=1e-4, atol=1e-4)
    out4 = export_real_lora(peft_model, tmp_path / "real4", relative_to="compressed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        real4 = PeftModel.from_pretrained(dequantize_model(load_compressed(folder)), str(out4))
    torch.testing.assert_close(_logits(real4, inputs), expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="not a Fourier-factor adapter"):
        load_fourier_adapter(load_compressed(folder), out)


def test_classes_found_by_marker_not_isinstance(folder):
    from llava_fa.quantization import FourierLinear

    model = load_compressed(folder)
    classes = fourier_linear_classes(model)
    assert classes == [FourierLinear]
    copy = type("FourierLinear", (torch.nn.Module,), dict(FourierLinear.__dict__))  # an unrelated class, same marker
    module = model.model.language_model.layers[1].mlp.up_proj
    module.__class__ = copy
    assert set(fourier_linear_classes(model)) == {FourierLinear, copy}
    config = fourier_lora_config(model)
    assert set(config._custom_modules) == {FourierLinear, copy}
    peft_model = get_fourier_peft_model(model)
    assert isinstance(peft_model.base_model.model.model.language_model.layers[1].mlp.up_proj, FourierLoraLayer)


def test_bad_input(folder, tmp_path):
    from llava_fa.testing import build_tiny_llava_fa

    model = load_compressed(folder)
    with pytest.raises(TypeError, match="parts"):
        get_fourier_peft_model(model, parts="language_model")
    with pytest.raises(ValueError, match="selects none"):
        get_fourier_peft_model(model, parts=("no_such_part",))
    with pytest.raises(ValueError, match="rank"):
        get_fourier_peft_model(model, r=8)
    with pytest.raises(ValueError, match="target_modules"):
        get_fourier_peft_model(model, target_modules="all-linear")
    with pytest.raises(ValueError, match="use_dora"):
        get_fourier_peft_model(model, use_dora=True)
    with pytest.raises(ValueError, match="no FourierLinear"):
        get_fourier_peft_model(build_tiny_llava_fa(0)[0])
    with pytest.raises(ValueError, match="adapter_config.json"):
        load_fourier_adapter(load_compressed(folder), tmp_path)
    with_projector = get_fourier_peft_model(load_compressed(folder), modules_to_save=["multi_modal_projector"])
    with pytest.raises(ValueError, match="modules_to_save"):
        export_real_lora(with_projector, tmp_path / "real")
    peft_model = get_fourier_peft_model(load_compressed(folder))
    with pytest.raises(TypeError, match="PeftModel"):
        get_fourier_peft_model(peft_model)
    with pytest.raises(ValueError, match="mixed-adapter"):
        layer = next(iter(_fourier_layers(peft_model).values()))
        layer(torch.zeros(1, layer.in_features), adapter_names=["default"])


def test_scaling_is_folded_into_the_copied_factors(folder, inputs):
    reference = _logits(load_compressed(folder), inputs)
    peft_model = get_fourier_peft_model(load_compressed(folder), lora_alpha=4)  # scaling 2 (rank 2), 4 (rank 1)
    layers = _fourier_layers(peft_model)
    assert {layer.scaling["default"] for layer in layers.values()} == {2.0, 4.0}
    layer = layers["base_model.model.model.language_model.layers.0.mlp.up_proj"]
    base_l1, _ = base_factors(layer.get_base_layer())
    assert torch.equal(layer.fourier_l1["default"] * 2.0, base_l1)  # power-of-two scaling: exact copy
    torch.testing.assert_close(_logits(peft_model, inputs), reference, rtol=1e-5, atol=1e-5)
    _perturb(peft_model)
    expected = _logits(peft_model, inputs)
    merged = peft_model.merge_and_unload()
    torch.testing.assert_close(_logits(merged, inputs), expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(base_factors(merged.model.language_model.layers[0].mlp.up_proj)[0],
                       2.0 * layer.fourier_l1["default"].detach())


def test_dtype_cast_keeps_adapter_factors_float32(folder, inputs):
    peft_model = get_fourier_peft_model(load_compressed(folder))
    _perturb(peft_model)
    expected = _logits(peft_model, inputs)
    factors = {n: p.detach().clone() for n, p in peft_model.named_parameters() if ".fourier_l" in n}
    peft_model.to(torch.bfloat16)
    after = dict(peft_model.named_parameters())
    assert all(after[n].dtype == torch.float32 and torch.equal(after[n], v) for n, v in factors.items())
    assert peft_model.get_base_model().lm_head.weight.dtype == torch.bfloat16
    cast = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v) for k, v in inputs.items()}
    logits = _logits(peft_model, cast).float()
    assert torch.isfinite(logits).all()
    assert (logits - expected).abs().max() < 0.1 * expected.abs().max()


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[
    pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")])])
def test_bf16_autocast_training_step(folder, inputs, device):
    peft_model = get_fourier_peft_model(load_compressed(folder)).to(device).train()
    batch = {k: v.to(device) for k, v in inputs.items()}
    with torch.autocast(device, dtype=torch.bfloat16):
        loss = peft_model(**batch, labels=batch["input_ids"]).loss
    assert torch.isfinite(loss)
    loss.backward()
    grads = {n: p.grad for n, p in peft_model.named_parameters() if p.requires_grad}
    assert grads and all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads.values())
    assert any(".fourier_l" in n and g.abs().sum() > 0 for n, g in grads.items())  # the adapters really get gradients
    with torch.no_grad():
        reference = load_compressed(folder).to(device)(**batch).logits
        assert torch.equal(peft_model.eval()(**batch).logits, reference)


@pytest.mark.parametrize("transform", ["rfft", "rfft2"])
def test_single_layer_matches_dense_weight(transform):
    from peft import LoraConfig

    from llava_fa.fourier import fourier_approximate
    from llava_fa.quantization import FourierLinear

    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(24, 18, generator=gen)
    approx = fourier_approximate(weight, rank=2, amplitude_bits=3, phase_bits=5, transform=transform, max_iters=1)
    base = FourierLinear.from_approximation(approx, bias=torch.randn(24, generator=gen))
    layer = FourierLoraLayer(base, "default", LoraConfig(r=2, lora_alpha=2), r=2, lora_alpha=2)
    x = torch.randn(2, 3, 18, generator=gen)
    expected = torch.nn.functional.linear(x, base.dense_weight(), base.bias)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected, rtol=1e-4, atol=1e-5)
        layer.fourier_l2["default"].mul_(1.5)
        moved = layer(x)
    l1, l2 = base_factors(base)
    a, b = real_lowrank(base, l1, 1.5 * l2)
    a0, b0 = real_lowrank(base, l1, l2)
    torch.testing.assert_close(moved, expected + x @ (a @ b - a0 @ b0).T, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(layer.get_delta_weight("default"), a @ b - a0 @ b0, rtol=1e-4, atol=1e-6)

"""Error feedback as a user-facing option: settings, `fourier_approximate`, calibration file, config, quantize-on-load."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
from conftest import correlated_layer, tiny_qwen2_lm, token_batches
from safetensors import safe_open

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from llava_fa.fourier import Calibration, CompressionSettings, fourier_approximate  # noqa: E402
from llava_fa.fourier.calibration import CalibrationFile, calibrate  # noqa: E402
from llava_fa.fourier.error_feedback import input_second_moment, output_error  # noqa: E402
from llava_fa.quantization import (  # noqa: E402
    FourierApproxConfig,
    fourier_integration,  # noqa: E402
    is_fourier_linear,
)

# ----- settings ---------------------------------------------------------------------------------


def test_settings_fields_defaults_and_validation():
    s = CompressionSettings()
    assert s.error_feedback is False and s.feedback_damp == 0.1
    assert s.replace(error_feedback=True, feedback_damp=0).feedback_damp == 0
    with pytest.raises(TypeError, match="error_feedback must be True or False"):
        CompressionSettings(error_feedback=1)
    with pytest.raises(TypeError, match="feedback_damp must be a number"):
        CompressionSettings(feedback_damp="0.1")
    with pytest.raises(TypeError, match="feedback_damp must be a number"):
        CompressionSettings(feedback_damp=True)
    for bad in (-0.1, math.nan, math.inf):
        with pytest.raises(ValueError, match="feedback_damp must be a finite number >= 0"):
            CompressionSettings(feedback_damp=bad)
    with pytest.raises(ValueError, match="error_feedback=True works in the 1-D rfft basis only.*transform='rfft'"):
        CompressionSettings(error_feedback=True, transform="rfft2")
    with pytest.raises(ValueError, match="rfft basis only"):
        s.replace(error_feedback=True, transform="rfft2")


# ----- the core: one Algorithm-1 loop -----------------------------------------------------------


@pytest.mark.parametrize("codebook", ["lloyd", "vq"])
def test_rank0_feedback_lowers_output_error_in_the_same_format(codebook):
    w, x = correlated_layer()
    sigma = input_second_moment(x)
    settings = CompressionSettings(rank=0, codebook=codebook)
    plain = fourier_approximate(w, settings)
    fed = fourier_approximate(w, settings.replace(error_feedback=True), calibration=Calibration(second_moment=sigma))
    # same storage: only the codes differ
    assert fed.codes.dtype == plain.codes.dtype == torch.uint8 and fed.codes.shape == plain.codes.shape
    assert not torch.equal(fed.codes, plain.codes)
    assert torch.equal(fed.scales, plain.scales) and fed.scales.dtype == torch.float16
    assert torch.equal(fed.quant.lookup_table(), plain.quant.lookup_table())
    assert fed.nbits == plain.nbits and fed.input_scale is None and fed.weighted
    err_plain = output_error(w, plain.reconstruct(), sigma)
    err_fed = output_error(w, fed.reconstruct(), sigma)
    assert fed.error == pytest.approx(err_fed, rel=1e-5) and fed.history == [fed.error]
    assert err_fed < 0.8 * err_plain, (err_fed, err_plain)
    # held-out inputs from the same distribution agree
    _, x_test = correlated_layer(seed=0, tokens=2048)
    held_out = input_second_moment(x_test[512:])
    assert output_error(w, fed.reconstruct(), held_out) < 0.85 * output_error(w, plain.reconstruct(), held_out)
    again = fourier_approximate(w, settings.replace(error_feedback=True), calibration=Calibration(second_moment=sigma))
    assert torch.equal(again.codes, fed.codes)  # deterministic


def test_low_rank_feedback_keeps_the_best_round_and_factor_layout():
    w, x = correlated_layer()
    sigma = input_second_moment(x)
    settings = CompressionSettings(rank=4, max_iters=3, error_feedback=True)
    fed = fourier_approximate(w, settings, calibration=Calibration(second_moment=sigma))
    plain = fourier_approximate(w, settings.replace(error_feedback=False))
    assert 1 <= len(fed.history) <= 3 and fed.error == min(fed.history)
    assert fed.l1.shape == plain.l1.shape == (48, 4) and fed.l2.shape == plain.l2.shape == (4, 32)
    assert fed.nbits == plain.nbits
    assert fed.error == pytest.approx(output_error(w, fed.reconstruct(), sigma), rel=1e-5)
    assert fed.error < 0.8 * output_error(w, plain.reconstruct(), sigma)
    rank0 = fourier_approximate(w, settings.replace(rank=0), calibration=Calibration(second_moment=sigma))
    assert fed.error < rank0.error


def test_feedback_composes_with_the_channel_scale_and_the_other_weights():
    w, x = correlated_layer()
    sigma, power = input_second_moment(x), x.square().mean(0)
    settings = CompressionSettings(rank=0)
    scaled = fourier_approximate(w, settings, calibration=Calibration(channel=power))
    fed = fourier_approximate(w, settings.replace(error_feedback=True),
                              calibration=Calibration(channel=power, second_moment=sigma))
    assert fed.input_scale is not None and torch.equal(fed.input_scale, scaled.input_scale)
    assert torch.equal(fed.scales, scaled.scales) and fed.nbits == scaled.nbits
    # the codes approximate W diag(d); the rebuilt weight divides d back out
    err = output_error(w, fed.reconstruct(), sigma)
    assert fed.error == pytest.approx(err, rel=1e-5) and err < 0.8 * output_error(w, scaled.reconstruct(), sigma)
    # fisher-like row weights only steer the SVD: accepted with low rank
    rows = torch.linspace(0.5, 2.0, 48)
    low = fourier_approximate(w, settings.replace(rank=2, error_feedback=True, max_iters=2),
                              calibration=Calibration(row=rows, second_moment=sigma))
    assert low.error == pytest.approx(output_error(w, low.reconstruct(), sigma), rel=1e-5)


def test_odd_inputs_and_one_scale_per_matrix():
    w, x = correlated_layer(n=63)
    sigma = input_second_moment(x)
    for group_size in (64, None):
        settings = CompressionSettings(rank=0, group_size=group_size)
        plain = fourier_approximate(w, settings)
        fed = fourier_approximate(w, settings.replace(error_feedback=True), calibration=Calibration(second_moment=sigma))
        assert fed.codes.shape == plain.codes.shape and torch.equal(fed.scales, plain.scales)
        assert fed.reconstruct().shape == (48, 63)
        assert output_error(w, fed.reconstruct(), sigma) < output_error(w, plain.reconstruct(), sigma)


def test_feedback_bad_input_raises_clear_errors():
    w, x = correlated_layer()
    sigma = input_second_moment(x)
    on = CompressionSettings(rank=0, error_feedback=True)
    with pytest.raises(ValueError, match="needs the layer's input second moment.*second_moment="):
        fourier_approximate(w, on)
    with pytest.raises(ValueError, match="needs the layer's input second moment"):
        fourier_approximate(w, on, calibration=Calibration(channel=x.square().mean(0)))
    with pytest.raises(ValueError, match="needs the layer's input second moment"):
        fourier_approximate(w, on, calibration=torch.ones(48, 32))  # the paper's matrix C has no second moment
    with pytest.raises(ValueError, match="rfft basis only"):
        fourier_approximate(w, rank=0, error_feedback=True, transform="rfft2", calibration=Calibration(second_moment=sigma))
    bad = {
        "must be an \\(64, 64\\)": torch.eye(32),
        "finite": torch.full((64, 64), math.nan),
        "negative diagonal": -torch.eye(64),
        "not symmetric": sigma + torch.triu(torch.ones(64, 64), 1) * float(sigma.diagonal().max()),
        "all zeros": torch.zeros(64, 64),
    }
    for match, value in bad.items():
        with pytest.raises(ValueError, match=f"calibration.second_moment .*{match}"):
            fourier_approximate(w, on, calibration=Calibration(second_moment=value))
    with pytest.raises(ValueError, match="second_moment must be an"):
        fourier_approximate(w, on, calibration=Calibration(second_moment=[[1.0]]))
    # the plain path validates a second moment too, and ignores a good one
    plain = fourier_approximate(w, rank=0)
    ignored = fourier_approximate(w, rank=0, calibration=Calibration(second_moment=sigma))
    assert torch.equal(plain.codes, ignored.codes) and not ignored.weighted
    with pytest.raises(ValueError, match="second_moment"):
        fourier_approximate(w, rank=0, calibration=Calibration(second_moment=torch.eye(3)))


# ----- calibration file -------------------------------------------------------------------------


def test_calibrate_second_moment_shapes_values_and_sharing(tmp_path):
    model = tiny_qwen2_lm(loud_channels=True)
    batches = token_batches(0)
    captured: dict[str, list[torch.Tensor]] = {"q": [], "down": []}
    layer = model.model.layers[0]
    hooks = [layer.self_attn.q_proj.register_forward_hook(lambda m, a, o: captured["q"].append(a[0])),
             layer.mlp.down_proj.register_forward_hook(lambda m, a, o: captured["down"].append(a[0]))]
    path = tmp_path / "cal.safetensors"
    stats = calibrate(model, batches, path, second_moment=True)
    for h in hooks:
        h.remove()
    p = "model.layers.0."
    key = lambda name: f"{p}{name}.second_moment"  # noqa: E731
    x_q = torch.cat([c.reshape(-1, 32) for c in captured["q"]])
    x_down = torch.cat([c.reshape(-1, 64) for c in captured["down"]])
    torch.testing.assert_close(stats[key("self_attn.q_proj")], x_q.T @ x_q / x_q.shape[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(stats[key("mlp.down_proj")], x_down.T @ x_down / x_down.shape[0], rtol=1e-5, atol=1e-6)
    assert stats[key("mlp.down_proj")].shape == (64, 64) and stats["lm_head.second_moment"].shape == (32, 32)
    assert all(v.dtype == torch.float32 for v in stats.values())
    # q/k/v read one tensor, gate/up another: one matrix each, stored once, resolved on reading
    assert stats[key("self_attn.k_proj")] is stats[key("self_attn.q_proj")] is stats[key("self_attn.v_proj")]
    assert stats[key("mlp.up_proj")] is stats[key("mlp.gate_proj")]
    assert stats[key("self_attn.o_proj")] is not stats[key("self_attn.q_proj")]
    with safe_open(path, "pt") as f:
        stored = set(f.keys())
        aliases = json.loads(f.metadata()["aliases"])
    moments = sorted(k for k in stored if k.endswith(".second_moment"))
    assert moments == sorted([key(n) for n in ("self_attn.q_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.down_proj")]
                             + ["lm_head.second_moment"])
    assert aliases == {key("self_attn.k_proj"): key("self_attn.q_proj"), key("self_attn.v_proj"): key("self_attn.q_proj"),
                       key("mlp.up_proj"): key("mlp.gate_proj")}
    file = CalibrationFile(path)
    calib = file.for_module(p + "self_attn.v_proj", (16, 32), "rfft", second_moment=True)
    assert torch.equal(calib.second_moment, stats[key("self_attn.q_proj")]) and calib.channel.shape == (32,)
    assert file.for_module(p + "self_attn.v_proj", (16, 32), "rfft").second_moment is None
    with pytest.raises(ValueError, match="another model"):
        file.for_module(p + "mlp.down_proj", (32, 128), "rfft", second_moment=True)
    # without second_moment=True nothing (n, n) is collected; wide inputs can be left out
    assert not any(k.endswith(".second_moment") for k in calibrate(model, batches))
    narrow = calibrate(model, batches, tmp_path / "narrow.safetensors", second_moment=True, second_moment_max_features=32)
    assert key("mlp.down_proj") not in narrow and key("self_attn.o_proj") in narrow
    assert not CalibrationFile(tmp_path / "narrow.safetensors").has_second_moment(p + "mlp.down_proj")
    with pytest.raises(ValueError, match="second_moment_max_features"):
        calibrate(model, batches, second_moment=True, second_moment_max_features=0)
    with pytest.raises(TypeError, match="second_moment must be True or False"):
        calibrate(model, batches, second_moment="yes")


# ----- config and quantize-on-load --------------------------------------------------------------


def test_config_fields_validation_and_round_trip(tmp_path):
    stats = tmp_path / "cal.safetensors"
    with pytest.raises(ValueError, match="error_feedback=True needs .* second_moment=True.*calibration=path"):
        FourierApproxConfig(error_feedback=True)
    with pytest.raises(ValueError, match="overrides\\['k_proj'\\]: .*rfft basis only"):
        FourierApproxConfig(transform="rfft2", calibration=str(stats), overrides={"k_proj": {"error_feedback": True}})
    with pytest.raises(ValueError, match="error_feedback=True needs"):
        FourierApproxConfig(overrides={"k_proj": {"error_feedback": True}})
    with pytest.raises(ValueError, match="FourierApproxConfig: error_feedback=True works in the 1-D rfft"):
        FourierApproxConfig(error_feedback=True, transform="rfft2", calibration=str(stats))
    with pytest.raises(TypeError, match="FourierApproxConfig: error_feedback must be True or False"):
        FourierApproxConfig(error_feedback="yes", calibration=str(stats))
    with pytest.raises(ValueError, match="overrides\\['up_proj'\\]: feedback_damp"):
        FourierApproxConfig(overrides={"up_proj": {"feedback_damp": -1.0}})
    cfg = FourierApproxConfig(error_feedback=True, feedback_damp=0.05, calibration=str(stats),
                              overrides={"down_proj": {"error_feedback": False}})
    assert cfg.settings_for("model.layers.0.self_attn.q_proj").error_feedback is True
    assert cfg.settings_for("model.layers.0.self_attn.q_proj").feedback_damp == 0.05
    assert cfg.settings_for("model.layers.0.mlp.down_proj").error_feedback is False
    saved = json.loads(cfg.to_json_string())
    assert saved["error_feedback"] is True and saved["feedback_damp"] == 0.05 and saved["calibration"] is None
    saved["calibration_sha256"] = "0" * 64  # what a saved model records: it reloads without the file
    again = FourierApproxConfig.from_dict(saved)
    assert again.error_feedback is True and again.overrides == {"down_proj": {"error_feedback": False}}


def _logits_error(dense, quant, batches):
    with torch.no_grad():
        errs = [float((quant(**b).logits - dense(**b).logits).norm() / dense(**b).logits.norm()) for b in batches]
    return sum(errs) / len(errs)


def test_quantize_on_load_with_feedback_lowers_output_error_and_reloads_identically(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    model = tiny_qwen2_lm(loud_channels=True)
    model.save_pretrained(tmp_path / "src")
    stats = tmp_path / "cal.safetensors"
    calibrate(model, token_batches(0, 6), stats, second_moment=True)
    held_out = token_batches(1)
    common = dict(rank=0, amplitude_bits=2, phase_bits=3, calibration=str(stats))
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "src", quantization_config=FourierApproxConfig(**common))
    fed = AutoModelForCausalLM.from_pretrained(
        tmp_path / "src", quantization_config=FourierApproxConfig(**common, error_feedback=True))
    q_plain, q_fed = plain.model.layers[0].self_attn.q_proj, fed.model.layers[0].self_attn.q_proj
    assert is_fourier_linear(q_fed) and q_fed.settings.error_feedback
    assert torch.equal(q_fed.scales, q_plain.scales) and not torch.equal(q_fed.codes, q_plain.codes)
    err_plain, err_fed = _logits_error(model, plain, held_out), _logits_error(model, fed, held_out)
    assert err_fed < 0.9 * err_plain, (err_fed, err_plain)
    fed.save_pretrained(tmp_path / "q")
    saved = json.loads((tmp_path / "q" / "config.json").read_text())["quantization_config"]
    assert saved["error_feedback"] is True and saved["calibration"] is None and len(saved["calibration_sha256"]) == 64
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "q")
    for name, module in fed.named_modules():
        if is_fourier_linear(module):
            twin = again.get_submodule(name)
            assert all(torch.equal(getattr(module, t), getattr(twin, t)) for t in module.stored_names), name
    with torch.no_grad():
        assert torch.equal(again(**held_out[0]).logits, fed(**held_out[0]).logits)


def test_quantizer_warns_and_rounds_plainly_without_a_second_moment(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    model = tiny_qwen2_lm(loud_channels=True)
    model.save_pretrained(tmp_path / "src")
    narrow = tmp_path / "narrow.safetensors"
    calibrate(model, token_batches(0), narrow, second_moment=True, second_moment_max_features=32)  # no down_proj
    messages: list[str] = []
    monkeypatch.setattr(fourier_integration.logger, "warning", lambda msg, *a, **k: messages.append(str(msg)))
    common = dict(rank=0, amplitude_bits=2, phase_bits=3, calibration=str(narrow))
    fed = AutoModelForCausalLM.from_pretrained(
        tmp_path / "src", quantization_config=FourierApproxConfig(**common, error_feedback=True))
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "src", quantization_config=FourierApproxConfig(**common))
    assert any("no second moment for 1 of the 7" in m and "mlp.down_proj" in m for m in messages), messages
    down_fed, down_plain = fed.model.layers[0].mlp.down_proj, plain.model.layers[0].mlp.down_proj
    assert torch.equal(down_fed.codes, down_plain.codes)  # fell back to plain rounding
    assert not torch.equal(fed.model.layers[0].mlp.up_proj.codes, plain.model.layers[0].mlp.up_proj.codes)
    # a config that lost its file (from_dict of a saved model) cannot compress with error feedback
    saved = FourierApproxConfig.from_dict(dict(FourierApproxConfig(**common, error_feedback=True).to_dict()))
    with pytest.raises(ValueError, match="calibration=None"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "src", quantization_config=saved)


def test_tiny_llava_fa_with_feedback_every_part_and_reload(tmp_path, monkeypatch):
    """Calibrating the dense LLaVA-FA and compressing it on load find the same module names (vision, projector, LM)."""
    from llava_fa.modeling import LlavaFAForConditionalGeneration
    from llava_fa.testing import save_tiny_llava_fa

    src = save_tiny_llava_fa(tmp_path / "src", seed=0)
    dense = LlavaFAForConditionalGeneration.from_pretrained(src).eval()
    cfg = dense.config

    def inputs(seed: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(4, 50, (2, 12), generator=g)
        ids[:, 2:2 + cfg.image_seq_length] = cfg.image_token_index
        size = cfg.vision_config.image_size
        return dict(input_ids=ids, pixel_values=torch.randn(2, 3, size, size, generator=g))

    stats = tmp_path / "cal.safetensors"
    calibrate(dense, [inputs(s) for s in range(8)], stats, second_moment=True)
    messages: list[str] = []
    monkeypatch.setattr(fourier_integration.logger, "warning", lambda msg, *a, **k: messages.append(str(msg)))
    common = dict(rank=0, calibration=str(stats))  # default 3+5 bits
    plain = LlavaFAForConditionalGeneration.from_pretrained(src, quantization_config=FourierApproxConfig(**common))
    fed = LlavaFAForConditionalGeneration.from_pretrained(
        src, quantization_config=FourierApproxConfig(**common, error_feedback=True))
    assert not any("second moment" in m for m in messages), messages
    parts = {"vision_tower": 0, "multi_modal_projector": 0, "language_model": 0}
    for name, module in fed.named_modules():
        if is_fourier_linear(module):
            assert not torch.equal(module.codes, plain.get_submodule(name).codes), name
            parts.update({p: parts[p] + 1 for p in parts if p in name})
    assert all(parts.values()), parts
    held_out = [inputs(seed) for seed in range(10, 14)]  # per batch the ratio varies (0.6..1.1); over 4: 0.76..0.83
    err_plain, err_fed = _logits_error(dense, plain, held_out), _logits_error(dense, fed, held_out)
    assert err_fed < 0.9 * err_plain, (err_fed, err_plain)
    fed.save_pretrained(tmp_path / "q")
    again = LlavaFAForConditionalGeneration.from_pretrained(tmp_path / "q")
    with torch.no_grad():
        assert torch.equal(again(**held_out[0]).logits, fed(**held_out[0]).logits)

"""Error-feedback (GPTQ-style) rounding in the rfft basis, and the GPTQ baseline of the benchmark."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from conftest import correlated_layer

from llava_fa.fourier import from_spectrum, polar_quantize, to_spectrum
from llava_fa.fourier.error_feedback import (
    approximate_with_feedback,
    error_feedback_quantize,
    error_feedback_round,
    input_second_moment,
    output_error,
    pair_hessian,
    spectral_basis,
    spectral_hessian,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import baselines  # noqa: E402


@pytest.mark.parametrize("n", [16, 15])
def test_spectral_basis_rebuilds_rows(n):
    w = torch.randn(5, n)
    spec = to_spectrum(w, "rfft")
    p = torch.view_as_real(spec).reshape(5, -1)
    torch.testing.assert_close(p @ spectral_basis(n), from_spectrum(spec, n, "rfft"), atol=1e-5, rtol=0)


@pytest.mark.parametrize("n", [16, 15])
def test_spectral_hessian_by_fft_equals_basis_form(n):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(40, n, generator=g)
    sigma = input_second_moment(x)
    basis = spectral_basis(n)
    torch.testing.assert_close(spectral_hessian(sigma), basis @ sigma @ basis.T, atol=1e-4, rtol=1e-4)


def test_spectral_hessian_gives_output_energy():
    w, x = correlated_layer()
    sigma = input_second_moment(x)
    d = torch.linspace(0.5, 2.0, w.shape[1])
    p = torch.view_as_real(to_spectrum(w * d, "rfft")).reshape(w.shape[0], -1)
    energy_spectral = float(((p @ spectral_hessian(sigma, d)) * p).sum())
    energy_spatial = float(((w @ sigma) * w).sum())
    assert energy_spectral == pytest.approx(energy_spatial, rel=1e-4)


def test_identity_hessian_is_nearest_point_rounding():
    g = torch.Generator().manual_seed(1)
    z = torch.complex(torch.randn(8, 32, generator=g), torch.randn(8, 32, generator=g))
    table = torch.complex(torch.randn(16, generator=g), torch.randn(16, generator=g))
    scales = torch.full((4,), 1.5)
    idx = error_feedback_round(z, torch.eye(64), scales, table, 64, damp=0.0, act_order=False)
    expected = (z.reshape(-1, 1) - 1.5 * table.reshape(1, -1)).abs().argmin(dim=1).view(8, 32)
    assert torch.equal(idx, expected)


@pytest.mark.parametrize("codebook", ["lloyd", "vq"])
def test_error_feedback_lowers_output_error_with_same_storage(codebook):
    w, x = correlated_layer()
    sigma = input_second_moment(x)
    spec = to_spectrum(w, "rfft")
    plain = polar_quantize(spec, 3, 5, 64, codebook=codebook, phase_aware=True)
    fed = error_feedback_quantize(spec, spectral_hessian(sigma), 3, 5, 64, codebook=codebook)
    assert fed.codes.dtype == torch.uint8 and fed.codes.shape == plain.codes.shape
    assert fed.nbits() == plain.nbits()
    torch.testing.assert_close(fed.scales, plain.scales)
    err_plain = output_error(w, from_spectrum(plain.dequantize(), 64, "rfft"), sigma)
    err_fed = output_error(w, from_spectrum(fed.dequantize(), 64, "rfft"), sigma)
    assert err_fed < 0.8 * err_plain


def test_pairs_control_uses_sigma_directly():
    w, x = correlated_layer()
    sigma = input_second_moment(x)
    z = torch.complex(w[:, 0::2].contiguous(), w[:, 1::2].contiguous())
    plain = polar_quantize(z, 3, 5, 64, codebook="lloyd", phase_aware=True)
    fed = error_feedback_quantize(z, pair_hessian(sigma), 3, 5, 64)

    def spatial(codes):
        zh = codes.dequantize()
        return torch.stack([zh.real, zh.imag], dim=-1).reshape(w.shape)

    assert output_error(w, spatial(fed), sigma) < output_error(w, spatial(plain), sigma)


def test_approximate_with_feedback_low_rank_and_bits():
    w, x = correlated_layer()
    sigma = input_second_moment(x)
    r0 = approximate_with_feedback(w, sigma, rank=0)
    r4 = approximate_with_feedback(w, sigma, rank=4, max_iters=3)
    assert len(r0.history) == 1 and 1 <= len(r4.history) <= 3
    assert r4.error == min(r4.history) and r4.error < r0.error
    assert r4.reconstruct().shape == w.shape
    # factors: (m + c) * r complex numbers, two float16 parts each
    assert r4.nbits - r0.nbits == 2 * 16 * 4 * (48 + 32)
    assert r0.error == pytest.approx(output_error(w, r0.reconstruct(), sigma), rel=1e-4)
    scaled = approximate_with_feedback(w, sigma, channel=x.square().mean(0))
    assert scaled.nbits == r0.nbits + 64 * 16 and scaled.reconstruct().shape == w.shape
    assert scaled.error == pytest.approx(output_error(w, scaled.reconstruct(), sigma), rel=1e-4)


def test_gptq_baseline_beats_rtn_on_output_error():
    w, x = correlated_layer(n=128)
    sigma = input_second_moment(x)
    w_rtn, bits_rtn = baselines.rtn(w, 4, 128)
    for act_order in (False, True):
        w_gptq, bits_gptq = baselines.gptq(w, sigma, 4, 128, act_order=act_order)
        assert bits_gptq == bits_rtn == w.numel() * 4 + (w.numel() // 128) * 32
        assert output_error(w, w_gptq, sigma) < 0.8 * output_error(w, w_rtn, sigma)


def test_bad_inputs_raise_clear_errors():
    w, x = correlated_layer()
    sigma = input_second_moment(x)
    spec = to_spectrum(w, "rfft")
    h = spectral_hessian(sigma)
    table = torch.ones(4, dtype=torch.complex64)
    scales = torch.ones(24)
    with pytest.raises(TypeError, match="inputs"):
        input_second_moment([[1.0, 2.0]])
    with pytest.raises(ValueError, match="no rows"):
        input_second_moment(torch.zeros(0, 4))
    with pytest.raises(ValueError, match="sigma must be a square"):
        spectral_hessian(torch.ones(3, 4))
    with pytest.raises(ValueError, match="input_scale"):
        spectral_hessian(sigma, torch.zeros(64))
    with pytest.raises(ValueError, match="even number"):
        pair_hessian(torch.eye(5))
    with pytest.raises(ValueError, match="input_scale"):
        pair_hessian(torch.eye(4), torch.ones(3))
    with pytest.raises(ValueError, match="complex"):
        error_feedback_round(w, h, scales, table, 64)
    with pytest.raises(ValueError, match="hessian must have shape"):
        error_feedback_round(spec, torch.eye(10), scales, table, 64)
    with pytest.raises(ValueError, match="damp"):
        error_feedback_round(spec, h, scales, table, 64, damp=-1.0)
    with pytest.raises(ValueError, match="block_size"):
        error_feedback_round(spec, h, scales, table, 64, block_size=3)
    with pytest.raises(ValueError, match="scales must have shape"):
        error_feedback_round(spec, h, torch.ones(5), table, 64)
    with pytest.raises(ValueError, match="positive"):
        error_feedback_round(spec, h, torch.zeros(24), table, 64)
    with pytest.raises(ValueError, match="table"):
        error_feedback_round(spec, h, scales, torch.ones(4), 64)
    indefinite = torch.tensor([[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(ValueError, match="positive definite"):
        error_feedback_round(torch.ones(1, 1, dtype=torch.complex64), indefinite, torch.ones(1), table, None, damp=0.0)
    with pytest.raises(ValueError, match="rank"):
        approximate_with_feedback(w, sigma, rank=-1)
    with pytest.raises(ValueError, match="second_moment must be an \\(64, 64\\)"):
        approximate_with_feedback(w, torch.eye(8))
    with pytest.raises(TypeError, match="weight"):
        approximate_with_feedback(spec, sigma)


# --- opt-in codebook fits: refit_rounds (least-squares scales + codebook) and table_fit="gaussian" ---------------


def _weighted_error(z: torch.Tensor, codes, weights: torch.Tensor) -> float:
    return float(((z - codes.dequantize()).abs().square() * weights).sum() / (z.abs().square() * weights).sum())


@pytest.mark.parametrize("codebook", ["uniform", "lloyd", "vq"])
def test_refit_rounds_lower_weight_error_at_same_storage(codebook):
    from llava_fa.fourier.polar_quant import refit_codes

    g = torch.Generator().manual_seed(3)
    z = torch.complex(torch.randn(24, 40, generator=g), torch.randn(24, 40, generator=g)) * 0.05
    weights = torch.full((40,), 2.0)
    weights[0] = 1.0
    plain = polar_quantize(z, 2, 3, 32, codebook=codebook, phase_aware=True)
    one = polar_quantize(z, 2, 3, 32, codebook=codebook, phase_aware=True, refit_rounds=1, column_weights=weights)
    three = polar_quantize(z, 2, 3, 32, codebook=codebook, phase_aware=True, refit_rounds=3, column_weights=weights)
    for refit in (one, three):
        assert refit.codes.shape == plain.codes.shape and refit.nbits() == plain.nbits()
        assert refit.scales.dtype == plain.scales.dtype and (refit.scales > 0).all()
        assert (refit.levels is None) == (plain.levels is None) and (refit.table is None) == (plain.table is None)
    e0, e1, e3 = (_weighted_error(z, c, weights) for c in (plain, one, three))
    assert e1 < e0 and e3 <= e1 * 1.001
    assert torch.equal(refit_codes(z, plain, 3, weights).codes, three.codes)
    if codebook == "uniform":  # implied levels: only the scales move
        assert three.levels is None and not torch.equal(three.scales, plain.scales)
    with pytest.raises(ValueError, match="column_weights"):
        polar_quantize(z, 2, 3, 32, codebook=codebook, refit_rounds=1, column_weights=torch.ones(7))
    with pytest.raises(ValueError, match="codes quantise"):
        refit_codes(z[:, :20], plain, 1)


def test_gaussian_table_is_fixed_cached_and_close_to_kmeans():
    from llava_fa.fourier.polar_quant import gaussian_table

    table = gaussian_table(2, 3, 32)
    assert table.shape == (32, 2) and table.dtype == torch.float16
    assert torch.equal(table, gaussian_table(2, 3, 32))
    assert float(table.float().norm(dim=1).max()) <= 1.0
    g = torch.Generator().manual_seed(4)
    errs = {}
    for seed in (0, 1):
        z = torch.complex(torch.randn(64, 64, generator=g), torch.randn(64, 64, generator=g))
        fixed = polar_quantize(z, 2, 3, 32, codebook="vq", table_fit="gaussian")
        assert torch.equal(fixed.table, table)  # no per-matrix fit
        kmeans = polar_quantize(z, 2, 3, 32, codebook="vq")
        lloyd = polar_quantize(z, 2, 3, 32, codebook="lloyd", phase_aware=True)
        errs[seed] = [float((z - c.dequantize()).norm() / z.norm()) for c in (fixed, kmeans, lloyd)]
        assert fixed.nbits() == kmeans.nbits()
        assert errs[seed][0] < 1.05 * errs[seed][1] and errs[seed][0] < errs[seed][2]
    # warm starts (Algorithm 1) do not move the fixed table
    warm = polar_quantize(z, 2, 3, 32, codebook="vq", table_fit="gaussian", init_table=torch.zeros(32, 2))
    assert torch.equal(warm.table, table)
    with pytest.raises(ValueError, match="table_fit"):
        polar_quantize(z, 2, 3, 32, codebook="lloyd", table_fit="gaussian")


def test_refit_and_gaussian_table_through_the_public_path():
    from llava_fa.fourier import CompressionSettings, fourier_approximate
    from llava_fa.fourier.polar_quant import gaussian_table
    from llava_fa.quantization.fourier_linear import FourierLinear

    w, x = correlated_layer()
    sigma = input_second_moment(x)
    base = CompressionSettings(rank=0, amplitude_bits=2, phase_bits=3, group_size=32, codebook="vq",
                               table_fit="gaussian")
    plain = fourier_approximate(w, base)
    refit = fourier_approximate(w, base.replace(refit_rounds=2))
    assert torch.equal(plain.quant.table, gaussian_table(2, 3, 32))
    assert refit.nbits == plain.nbits and refit.error < plain.error
    module = FourierLinear.from_approximation(refit)
    torch.testing.assert_close(module.dense_weight(torch.float32), refit.reconstruct().float(), atol=1e-6, rtol=0)
    low = fourier_approximate(w, base.replace(rank=4, refit_rounds=1, max_iters=2))
    assert low.error < refit.error
    from llava_fa.fourier import Calibration

    fed = fourier_approximate(w, base.replace(error_feedback=True, refit_rounds=1),
                              calibration=Calibration(second_moment=sigma))
    assert fed.nbits == plain.nbits
    assert fed.error < output_error(w, refit.reconstruct(), sigma)
    # without a refit, error feedback on the fixed table skips the plain codes: same codes as rounding by hand
    spec, h = to_spectrum(w, "rfft"), spectral_hessian(sigma)
    fast = error_feedback_quantize(spec, h, 2, 3, 32, codebook="vq", table_fit="gaussian")
    plain_spec = polar_quantize(spec, 2, 3, 32, codebook="vq", table_fit="gaussian")
    by_hand = error_feedback_round(spec, h, plain_spec.scales.float(), plain_spec.lookup_table(), 32)
    torch.testing.assert_close(fast.dequantize(), plain_spec.lookup_table()[by_hand]
                               * plain_spec.scales.float().repeat_interleave(32)[: by_hand.numel()].view_as(by_hand))
    assert torch.equal(fast.table, plain_spec.table) and torch.equal(fast.scales, plain_spec.scales)
    with pytest.raises(ValueError, match="amplitude_bits"):
        error_feedback_quantize(spec, h, 0, 3, 32, codebook="vq", table_fit="gaussian")


def test_table_fit_and_refit_rounds_settings_and_config():
    from llava_fa.fourier import CompressionSettings
    from llava_fa.quantization.fourier_config import FourierApproxConfig

    assert CompressionSettings().table_fit == "kmeans" and CompressionSettings().refit_rounds == 0
    config = FourierApproxConfig(codebook="vq", table_fit="gaussian", refit_rounds=2,
                                 overrides={"up_proj": {"refit_rounds": 0}, "q_proj": {"table_fit": "kmeans"}})
    s = config.settings_for("model.layers.0.mlp.down_proj")
    assert (s.codebook, s.table_fit, s.refit_rounds) == ("vq", "gaussian", 2)
    assert config.settings_for("model.layers.0.mlp.up_proj").refit_rounds == 0
    assert config.settings_for("model.layers.0.self_attn.q_proj").table_fit == "kmeans"
    again = FourierApproxConfig.from_dict(config.to_dict())
    assert again.to_dict() == config.to_dict() and again.table_fit == "gaussian" and again.refit_rounds == 2
    with pytest.raises(ValueError, match="table_fit"):
        CompressionSettings(table_fit="kmean")
    with pytest.raises(TypeError, match="table_fit"):
        CompressionSettings(codebook="vq", table_fit=1)
    with pytest.raises(ValueError, match="codebook='vq'"):
        CompressionSettings(codebook="lloyd", table_fit="gaussian")
    with pytest.raises(ValueError, match="refit_rounds"):
        CompressionSettings(refit_rounds=-1)
    with pytest.raises(TypeError, match="refit_rounds"):
        CompressionSettings(refit_rounds=1.5)
    with pytest.raises(ValueError, match="codebook='vq'"):
        FourierApproxConfig(table_fit="gaussian")
    with pytest.raises(ValueError, match="overrides\\['up_proj'\\].*codebook='vq'"):
        FourierApproxConfig(overrides={"up_proj": {"table_fit": "gaussian"}})
    with pytest.raises(ValueError, match="refit_rounds"):
        FourierApproxConfig(overrides={"up_proj": {"refit_rounds": -2}})

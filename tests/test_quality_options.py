"""Error-feedback (GPTQ-style) rounding in the rfft basis, and the GPTQ baseline of the benchmark."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

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


def _layer(m: int = 48, n: int = 64, tokens: int = 512, seed: int = 0):
    """A weight and correlated inputs with a few loud channels (like transformer activations)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(m, n, generator=g) * 0.05
    mix = torch.randn(n, n, generator=g) / n**0.5 + torch.eye(n)
    loud = torch.ones(n)
    loud[:4] = 8.0
    x = (torch.randn(tokens, n, generator=g) @ mix) * loud
    return w, x


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
    w, x = _layer()
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
    w, x = _layer()
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
    w, x = _layer()
    sigma = input_second_moment(x)
    z = torch.complex(w[:, 0::2].contiguous(), w[:, 1::2].contiguous())
    plain = polar_quantize(z, 3, 5, 64, codebook="lloyd", phase_aware=True)
    fed = error_feedback_quantize(z, pair_hessian(sigma), 3, 5, 64)

    def spatial(codes):
        zh = codes.dequantize()
        return torch.stack([zh.real, zh.imag], dim=-1).reshape(w.shape)

    assert output_error(w, spatial(fed), sigma) < output_error(w, spatial(plain), sigma)


def test_approximate_with_feedback_low_rank_and_bits():
    w, x = _layer()
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
    w, x = _layer(n=128)
    sigma = input_second_moment(x)
    w_rtn, bits_rtn = baselines.rtn(w, 4, 128)
    for act_order in (False, True):
        w_gptq, bits_gptq = baselines.gptq(w, sigma, 4, 128, act_order=act_order)
        assert bits_gptq == bits_rtn == w.numel() * 4 + (w.numel() // 128) * 32
        assert output_error(w, w_gptq, sigma) < 0.8 * output_error(w, w_rtn, sigma)


def test_bad_inputs_raise_clear_errors():
    w, x = _layer()
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

"""llava_fa.kernels.cpu_lut: the C++ CPU LUT kernel (every variant this CPU runs) against the reference
dequantisation, its routing inside fourier_linear_forward, and its fallback when it is switched off."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest
import torch

from llava_fa.fourier import fourier_approximate
from llava_fa.fourier.polar_quant import uniform_levels
from llava_fa.kernels import cpu_lut, fourier_linear_forward
from llava_fa.kernels.spectral import dequantized_rows, spectral_codes
from llava_fa.quantization import FourierLinear

pytestmark = pytest.mark.skipif(cpu_lut.kernel() is None, reason="the CPU LUT kernel could not be built here")


def _layer(m, n, bits=(3, 5), group=32, codebook="lloyd", rank=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    approx = fourier_approximate(torch.randn(m, n, generator=g), rank=rank, amplitude_bits=bits[0],
                                 phase_bits=bits[1], group_size=group, codebook=codebook)
    return FourierLinear.from_approximation(approx, bias=torch.randn(m, generator=g))


def _levels(layer):
    """The polar amplitude levels the kernel gets (uniform layers store none)."""
    levels = getattr(layer, "levels", None)
    return levels if levels is not None else uniform_levels(layer.amplitude_bits)


def _runnable_variants(polar: bool) -> list[str]:
    out = []
    for name in cpu_lut.VARIANTS:
        if name == "avx512_polar" and not polar:
            continue
        try:
            layer = _layer(4, 32, group=16, rank=0)
            spec = spectral_codes(layer)
            xp = torch.randn(1, 32)
            tables = cpu_lut.cpu_tables(spec.table, _levels(layer) if polar else None, layer.phase_bits)
            cpu_lut.lut_matmul(xp, spec.codes, spec.scales, tables, layer.phase_bits, spec.group_len, 4, variant=name)
        except RuntimeError:
            continue
        out.append(name)
    return out


@pytest.mark.parametrize("bits,codebook", [((3, 5), "lloyd"), ((4, 4), "lloyd"), ((5, 3), "uniform"),
                                           ((3, 5), "vq")], ids=["lloyd35", "lloyd44", "uniform53", "vq"])
@pytest.mark.parametrize("rows", [1, 3, 4, 7, 16])
def test_every_variant_matches_the_reference_product(bits, codebook, rows):
    # n_cols = 48, group 32: groups straddle rows; 37 output rows: uneven split over threads
    layer = _layer(37, 96, bits=bits, codebook=codebook)
    spec = spectral_codes(layer)
    xp = torch.randn(rows, 2 * spec.n_cols, dtype=torch.float64).float()
    expected = xp.double() @ dequantized_rows(spec, 0, spec.out_features).double().T
    polar = codebook != "vq"
    variants = _runnable_variants(polar)
    assert "portable" in variants and "auto" in variants
    tables = cpu_lut.cpu_tables(spec.table, _levels(layer) if polar else None, layer.phase_bits)
    assert ("lev" in tables) == polar
    for name in variants:
        out = cpu_lut.lut_matmul(xp, spec.codes, spec.scales, tables, layer.phase_bits, spec.group_len,
                                 spec.out_features, variant=name)
        assert out.shape == (rows, 37) and out.dtype == torch.float32
        err = float((out.double() - expected).norm() / expected.norm())
        assert err < 1e-6, (name, err)
    # float32 / bfloat16 scales are read as stored (float16 above)
    for dtype in (torch.float32, torch.bfloat16):
        other = dataclasses.replace(spec, scales=spec.scales.to(dtype))
        ref = xp.double() @ dequantized_rows(other, 0, 37).double().T
        out = cpu_lut.lut_matmul(xp, other.codes, other.scales, tables, layer.phase_bits, spec.group_len, 37)
        assert float((out.double() - ref).norm() / ref.norm()) < 1e-6, dtype


@pytest.mark.parametrize("n", [96, 95], ids=["even_n", "odd_n"])
@pytest.mark.parametrize("rank", [0, 3])
@pytest.mark.parametrize("with_bias", [True, False])
def test_whole_layer_call_matches_the_dense_layer(n, rank, with_bias):
    # one kernel call after the rfft: packing of the DC / Nyquist pair (even n) or not (odd n), the low-rank
    # term and the bias, for every variant this CPU runs, against F.linear with the rebuilt dense weight
    from llava_fa.kernels.spectral import lowrank_input_matrix, lowrank_output_matrix

    layer = _layer(37, n, rank=rank)
    with torch.no_grad():
        layer.input_scale.copy_(torch.rand(n) + 0.5)
    bias = layer.bias if with_bias else None
    x = torch.randn(5, n)
    with torch.no_grad():
        expected = torch.nn.functional.linear(x.double(), layer.dense_weight().double(),
                                              None if bias is None else bias.double())
    spec = spectral_codes(layer)
    l1, l2 = getattr(layer, "lowrank_l1", None), getattr(layer, "lowrank_l2", None)
    lr_in = lowrank_input_matrix(l2, n) if rank else None
    lr_out = lowrank_output_matrix(l1) if rank else None
    tables = cpu_lut.cpu_tables(spec.table, _levels(layer), layer.phase_bits)
    for name in _runnable_variants(True):
        out = cpu_lut.fourier_linear(x, 1.0 / layer.input_scale.float(), spec.codes, spec.scales, tables,
                                     layer.phase_bits, spec.group_len, 37, lr_in, lr_out, bias, variant=name)
        assert out.shape == (5, 37) and out.dtype == torch.float32
        err = float((out.double() - expected).norm() / expected.norm())
        assert err < 1e-5, (name, err)
    with pytest.raises(ValueError, match="low-rank matrices"):
        cpu_lut.fourier_linear(x, None, spec.codes, spec.scales, tables, layer.phase_bits, spec.group_len, 37,
                               torch.zeros(2, 10), torch.zeros(37, 2))


@pytest.mark.parametrize("n", [2, 6, 64, 96, 896, 3584, 4864, 18944])
def test_kernel_rfft_matches_torch(n):
    # the kernel's own four-step FFT (n / 2 = power of two x odd factor <= 64) and numpy's, against torch.fft
    x = torch.randn(3, n, dtype=torch.float64).float()
    inverse = torch.rand(n) + 0.5
    want = torch.view_as_real(torch.fft.rfft(x.double() * inverse.double(), norm="ortho"))
    assert cpu_lut.rfft_supported(n)
    for got in (cpu_lut.rfft(x, inverse), cpu_lut.spectral_input_numpy(x, inverse)):
        assert got.shape == (3, n // 2 + 1, 2) and got.dtype == torch.float32
        assert float((got.double() - want).abs().max()) < 2e-6 * float(want.abs().max())
    assert torch.allclose(cpu_lut.rfft(x), torch.view_as_real(torch.fft.rfft(x, norm="ortho")), atol=1e-5)


def test_kernel_rfft_refuses_other_lengths():
    for n in (95, 2 * 67, 2 * 3 * 37 * 3):  # odd; odd factor 67 > 64; 333 > 64
        assert not cpu_lut.rfft_supported(n)
        with pytest.raises(ValueError, match="odd factor"):
            cpu_lut.rfft(torch.randn(1, n))
    tables = cpu_lut.cpu_tables(torch.ones(256, dtype=torch.complex64), None, 5)
    plan = cpu_lut.layer_plan(torch.zeros(8 * 48, dtype=torch.uint8), torch.ones(12), tables, 5, 32, 8, 95)
    assert not plan.own_fft  # odd n: numpy's rfft before the kernel call
    assert cpu_lut.layer_plan(torch.zeros(8 * 48, dtype=torch.uint8), torch.ones(12), tables, 5, 32, 8, 96).own_fft


def test_long_rows_walked_in_column_blocks_match_the_reference():
    # from 3 input rows on, the polar product walks 1024-coefficient column blocks: rows of 1040 coefficients,
    # groups of 48 straddle the block boundary and the rows
    g = torch.Generator().manual_seed(3)
    approx = fourier_approximate(torch.randn(5, 2080, generator=g), rank=0, amplitude_bits=3, phase_bits=5,
                                 group_size=48)
    layer = FourierLinear.from_approximation(approx)
    spec = spectral_codes(layer)
    tables = cpu_lut.cpu_tables(spec.table, _levels(layer), layer.phase_bits)
    for rows in (1, 3, 4, 7):
        xp = torch.randn(rows, 2 * spec.n_cols)
        expected = xp.double() @ dequantized_rows(spec, 0, 5).double().T
        for name in _runnable_variants(True):
            out = cpu_lut.lut_matmul(xp, spec.codes, spec.scales, tables, layer.phase_bits, 48, 5, variant=name)
            assert float((out.double() - expected).norm() / expected.norm()) < 1e-6, (name, rows)


def test_layer_forward_routes_through_the_kernel(monkeypatch):
    layer = _layer(40, 128, group=64)
    x = torch.randn(2, 3, 128)
    with torch.no_grad():
        expected = torch.nn.functional.linear(x, layer.dense_weight(), layer.bias)

    def forbidden(*args, **kwargs):
        raise AssertionError("small CPU batches must use the LUT kernel, not the chunked torch path")

    monkeypatch.setattr("llava_fa.kernels.spectral_ops.quantized_matmul", forbidden)
    with torch.no_grad():
        y = fourier_linear_forward(layer, x)
        y16 = fourier_linear_forward(layer, x.bfloat16())
    assert y.shape == (2, 3, 40)
    assert float((y - expected).norm() / expected.norm()) < 1e-5
    assert y16.dtype == torch.bfloat16 and float((y16.float() - expected).norm() / expected.norm()) < 2e-2


def test_batch_limits_and_unaligned_shapes():
    aligned = _layer(8, 64, group=32)
    odd = _layer(8, 40, group=32)  # n_cols = 20: not a multiple of 16
    x = torch.randn(cpu_lut.MAX_ROWS + 1, 64)
    assert cpu_lut.supported(x[:1], 8, 32, 32)
    assert not cpu_lut.supported(x, 8, 32, 32)
    assert not cpu_lut.supported(x[:1], 5, 32, 32)
    assert not cpu_lut.supported(x[:1], 8, 20, 32)
    assert not cpu_lut.supported(x[:0], 8, 32, 32)
    assert cpu_lut.supported(x[:cpu_lut.HALF_MAX_ROWS], 8, 32, 32, half=True)
    assert not cpu_lut.supported(x[:cpu_lut.HALF_MAX_ROWS + 1], 8, 32, 32, half=True)
    cpu = torch.device("cpu")
    assert not cpu_lut.dequantize_supported(cpu, 8, 20, 32) and not cpu_lut.dequantize_supported(cpu, 8, 32, 24)
    assert not cpu_lut.dequantize_supported(cpu, 5, 32, 32) and not cpu_lut.dequantize_supported("meta", 8, 32, 32)
    for layer, inp in ((aligned, x), (odd, torch.randn(2, 40)), (odd, torch.randn(cpu_lut.MAX_ROWS + 3, 40))):
        with torch.no_grad():
            expected = torch.nn.functional.linear(inp, layer.dense_weight(), layer.bias)
            got = fourier_linear_forward(layer, inp)
        assert float((got - expected).norm() / expected.norm()) < 1e-5


needs_dequant = pytest.mark.skipif(not cpu_lut.dequantize_supported(torch.device("cpu"), 8, 16, 16),
                                   reason="the C++ dequantiser needs an AVX-512 CPU")


@needs_dequant
@pytest.mark.parametrize("codebook", ["lloyd", "vq"])
@pytest.mark.parametrize("scale_dtype", [torch.float16, torch.float32, torch.bfloat16])
def test_dequantizer_matches_the_reference_rows(codebook, scale_dtype):
    # n_cols = 48, group 32: groups straddle rows; row ranges that start anywhere (not only on multiples of 8)
    layer = _layer(37, 96, codebook=codebook)
    spec = dataclasses.replace(spectral_codes(layer), scales=spectral_codes(layer).scales.to(scale_dtype))
    tables = cpu_lut.cpu_tables(spec.table, _levels(layer) if codebook != "vq" else None, layer.phase_bits)
    full = dequantized_rows(spec, 0, 37).view(37, 48, 2)
    planar = torch.cat((full[..., 0], full[..., 1]), dim=1)
    for start, stop in ((0, 37), (3, 20), (36, 37), (5, 5)):
        got = cpu_lut.dequantize_planar(spec.codes, spec.scales, tables, layer.phase_bits, spec.group_len, 48,
                                        start, stop)
        assert got.shape == (stop - start, 96) and got.dtype == torch.float32
        assert torch.equal(got, planar[start:stop])
        half = cpu_lut.dequantize_planar(spec.codes, spec.scales, tables, layer.phase_bits, spec.group_len, 48,
                                         start, stop, torch.bfloat16)
        assert half.dtype == torch.bfloat16 and torch.equal(half, planar[start:stop].bfloat16())  # nearest even
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        cpu_lut.dequantize_planar(spec.codes, spec.scales, tables, layer.phase_bits, 32, 48, 0, 4, torch.float16)
    with pytest.raises(ValueError, match="out must be"):
        cpu_lut.dequantize_planar(spec.codes, spec.scales, tables, layer.phase_bits, 32, 48, 0, 4,
                                  out=torch.empty(4, 95))
    with pytest.raises(RuntimeError, match="multiples of 16"):
        cpu_lut.dequantize_planar(spec.codes, spec.scales, tables, layer.phase_bits, 24, 48, 0, 4)


@needs_dequant
def test_large_batches_use_the_dequantised_product(monkeypatch):
    # above the LUT kernel's batch limits: W' dequantised by the C++ kernel, float32 or bfloat16 products; the
    # training path's forward and backward take the same product (no chunked torch dequantisation anywhere)
    layer = _layer(40, 128, group=64, rank=3)
    monkeypatch.setattr(cpu_lut, "DEQUANT_CHUNK_BYTES", 4096)  # several chunks of 16 rows
    x = torch.randn(3, 7, 128)

    def forbidden(*args, **kwargs):
        raise AssertionError("large CPU batches must use the C++ dequantiser, not the chunked torch path")

    monkeypatch.setattr("llava_fa.kernels.spectral_ops.quantized_matmul", forbidden)
    monkeypatch.setattr("llava_fa.kernels.spectral_ops.quantized_matmul_transposed", forbidden)
    with torch.no_grad():
        expected = torch.nn.functional.linear(x, layer.dense_weight(), layer.bias)
        y = fourier_linear_forward(layer, x)
        y16 = fourier_linear_forward(layer, x.bfloat16())
    assert float((y - expected).norm() / expected.norm()) < 1e-5
    assert y16.dtype == torch.bfloat16 and float((y16.float() - expected).norm() / expected.norm()) < 2e-2
    xg = x.clone().requires_grad_(True)
    yg = fourier_linear_forward(layer, xg)
    assert torch.equal(yg.detach(), y)  # the same product as inference, bit for bit
    yg.square().sum().backward()
    xr = x.clone().requires_grad_(True)
    torch.nn.functional.linear(xr, layer.dense_weight().detach(), layer.bias.detach()).square().sum().backward()
    assert float((xg.grad - xr.grad).norm() / xr.grad.norm()) < 1e-4


def test_bad_arguments_raise_clear_errors():
    layer = _layer(8, 64, group=32)
    spec = spectral_codes(layer)
    xp = torch.randn(1, 64)
    polar = cpu_lut.cpu_tables(spec.table, layer.levels, 5)
    generic = cpu_lut.cpu_tables(spec.table, None, 5)
    with pytest.raises(ValueError, match="variant must be one of"):
        cpu_lut.lut_matmul(xp, spec.codes, spec.scales, polar, 5, 32, 8, variant="sse9")
    with pytest.raises(ValueError, match="uint8 codes"):
        cpu_lut.lut_matmul(xp, spec.codes.int(), spec.scales, polar, 5, 32, 8)
    with pytest.raises(ValueError, match="scales must be"):
        cpu_lut.lut_matmul(xp, spec.codes, spec.scales.double(), polar, 5, 32, 8)
    with pytest.raises(RuntimeError, match="multiples of 16"):
        cpu_lut.lut_matmul(xp, spec.codes, spec.scales, polar, 5, 24, 8)
    if "avx512_polar" in _runnable_variants(True):
        with pytest.raises(RuntimeError, match="non-polar table"):
            cpu_lut.lut_matmul(xp, spec.codes, spec.scales, generic, 5, 32, 8, variant="avx512_polar")


def test_switched_off_kernel_falls_back_to_the_torch_path():
    code = (
        "import torch\n"
        "from llava_fa.kernels import cpu_lut, fourier_linear_forward\n"
        "from llava_fa.fourier import fourier_approximate\n"
        "from llava_fa.quantization import FourierLinear\n"
        "layer = FourierLinear.from_approximation(fourier_approximate(torch.randn(8, 64), rank=0, group_size=32))\n"
        "x = torch.randn(1, 64)\n"
        "y = fourier_linear_forward(layer, x)\n"
        "ref = torch.nn.functional.linear(x, layer.dense_weight())\n"
        "assert cpu_lut.kernel() is None\n"
        "print(float((y - ref).norm() / ref.norm()))\n"
    )
    env = {**os.environ, cpu_lut.ENV_SWITCH: "0", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.strip().splitlines()[-1]) < 1e-5


def test_inference_under_autocast_keeps_float32_arithmetic():
    layer = _layer(32, 64, group=32, rank=2)
    x = torch.randn(2, 64)
    with torch.no_grad():
        expected = fourier_linear_forward(layer, x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = fourier_linear_forward(layer, x)
    assert got.dtype == torch.float32 and torch.equal(got, expected)


def test_cached_layer_state_follows_in_place_updates():
    # the kernel's per-layer plan (tables, low-rank matrices, float32 bias, 1 / d) is cached; every in-place
    # write to a buffer or factor it was built from, and every replaced tensor, must rebuild it
    layer = _layer(40, 128, group=64, rank=3)
    x = torch.randn(2, 128)

    def check():
        with torch.no_grad():
            y = fourier_linear_forward(layer, x)
            expected = torch.nn.functional.linear(x, layer.dense_weight(), layer.bias)
        assert float((y - expected).norm() / expected.norm()) < 1e-5

    check()
    with torch.no_grad():
        layer.bias.add_(1.0)
        check()
        layer.lowrank_l1.mul_(3.0)
        check()
        layer.input_scale.copy_(torch.rand(128) + 0.5)
        check()
        layer.scales.mul_(0.5)
        check()
    layer.bias = torch.nn.Parameter(torch.randn(40))
    check()

"""llava_fa.kernels: fourier_linear_forward against the dense reference, gradients, layouts, errors, compile;
the Triton kernels through Triton's CPU interpreter (subprocess with TRITON_INTERPRET=1); CUDA tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from llava_fa.fourier import Calibration, fourier_approximate
from llava_fa.kernels import fourier_linear_forward
from llava_fa.kernels.dispatch import lowrank_factors
from llava_fa.kernels.triton_lut import TRITON_AVAILABLE
from llava_fa.quantization import FourierLinear

ROOT = Path(__file__).resolve().parent.parent
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _layer(m=24, n=40, rank=3, bits=(3, 5), group=16, codebook="lloyd", bias=True, calibrated=True, seed=0,
           transform="rfft", device="cpu"):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(m, n, generator=g)
    calibration = Calibration(channel=torch.rand(n, generator=g) * 3 + 0.2) if calibrated else None
    approx = fourier_approximate(w, rank=rank, amplitude_bits=bits[0], phase_bits=bits[1], group_size=group,
                                 codebook=codebook, calibration=calibration, transform=transform)
    layer = FourierLinear.from_approximation(approx, bias=torch.randn(m, generator=g) if bias else None)
    return layer.to(device)


def _rel(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30))


def _reference(layer, x, include_lowrank=True):
    if include_lowrank:
        weight = layer.dense_weight()
    else:
        from llava_fa.fourier.transform import from_spectrum

        weight = from_spectrum(layer.polar_codes().dequantize(), layer.in_features, layer.transform)
        weight = weight / layer.input_scale.float().unsqueeze(0)
    return F.linear(x.float(), weight, None if layer.bias is None else layer.bias.float())


CASES = [
    dict(m=24, n=40),                                 # even n, 8-bit codes, groups straddle rows
    dict(m=17, n=33),                                 # odd n
    dict(m=1, n=70, rank=1, group=7),                 # out = 1, in not a multiple of 64, odd group
    dict(m=12, n=128, group=64, bias=False),          # rows hold whole groups, no bias
    dict(m=10, n=48, bits=(4, 4), calibrated=False),  # other bit split, no channel scale
    dict(m=9, n=30, bits=(2, 3)),                     # 5-bit codes (bit-packed stream)
    dict(m=16, n=36, codebook="vq"),                  # VQ table
    dict(m=8, n=20, rank=0),                          # no low-rank factors
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_forward_matches_dense_reference(case):
    layer = _layer(**case)
    x = torch.randn(3, 5, layer.in_features)
    with torch.no_grad():
        y = fourier_linear_forward(layer, x)
        y_q = fourier_linear_forward(layer, x, include_lowrank=False)
    assert y.shape == (3, 5, layer.out_features) and y.dtype == torch.float32
    assert _rel(y, _reference(layer, x)) < 1e-5
    assert _rel(y_q, _reference(layer, x, include_lowrank=False)) < 1e-5
    if layer.rank:
        assert _rel(y, y_q) > 1e-4  # the low-rank term is really there


@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[5]], ids=["even", "odd", "5bit"])
def test_gradients_match_autograd_through_dense_weight(case):
    layer = _layer(**case)
    x = torch.randn(4, layer.in_features)
    g = torch.randn(4, layer.out_features)
    l1, l2 = lowrank_factors(layer)
    params = [l1, l2, layer.bias]

    def grads(fn):
        for p in params:
            p.grad = None
        xg = x.clone().requires_grad_(True)
        (fn(xg) * g).sum().backward()
        return [xg.grad] + [p.grad.clone() for p in params]

    fast = grads(lambda xg: fourier_linear_forward(layer, xg))
    ref = grads(lambda xg: _reference(layer, xg))
    for a, b in zip(fast, ref):
        assert _rel(a, b) < 1e-5
    # the quantized part alone: gradient reaches x (through the frozen codes), not the factors
    for p in params:
        p.grad = None
    xg = x.clone().requires_grad_(True)
    (fourier_linear_forward(layer, xg, include_lowrank=False) * g).sum().backward()
    assert l1.grad is None and l2.grad is None
    assert _rel(xg.grad, g @ _reference_weight_q(layer)) < 1e-5


def _reference_weight_q(layer):
    from llava_fa.fourier.transform import from_spectrum

    weight = from_spectrum(layer.polar_codes().dequantize(), layer.in_features, layer.transform)
    return weight / layer.input_scale.float().unsqueeze(0)


def test_no_dense_rebuild_and_no_inverse_fft(monkeypatch):
    layer = _layer(m=20, n=64)
    x = torch.randn(2, 64)
    expected = _reference(layer, x)

    def forbidden(*args, **kwargs):
        raise AssertionError("the fast path must not rebuild the weight")

    monkeypatch.setattr(layer, "dense_weight", forbidden)
    monkeypatch.setattr(torch.fft, "irfft", forbidden)
    with torch.no_grad():
        assert _rel(fourier_linear_forward(layer, x), expected) < 1e-5
    assert _rel(fourier_linear_forward(layer, x.requires_grad_(True)), expected) < 1e-5


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 3e-3), (torch.bfloat16, 2e-2)])
def test_input_layouts_and_dtypes(dtype, tol):
    layer = _layer(m=14, n=50)
    base = torch.randn(6, 3, 50)
    with torch.no_grad():
        for x in (base, base.transpose(0, 1), base[:, 1], base[:0], base[0, 0]):
            x = x.to(dtype)
            y = fourier_linear_forward(layer, x)
            assert y.shape == (*x.shape[:-1], 14) and y.dtype == dtype
            if x.numel():
                assert _rel(y, _reference(layer, x)) < tol


def test_empty_batch_with_autograd():
    layer = _layer(m=6, n=20)
    x = torch.randn(0, 20, requires_grad=True)
    y = fourier_linear_forward(layer, x)
    assert y.shape == (0, 6)
    y.sum().backward()
    assert x.grad.shape == (0, 20)


def test_compute_dtype_is_respected():
    layer = _layer(m=8, n=32)
    layer.compute_dtype = torch.bfloat16
    x = torch.randn(3, 32)
    with torch.no_grad():
        y = fourier_linear_forward(layer, x)
    assert y.dtype == torch.float32
    assert y.equal(y.bfloat16().float())  # rounded through the compute dtype
    assert _rel(y, _reference(layer, x)) < 2e-2


def test_rfft2_uses_the_dense_path():
    layer = _layer(m=12, n=20, transform="rfft2")
    x = torch.randn(2, 20)
    with torch.no_grad():
        assert _rel(fourier_linear_forward(layer, x), _reference(layer, x)) < 1e-5
        assert _rel(fourier_linear_forward(layer, x, include_lowrank=False), _reference(layer, x, False)) < 1e-5


def test_bad_inputs_raise_clear_errors():
    layer = _layer(m=6, n=16)
    with pytest.raises(TypeError, match="FourierLinear"):
        fourier_linear_forward(torch.nn.Linear(16, 6), torch.randn(2, 16))
    with pytest.raises(TypeError, match="floating-point"):
        fourier_linear_forward(layer, torch.ones(2, 16, dtype=torch.long))
    with pytest.raises(TypeError, match="torch.Tensor"):
        fourier_linear_forward(layer, [[0.0] * 16])
    with pytest.raises(ValueError, match="in_features=16"):
        fourier_linear_forward(layer, torch.randn(2, 15))


def test_custom_op_compiles_without_graph_break():
    layer = _layer(m=10, n=24)
    x = torch.randn(3, 24)
    fn = torch.compile(lambda t: fourier_linear_forward(layer, t), backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        assert _rel(fn(x), _reference(layer, x)) < 1e-5


INTERPRETER_SCRIPT = r"""
import json, torch
from llava_fa.fourier import Calibration, fourier_approximate
from llava_fa.quantization import FourierLinear
from llava_fa.kernels.dispatch import lowrank_factors
from llava_fa.kernels.spectral_ops import _prepared, triton_fourier_linear
from llava_fa.kernels.triton_lut import lut_dequantize, lut_linear, interpreting
assert interpreting()
out = []
def layer(m, n, group, rank, bias, codebook, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(m, n, generator=g)
    a = fourier_approximate(w, rank=rank, amplitude_bits=3, phase_bits=5, group_size=group, codebook=codebook,
                            calibration=Calibration(channel=torch.rand(n, generator=g) * 3 + 0.2))
    return FourierLinear.from_approximation(a, bias=torch.randn(m, generator=g) if bias else None)
for (m, n, group, rank, bias, rows, dtype, codebook) in [
        (24, 40, 16, 3, True, 3, "float32", "lloyd"), (17, 33, 16, 2, True, 1, "float16", "lloyd"),
        (1, 70, 7, 1, False, 2, "float32", "lloyd"), (20, 128, 64, 3, True, 18, "bfloat16", "lloyd"),
        (5, 46, 16, 0, True, 7, "float32", "lloyd"), (12, 64, 32, 2, True, 2, "float32", "vq"),
        (12, 64, 32, 2, True, 17, "float16", "vq")]:
    mod = layer(m, n, group, rank, bias, codebook, m + n)
    dt = getattr(torch, dtype)
    x = torch.randn(rows, n).to(dt)
    ref = torch.nn.functional.linear(x.float(), mod.dense_weight(), None if mod.bias is None else mod.bias.float())
    l1, l2 = lowrank_factors(mod)
    levels, table = getattr(mod, "levels", None), getattr(mod, "table", None)
    y = triton_fourier_linear(x, mod.codes, mod.scales, levels, table, mod.input_scale, l1, l2, mod.bias, m,
                              mod.phase_bits, mod.group_size, dt)
    spectrum_q = mod.polar_codes().dequantize()
    w_planar = torch.cat((spectrum_q.real, spectrum_q.imag), dim=1)
    prep = _prepared(mod.codes, mod.scales, levels, table, mod.input_scale, l1, l2, mod.phase_bits, n, 8)
    w_kernel = lut_dequantize(mod.codes, mod.scales, prep["tables"], mod.group_size, m, mod.n_cols, torch.float32)
    out.append(dict(m=m, n=n, dtype=dtype, shape=list(y.shape), out_dtype=str(y.dtype),
                    err=float((y.float() - ref).norm() / ref.norm()),
                    dequant_err=float((w_kernel - w_planar).norm() / w_planar.norm())))
mod = layer(24, 40, 16, 3, True, "lloyd", 1)
l1, l2 = lowrank_factors(mod)
args = (mod.codes, mod.scales, getattr(mod, "levels", None), None, mod.input_scale, l1, l2, mod.bias, 24,
        mod.phase_bits, 16, torch.float32)
xs = torch.randn(40, 3).T  # non-contiguous rows
ref = torch.nn.functional.linear(xs, mod.dense_weight(), mod.bias)
y = triton_fourier_linear(xs, *args)
empty = triton_fourier_linear(torch.randn(0, 40), *args)
out.append(dict(noncontig_err=float((y - ref).norm() / ref.norm()), empty_shape=list(empty.shape)))
try:
    lut_linear(torch.randn(2, 3, 2), 40, mod.codes, mod.scales, prep["tables"], 16, 5)
    out.append(dict(error=None))
except ValueError as e:
    out.append(dict(error=str(e)))
print("RESULT" + json.dumps(out))
"""


@pytest.mark.skipif(not TRITON_AVAILABLE, reason="needs the triton package (its CPU interpreter)")
def test_triton_kernels_in_the_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1", HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", INTERPRETER_SCRIPT], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout.split("RESULT", 1)[1])
    *cases, extra, error = rows
    assert len(cases) == 7
    assert extra["noncontig_err"] < 1e-5 and extra["empty_shape"] == [0, 24]
    tol = {"float32": 1e-5, "float16": 4e-3, "bfloat16": 2e-2}
    for row in cases:
        assert row["shape"][1] == row["m"] and row["out_dtype"] == f"torch.{row['dtype']}"
        assert row["err"] < tol[row["dtype"]], row
        assert row["dequant_err"] < 1e-3, row  # fp16 table entries
    assert "uv must be float32" in error["error"]


# ----- CUDA ---------------------------------------------------------------------------------------
@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float16, 1e-2), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("shape", [(24, 40), (1, 70), (256, 1024)])
@pytest.mark.parametrize("rows", [0, 1, 5, 40, 300])
def test_cuda_matches_dense_reference(shape, dtype, tol, rows):
    m, n = shape
    layer = _layer(m=m, n=n, rank=min(4, m), group=64, device="cuda")
    x = torch.randn(rows, n, device="cuda").to(dtype)
    with torch.no_grad():
        y = fourier_linear_forward(layer, x)
        y_q = fourier_linear_forward(layer, x, include_lowrank=False)
    assert y.shape == (rows, m) and y.dtype == dtype
    if rows:
        assert torch.isfinite(y).all()
        assert _rel(y, _reference(layer, x)) < tol
        assert _rel(y_q, _reference(layer, x, include_lowrank=False)) < tol


@cuda
@pytest.mark.cuda
def test_cuda_gradients_and_graph_capture():
    layer = _layer(m=64, n=96, device="cuda")
    x = torch.randn(4, 96, device="cuda", requires_grad=True)
    g = torch.randn(4, 64, device="cuda")
    (fourier_linear_forward(layer, x) * g).sum().backward()
    xr = x.detach().clone().requires_grad_(True)
    (_reference(layer, xr) * g).sum().backward()
    assert _rel(x.grad, xr.grad) < 1e-4
    static = torch.randn(2, 96, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        fourier_linear_forward(layer, static)  # warm-up: autotune, cuFFT plan, prepared tables
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = fourier_linear_forward(layer, static)
        static.copy_(torch.randn_like(static))
        graph.replay()
        assert _rel(out, _reference(layer, static)) < 2e-2


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("codebook", ["lloyd", "vq"])
def test_cuda_dequantize_then_cublas_path(monkeypatch, codebook):
    from llava_fa.kernels import triton_lut

    monkeypatch.setattr(triton_lut, "DEQUANT_MIN_BATCH", 1)
    layer = _layer(m=200, n=256, group=64, codebook=codebook, device="cuda")
    x = torch.randn(7, 256, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        y = fourier_linear_forward(layer, x)
    assert y.dtype == torch.bfloat16 and _rel(y, _reference(layer, x)) < 2e-2

"""FourierLinear: layout, forward == core reconstruct, gradients, dtypes/devices, dequantize, repr."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llava_fa.fourier import Calibration, CompressionSettings, fourier_approximate
from llava_fa.quantization import FourierLinear, fourier_layout, is_fourier_linear

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _approx(m=24, n=40, rank=4, device="cpu", **kw):
    torch.manual_seed(0)
    w = torch.randn(m, n, device=device)
    return w, fourier_approximate(w, rank=rank, amplitude_bits=4, phase_bits=4, group_size=16, **kw)


@pytest.mark.parametrize("transform", ["rfft", "rfft2"])
def test_forward_matches_core_reconstruct(transform):
    w, approx = _approx(transform=transform)
    bias = torch.randn(24)
    layer = FourierLinear.from_approximation(approx, bias=bias)
    x = torch.randn(3, 5, 40)
    expected = F.linear(x, approx.reconstruct(), bias)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)  # frequency-domain forward
    assert torch.equal(layer.dense_weight(), approx.reconstruct())
    # the approximation is an approximation of w, not garbage
    assert 0 < float(layer.approx_error) < 0.2


def test_forward_with_channel_scale_matches_core():
    torch.manual_seed(1)
    w = torch.randn(16, 32)
    channel = torch.rand(32) * 10 + 0.1
    approx = fourier_approximate(w, rank=2, amplitude_bits=3, phase_bits=4, calibration=Calibration(channel=channel))
    assert approx.input_scale is not None
    layer = FourierLinear.from_approximation(approx)
    assert torch.equal(layer.dense_weight(), approx.reconstruct())
    # the input scale is stored (ones without calibration), so both layers take the same bits
    assert layer.nbits() == FourierLinear.from_approximation(fourier_approximate(w, rank=2, amplitude_bits=3,
                                                                                 phase_bits=4)).nbits()


@pytest.mark.parametrize("group_size,codebook,bits", [(16, "uniform", (4, 4)), (None, "lloyd", (3, 5)), (7, "uniform", (2, 3)), (16, "vq", (3, 5))])
def test_layout_is_what_the_core_stores(group_size, codebook, bits):
    torch.manual_seed(0)
    w = torch.randn(20, 33)
    approx = fourier_approximate(w, rank=3, amplitude_bits=bits[0], phase_bits=bits[1], group_size=group_size,
                                 codebook=codebook)
    layout = fourier_layout(20, 33, CompressionSettings(rank=3, amplitude_bits=bits[0], phase_bits=bits[1],
                                                        group_size=group_size, transform="rfft", codebook=codebook))
    tensors = FourierLinear.tensors_from_approximation(approx)
    assert set(tensors) == set(layout)
    for name, (shape, dtype) in layout.items():
        assert tuple(tensors[name].shape) == shape, name
        assert tensors[name].dtype == dtype, name
    # an empty module built from the layout loads the state dict strictly
    empty = FourierLinear(33, 20, bias=False, rank=3, amplitude_bits=bits[0], phase_bits=bits[1],
                          group_size=group_size, codebook=codebook, device="meta")
    full = FourierLinear.from_approximation(approx)
    assert {k: (tuple(v.shape), v.dtype) for k, v in empty.state_dict().items()} == \
        {k: (tuple(v.shape), v.dtype) for k, v in full.state_dict().items()}


def test_state_dict_has_no_dense_weight_and_factors_are_trainable():
    _, approx = _approx()
    layer = FourierLinear.from_approximation(approx, bias=torch.zeros(24))
    sd = layer.state_dict()
    assert "weight" not in sd
    assert sd["codes"].dtype == torch.uint8 and sd["codes"].dim() == 1
    assert sd["lowrank_l1"].shape == (24, 4, 2) and sd["lowrank_l1"].dtype == torch.float32
    params = {n for n, p in layer.named_parameters() if p.requires_grad}
    assert params == {"lowrank_l1", "lowrank_l2", "bias"}
    x = torch.randn(4, 40)
    layer(x).square().sum().backward()
    assert layer.lowrank_l1.grad is not None and layer.lowrank_l1.grad.abs().sum() > 0
    assert layer.lowrank_l2.grad is not None and layer.lowrank_l2.grad.abs().sum() > 0
    codes_before = layer.codes.clone()
    torch.optim.AdamW(layer.parameters(), lr=1e-2).step()
    assert torch.equal(layer.codes, codes_before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_dtypes_cpu(dtype):
    w, approx = _approx()
    layer = FourierLinear.from_approximation(approx, bias=torch.randn(24).to(dtype))
    x = torch.randn(2, 40).to(dtype)
    y = layer(x)
    assert y.dtype == dtype and y.shape == (2, 24)
    ref = F.linear(x.float(), approx.reconstruct(), layer.bias.float())
    assert torch.allclose(y.float(), ref, atol=0.1, rtol=0.05)


def test_compute_dtype_overrides_input_dtype():
    _, approx = _approx()
    layer = FourierLinear.from_approximation(approx, compute_dtype=torch.bfloat16)
    x = torch.randn(2, 40)
    y = layer(x)
    assert y.dtype == torch.float32
    assert torch.equal(y, y.bfloat16().float())  # rounded through the compute dtype
    # fp32 accumulation, one bf16 rounding of the output: within bf16's half-ulp of the fp32 result
    torch.testing.assert_close(y, F.linear(x, approx.reconstruct()), rtol=8e-3, atol=1e-2)


def test_dequantize_gives_linear_and_repr():
    _, approx = _approx()
    bias = torch.randn(24)
    layer = FourierLinear.from_approximation(approx, bias=bias)
    lin = layer.dequantize()
    assert type(lin) is nn.Linear and lin.weight.shape == (24, 40)
    assert torch.equal(lin.weight, approx.reconstruct())
    assert torch.equal(lin.bias, bias)
    x = torch.randn(3, 40)
    torch.testing.assert_close(lin(x), layer(x), rtol=1e-5, atol=1e-5)
    text = repr(layer)
    assert "rank=4" in text and "amplitude_bits=4" in text and "phase_bits=4" in text
    assert is_fourier_linear(layer) and not is_fourier_linear(lin)


def test_load_compressed_rejects_wrong_shapes():
    _, approx = _approx()
    layer = FourierLinear(40, 24, bias=False, rank=5, amplitude_bits=4, phase_bits=4, group_size=16)
    with pytest.raises(ValueError, match="lowrank_l1"):
        layer.load_compressed(FourierLinear.tensors_from_approximation(approx))


def test_accounting():
    _, approx = _approx()
    layer = FourierLinear.from_approximation(approx)
    # bits = 8 x bytes on disk: the core's count + the stored ones-input-scale (16 bits x in) + the error scalar
    assert layer.nbits() == 8 * layer.stored_bytes() == approx.nbits + 16 * 40 + 32
    # saved bytes: the float32 factor parameters are written in their float16 factor dtype
    tensors = FourierLinear.tensors_from_approximation(approx)
    assert layer.stored_bytes() == sum(t.numel() * (2 if n.startswith("lowrank_") else t.element_size())
                                       for n, t in tensors.items())
    assert layer.saved_tensors()["lowrank_l1"].dtype == torch.float16 and layer.lowrank_l1.dtype == torch.float32


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_cuda_forward_matches_cpu(dtype):
    w, approx = _approx(device="cuda")
    layer = FourierLinear.from_approximation(approx, bias=torch.randn(24, device="cuda"))
    assert layer.codes.is_cuda and layer.lowrank_l1.is_cuda
    x = torch.randn(2, 40, device="cuda").to(dtype)
    y = layer(x)
    assert y.is_cuda and y.dtype == dtype
    cpu = layer.to("cpu")
    assert torch.allclose(y.float().cpu(), cpu(x.cpu().float()), atol=0.1, rtol=0.05)


def test_vq_codebook_forward_matches_core_and_stores_table():
    _, approx = _approx(codebook="vq")
    layer = FourierLinear.from_approximation(approx)
    assert layer.table.shape == (256, 2) and layer.table.dtype == torch.float16
    assert "table" in layer.state_dict()
    assert torch.equal(layer.dense_weight(), approx.reconstruct())
    assert "levels" not in layer.state_dict()  # the VQ table replaces the amplitude levels
    assert layer.nbits() == approx.quant.nbits() + (layer.lowrank_l1.numel() + layer.lowrank_l2.numel()) * 16 \
        + 16 * 40 + 32


def test_dtype_casts_keep_codes_and_float32_factors():
    _, approx = _approx()
    layer = FourierLinear.from_approximation(approx, bias=torch.randn(24))
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    factor = layer.lowrank_l1
    layer.to(torch.bfloat16)
    assert layer.bias.dtype == torch.bfloat16 and layer.lowrank_l1 is factor  # same Parameter object
    for name in layer.stored_names:
        assert getattr(layer, name).dtype == before[name].dtype and torch.equal(getattr(layer, name), before[name])
    y = layer(torch.randn(2, 40, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
    layer.half().float()
    assert torch.equal(layer.scales, before["scales"]) and layer.lowrank_l2.dtype == torch.float32


def test_load_state_dict_accepts_legacy_factor_names():
    _, approx = _approx()
    layer = FourierLinear.from_approximation(approx)
    fresh = FourierLinear(40, 24, bias=False, rank=4, amplitude_bits=4, phase_bits=4, group_size=16)
    fresh.load_state_dict({k.replace("lowrank_", "lora_"): v for k, v in layer.state_dict().items()})
    assert torch.equal(fresh.lowrank_l1, layer.lowrank_l1) and torch.equal(fresh.codes, layer.codes)


def test_saving_trained_factors_warns_when_rounded():
    _, approx = _approx()
    layer = FourierLinear.from_approximation(approx)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer.saved_tensors()  # untrained: the factors are exact in float16, no warning
    with torch.no_grad():
        layer.lowrank_l1.add_(1e-4 * torch.randn_like(layer.lowrank_l1))
    with pytest.warns(UserWarning, match="rounds trained factor 'lowrank_l1'.*factor_dtype='float32'"):
        layer.saved_tensors()

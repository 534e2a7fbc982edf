"""torch.library custom op (inference) and autograd Function (training) of the FourierLinear fast path.

* ``llava_fa_kernels::fourier_linear`` — the whole layer for inference (no autograd): spectral input,
  quantized LUT product, low-rank term, bias. One opaque op with a fake (meta) implementation, so
  ``torch.compile`` keeps the complex FFT out of Inductor and CUDA graphs capture it. On CUDA with
  Triton and 8-bit codes it runs the Triton kernels of ``triton_lut``; on the CPU at small batch the C++
  LUT kernel of ``cpu_lut`` (the whole layer after the input's rfft in one call); elsewhere the plain-torch
  chunked path of ``spectral``.
* :class:`QuantizedSpectralMatmul` — ``y = x' W'^T`` for the frozen quantized part with a backward
  ``g W'`` that re-dequantises ``W'`` chunk-wise (nothing dense is saved).

If a second copy of this file is imported (Hub remote code next to the installed package), the op
registered by the first copy is reused: both copies implement the same function.
"""

from __future__ import annotations

import contextlib
from typing import Optional

import torch
from torch.utils.weak import WeakIdKeyDictionary

from ..fourier.polar_quant import code_table, polar_lookup_table, uniform_levels
from ..fourier.transform import spectrum_columns
from .cpu_lut import (
    cpu_tables,
    dequantize_supported,
    layer_plan,
    planar_matmul,
    planar_matmul_transposed,
    run_layer,
)
from .cpu_lut import supported as cpu_lut_supported
from .spectral import (
    SpectralCodes,
    interleaved_input,
    lowrank_input_matrix,
    lowrank_output_matrix,
    lowrank_spatial_matrix,
    planar_input,
    quantized_matmul,
    quantized_matmul_transposed,
    scaled_spectral_input,
    spectral_codes,
)
from .triton_lut import TRITON_AVAILABLE, lut_linear, lut_tables, spectral_prep, use_prep_kernel

OP_NAMESPACE = "llava_fa_kernels"
OP_NAME = "fourier_linear"

#: Derived per-layer tensors (inverse channel scale, low-rank matrices, kernel tables), one entry per codes
#: tensor: it lives as long as the layer's codes (weak key, so a freed layer's address reused by a new one can
#: never serve stale values) and is rebuilt when any stored tensor changes (object, version, shape, dtype).
_PREPARED: WeakIdKeyDictionary = WeakIdKeyDictionary()


def triton_supported(x: torch.Tensor, code_bits: int) -> bool:
    """True when the Triton kernels handle this call (CUDA tensor, Triton importable, 8-bit codes)."""
    return TRITON_AVAILABLE and x.is_cuda and code_bits == 8


class QuantizedSpectralMatmul(torch.autograd.Function):
    """``y = x' W'^T`` (float32 ``(M, out)``) for the quantized part; differentiable in ``x'`` only.

    ``x'`` is the interleaved spectral input (chunked torch dequantisation) or, with ``tables`` (the C++
    kernel's ``cpu_tables``), the planar one (``cpu_lut.planar_matmul``: dequantised by the C++ kernel).
    """

    @staticmethod
    def forward(ctx, xp: torch.Tensor, spec: SpectralCodes, tables: Optional[dict],  # type: ignore[override]
                phase_bits: int) -> torch.Tensor:
        ctx.spec, ctx.tables, ctx.phase_bits = spec, tables, phase_bits
        if tables is None:
            return quantized_matmul(xp, spec)
        return planar_matmul(xp.float(), spec.codes, spec.scales, tables, phase_bits, spec.group_len,
                             spec.out_features)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        spec = ctx.spec
        if ctx.tables is None:
            return quantized_matmul_transposed(grad, spec), None, None, None
        return (planar_matmul_transposed(grad.float(), spec.codes, spec.scales, ctx.tables, ctx.phase_bits,
                                         spec.group_len, spec.n_cols), None, None, None)


def quantized_spectral_product(uv: torch.Tensor, module) -> torch.Tensor:
    """``x' W'^T`` float32 ``(M, out)`` of a FourierLinear's quantized part from its spectral input ``uv``
    ``(M, n // 2 + 1, 2)``, differentiable in ``uv`` (the training path; nothing dense is saved). On an AVX-512
    CPU the C++ kernel dequantises ``W'`` (planar layout, the same product as the inference path's at batches
    above ``cpu_lut.MAX_ROWS`` rows); elsewhere the chunked torch path."""
    spec = spectral_codes(module)
    n = module.in_features
    if dequantize_supported(uv.device, spec.code_bits, spec.n_cols, spec.group_len):
        levels, table = getattr(module, "levels", None), getattr(module, "table", None)
        prep = _prepared(module.codes, module.scales, levels, table, module.input_scale, None, None,
                         module.phase_bits, n, 8)
        tables = _cpu_tables(prep, levels, table, module.phase_bits, 8, module.codes.device)
        return QuantizedSpectralMatmul.apply(planar_input(uv, n), spec, tables, module.phase_bits)
    return QuantizedSpectralMatmul.apply(interleaved_input(uv, n), spec, None, 0)


def _key(*tensors: Optional[torch.Tensor]) -> tuple:
    # object, storage and in-place version: replacing a tensor (``.data =``, ``.to()``) changes the first two, an
    # in-place write the third
    return tuple(None if t is None else (id(t), t.data_ptr(), t._version) for t in tensors)


def _prepared(codes, scales, levels, table, input_scale, l1, l2, phase_bits: int, n: int, code_bits: int = 8,
              bias: Optional[torch.Tensor] = None) -> dict:
    """The cached entry of this layer: ``inv_scale``, ``unit_scale`` and, with factors, ``lr_in`` / ``lr_out``;
    path-specific tables are added by :func:`_gpu_tables` / :func:`_cpu_tables` on first use."""
    key = _key(codes, scales, levels, table, input_scale, l1, l2, bias) + (phase_bits, n, code_bits)
    hit = _PREPARED.get(codes)
    if hit is not None and hit[0] == key:
        return hit[1]
    entry = {
        "inv_scale": (1.0 / input_scale.float()).contiguous(),
        "unit_scale": bool(torch.all(input_scale == 1)),
    }
    if l1 is not None:
        entry["lr_in"] = lowrank_input_matrix(l2.detach(), n).contiguous()
        entry["lr_out"] = lowrank_output_matrix(l1.detach()).contiguous()
    _PREPARED[codes] = (key, entry)
    return entry


def _inverse_scale(entry: dict) -> Optional[torch.Tensor]:
    """The cached float32 ``1 / d``, or None for a unit channel scale."""
    return None if entry["unit_scale"] else entry["inv_scale"]


def _polar_levels(levels, table, code_bits: int, phase_bits: int, device) -> Optional[torch.Tensor]:
    """Amplitude levels of a polar code table (stored Lloyd levels or the uniform grid); None for VQ points."""
    if table is not None:
        return None
    return levels.float() if levels is not None else uniform_levels(code_bits - phase_bits, device)


def _code_table(entry: dict, levels, table, phase_bits: int, code_bits: int, device) -> torch.Tensor:
    """The layer's complex code table (``polar_quant.code_table``), cached in `entry`."""
    if "lut" not in entry:
        entry["lut"] = code_table(levels, table, code_bits - phase_bits, phase_bits, device)
    return entry["lut"]


def _gpu_tables(entry: dict, codes, levels, table, input_scale, l2, phase_bits: int, n: int, code_bits: int) -> dict:
    """Adds the Triton tables (and the spatial low-rank matrix ``lr_a`` of the prep kernel) to `entry`."""
    if "tables" not in entry:
        amplitude = _polar_levels(levels, table, code_bits, phase_bits, codes.device)
        if amplitude is None:
            entry["tables"] = lut_tables(None, None, torch.view_as_complex(table.float().contiguous()), 0)
        else:
            phasors = polar_lookup_table(torch.ones(1, device=codes.device), phase_bits)
            entry["tables"] = lut_tables(amplitude, phasors, None, phase_bits)
        if l2 is not None:
            entry["lr_a"] = lowrank_spatial_matrix(l2.detach(), n, input_scale).contiguous()
    return entry


def _cpu_tables(entry: dict, levels, table, phase_bits: int, code_bits: int, device) -> dict:
    """The CPU kernel's tables (``cpu_lut.cpu_tables``) of this layer, cached in `entry`."""
    if "cpu_tables" not in entry:
        entry["cpu_tables"] = cpu_tables(_code_table(entry, levels, table, phase_bits, code_bits, device),
                                         _polar_levels(levels, table, code_bits, phase_bits, device), phase_bits)
    return entry["cpu_tables"]


def triton_fourier_linear(x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor, levels: Optional[torch.Tensor],
                          table: Optional[torch.Tensor], input_scale: torch.Tensor, l1: Optional[torch.Tensor],
                          l2: Optional[torch.Tensor], bias: Optional[torch.Tensor], out_features: int,
                          phase_bits: int, group_len: int, out_dtype: torch.dtype) -> torch.Tensor:
    """The Triton path of the op (8-bit codes): rfft of ``x / d``, low-rank projection, one LUT GEMM launch.

    ``x`` ``(M, n)``; runs on CPU tensors too under ``TRITON_INTERPRET=1`` (tests).
    """
    n = x.shape[-1]
    if x.shape[0] == 0:
        return x.new_zeros(0, out_features, dtype=out_dtype)
    prep = _gpu_tables(_prepared(codes, scales, levels, table, input_scale, l1, l2, phase_bits, n, 8), codes, levels,
                       table, input_scale, l2, phase_bits, n, 8)
    if use_prep_kernel(x.shape[0], n):
        u, t = spectral_prep(x, _inverse_scale(prep), prep.get("lr_a"))
        uv = scaled_spectral_input(u, None)
    else:
        uv = scaled_spectral_input(x, _inverse_scale(prep))
        t = None if l1 is None else uv.flatten(1) @ prep["lr_in"].T
    return lut_linear(uv, n, codes, scales, prep["tables"], group_len, out_features,
                      t=t, lr_out=prep.get("lr_out"), bias=bias, out_dtype=out_dtype)


def fourier_linear_impl(x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor, levels: Optional[torch.Tensor],
                         table: Optional[torch.Tensor], input_scale: torch.Tensor, l1: Optional[torch.Tensor],
                         l2: Optional[torch.Tensor], bias: Optional[torch.Tensor], out_features: int,
                         phase_bits: int, code_bits: int, group_len: int, out_dtype: torch.dtype) -> torch.Tensor:
    n = x.shape[-1]
    n_cols = spectrum_columns(n, "rfft")
    if x.shape[0] == 0:
        return x.new_zeros(0, out_features, dtype=out_dtype)
    if triton_supported(x, code_bits):
        return triton_fourier_linear(x, codes, scales, levels, table, input_scale, l1, l2, bias, out_features,
                                     phase_bits, group_len, out_dtype)
    prep = _prepared(codes, scales, levels, table, input_scale, l1, l2, phase_bits, n, code_bits, bias)
    half = out_dtype in (torch.bfloat16, torch.float16)
    if cpu_lut_supported(x, code_bits, n_cols, group_len, half):  # the whole layer in one kernel call
        if "cpu_plan" not in prep:
            tables = _cpu_tables(prep, levels, table, phase_bits, code_bits, codes.device)
            prep["cpu_plan"] = layer_plan(codes, scales, tables, phase_bits, group_len, out_features, n,
                                          prep.get("lr_in"), prep.get("lr_out"), bias, _inverse_scale(prep))
        return run_layer(prep["cpu_plan"], x).to(out_dtype)
    uv = scaled_spectral_input(x, _inverse_scale(prep))
    if dequantize_supported(x.device, code_bits, n_cols, group_len):
        # larger batches: W' dequantised chunk-wise by the C++ kernel, the product in bfloat16 for half outputs
        tables = _cpu_tables(prep, levels, table, phase_bits, code_bits, codes.device)
        xpl = planar_input(uv, n).to(torch.bfloat16 if half else torch.float32)
        with _without_autocast("cpu"):
            y = planar_matmul(xpl, codes, scales, tables, phase_bits, group_len, out_features)
    else:
        lut = _code_table(prep, levels, table, phase_bits, code_bits, codes.device)
        spec = SpectralCodes(codes=codes, scales=scales, table=lut, code_bits=code_bits,
                             group_len=group_len, out_features=out_features, in_features=n, n_cols=n_cols)
        y = quantized_matmul(interleaved_input(uv, n), spec)
    if l1 is not None:  # y is a fresh float32 tensor: accumulate in place, in float32 even under autocast
        with _without_autocast(x.device.type):
            y.addmm_(uv.flatten(1) @ prep["lr_in"].T, prep["lr_out"].T)
    if bias is not None:
        y.add_(bias)
    return y.to(out_dtype)


def _without_autocast(device_type: str):
    """A context that turns autocast off where it is on (the op's float32 arithmetic is part of its contract)."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def _fourier_linear_fake(x, codes, scales, levels, table, input_scale, l1, l2, bias, out_features, phase_bits,
                         code_bits, group_len, out_dtype):
    return x.new_empty(x.shape[0], out_features, dtype=out_dtype)


def _register() -> object:
    namespace = getattr(torch.ops, OP_NAMESPACE)
    if hasattr(namespace, OP_NAME):  # registered by another copy of this file
        return getattr(namespace, OP_NAME)
    op = torch.library.custom_op(f"{OP_NAMESPACE}::{OP_NAME}", mutates_args=())(fourier_linear_impl)
    op.register_fake(_fourier_linear_fake)
    return getattr(namespace, OP_NAME)


#: ``fourier_linear_op(x (M, n), codes, scales, levels|None, table|None, input_scale, l1|None, l2|None, bias|None,
#: out_features, phase_bits, code_bits, group_len, out_dtype) -> (M, out_features)`` (no autograd).
fourier_linear_op = _register()

__all__ = ["QuantizedSpectralMatmul", "quantized_spectral_product", "triton_fourier_linear", "fourier_linear_impl",
           "fourier_linear_op", "triton_supported", "OP_NAMESPACE", "OP_NAME"]

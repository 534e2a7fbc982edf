"""The one entry point of the FourierLinear fast path: :func:`fourier_linear_forward`.

Routes a call by what it needs:

* autograd needed (grad mode on and ``x`` or a factor requires grad): plain torch through ONE rfft of the
  input; the frozen quantized part is ``quantized_spectral_product`` (saves nothing dense; its backward
  re-dequantises chunk-wise), the low-rank branch ordinary differentiable ops;
* otherwise the ``llava_fa_kernels::fourier_linear`` custom op (its implementation called directly in
  eager mode): Triton LUT kernels on CUDA (8-bit codes), the C++ LUT kernel on the CPU at small batch, the
  chunked frequency-domain torch path elsewhere (none ever rebuilds the dense weight nor runs an inverse
  FFT of it);
* layouts the fast paths do not cover (``transform="rfft2"``) rebuild the dense weight, as before.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .spectral import lowrank_term, spectral_input
from .spectral_ops import fourier_linear_impl, fourier_linear_op, quantized_spectral_product

#: FourierLinear transforms the frequency-domain paths handle.
FAST_TRANSFORMS = ("rfft",)


def lowrank_factors(module) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """``(l1 (out, r, 2), l2 (r, n_cols, 2))`` of a FourierLinear, or ``(None, None)`` at rank 0."""
    l1 = getattr(module, "lowrank_l1", None)
    l2 = getattr(module, "lowrank_l2", None)
    if l1 is None:
        l1, l2 = getattr(module, "lora_l1", None), getattr(module, "lora_l2", None)
    if l1 is None or l2 is None or l1.shape[1] == 0:
        return None, None
    return l1, l2


def _check(module, x) -> None:
    if not getattr(module, "is_fourier_linear", False):
        raise TypeError(f"fourier_linear_forward expects a FourierLinear module, got {type(module).__name__}")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"fourier_linear_forward expects a torch.Tensor input, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"fourier_linear_forward expects a floating-point input, got {x.dtype}; cast it first")
    if x.dim() == 0 or x.shape[-1] != module.in_features:
        raise ValueError(f"fourier_linear_forward: input of shape {tuple(x.shape)} does not end in "
                         f"in_features={module.in_features}")


def _dense_forward(module, x: torch.Tensor, compute: torch.dtype, include_lowrank: bool) -> torch.Tensor:
    bias = None if module.bias is None else module.bias.to(compute)
    if include_lowrank:
        weight = module.dense_weight(compute)
    else:
        from ..fourier.transform import from_spectrum

        spectrum = module.polar_codes().dequantize()
        weight = (from_spectrum(spectrum, module.in_features, module.transform)
                  / module.input_scale.float().unsqueeze(0)).to(compute)
    return F.linear(x.to(compute), weight, bias).to(x.dtype)


def fourier_linear_forward(module, x: torch.Tensor, *, include_lowrank: bool = True) -> torch.Tensor:
    """``x W^T + b`` for a FourierLinear without rebuilding its dense weight where a fast path exists.

    Args:
        module: a FourierLinear (any copy of the class: duck-typed on ``is_fourier_linear``).
        x: ``(..., in_features)`` of any float dtype and strides; leading dims may be empty (batch 0).
        include_lowrank: ``False`` computes the quantized part only (plus bias), for adapters that add
            their own low-rank branch.

    Returns:
        ``(..., out_features)`` in ``x``'s dtype (computed in ``module.compute_dtype`` or ``x``'s dtype,
        accumulated in float32). Differentiable in ``x``, the factors and the bias.

    Raises:
        TypeError: ``module`` is not a FourierLinear, ``x`` not a floating-point tensor.
        ValueError: ``x``'s last dimension is not ``in_features``.
    """
    _check(module, x)
    compute = module.compute_dtype or x.dtype
    if module.transform not in FAST_TRANSFORMS:
        return _dense_forward(module, x, compute, include_lowrank)
    n, m = module.in_features, module.out_features
    lead = x.shape[:-1]
    x2 = x.reshape(-1, n)
    l1, l2 = lowrank_factors(module) if include_lowrank else (None, None)
    bias = module.bias
    needs_grad = torch.is_grad_enabled() and (
        x.requires_grad or (bias is not None and bias.requires_grad)
        or (l1 is not None and (l1.requires_grad or l2.requires_grad)))
    if not needs_grad:
        group = module.group_size if module.group_size is not None else m * module.n_cols
        # eager calls skip the custom op's dispatch (tens of microseconds); torch.compile traces the op itself
        op = fourier_linear_op if torch.compiler.is_compiling() else fourier_linear_impl
        y = op(x2, module.codes, module.scales, getattr(module, "levels", None), getattr(module, "table", None),
               module.input_scale, l1, l2, bias, m, module.phase_bits, module.amplitude_bits + module.phase_bits,
               int(group), compute)
        return y.reshape(*lead, m).to(x.dtype)
    uv = spectral_input(x2, module.input_scale)
    y = quantized_spectral_product(uv, module)
    if l1 is not None:
        y = y + lowrank_term(uv, l1, l2, n)
    if bias is not None:
        y = y + bias.float()
    return y.to(compute).reshape(*lead, m).to(x.dtype)


__all__ = ["FAST_TRANSFORMS", "fourier_linear_forward", "lowrank_factors"]

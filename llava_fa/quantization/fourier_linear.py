"""`FourierLinear`: a Linear layer stored as PolarQuant codes + trainable complex low-rank factors.

``W = from_spectrum(Q~ + L1 @ L2, in_features, transform)`` with ``Q~`` the dequantised
PolarQuant codes (frozen) and ``L1 (out, r)``, ``L2 (r, n_cols)`` complex factors (trainable).

State dict (names and shapes are a pure function of the layer's sizes and settings, see
:func:`fourier_layout`, so an empty module built on ``meta`` loads a saved one as is):

=============  ===========================  ==========================================
name           shape                        dtype / role
=============  ===========================  ==========================================
codes          (packed_bytes,)              uint8 buffer, packed joint (amplitude, phase) codes
scales         (n_groups,)                  ``scale_dtype`` buffer, per-group amplitude scale
levels         (2^amplitude_bits,)          float32 (uniform) / float16 (lloyd) buffer
table          (2^(amp+phase bits), 2)      float16 buffer, codebook="vq" only: the 2-D code points
approx_error   ()                           float32 buffer, relative spatial error at compression
input_scale    (in,)                        float16 buffer, channel scale ``d`` (ones without channel
                                            calibration): ``W = from_spectrum(...) diag(1 / d)``
lora_l1        (out, r, 2)                  float32 Parameter, real/imag parts of L1
lora_l2        (r, n_cols, 2)               float32 Parameter, real/imag parts of L2
bias           (out,)                       Parameter (optional)
=============  ===========================  ==========================================

The codes layout is PolarQuant's (row-major groups, see ``llava_fa.fourier.polar_quant``), so a
future GPU kernel can read ``codes``/``scales``/``levels`` directly. The forward pass currently
rebuilds the dense weight (float32) and calls ``F.linear`` in the compute dtype; gradients reach
the factors through the differentiable ``from_spectrum``.

This file is shipped as Hub remote code (flat imports only).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..fourier.approximate import FourierApproximation
from ..fourier.packing import packed_nbytes
from ..fourier.polar_quant import PolarCodes
from ..fourier.transform import from_spectrum, spectrum_columns

#: Names of the tensors a FourierLinear stores (besides `bias`).
STORED_TENSORS: tuple[str, ...] = ("codes", "scales", "levels", "approx_error", "input_scale", "lora_l1", "lora_l2")


def fourier_layout(
    out_features: int,
    in_features: int,
    *,
    rank: int,
    amplitude_bits: int,
    phase_bits: int,
    group_size: Optional[int],
    transform: str,
    codebook: str = "lloyd",
    scale_dtype: torch.dtype = torch.float16,
) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Shapes and dtypes of the stored tensors: ``{name: (shape, dtype)}`` (pure function of its arguments)."""
    cols = spectrum_columns(in_features, transform)
    count = out_features * cols
    group_len = count if group_size is None else int(group_size)
    n_groups = math.ceil(count / group_len)
    return {
        "codes": ((packed_nbytes(n_groups * group_len, amplitude_bits + phase_bits),), torch.uint8),
        "scales": ((n_groups,), scale_dtype),
        "levels": ((1 << amplitude_bits,), torch.float16 if codebook == "lloyd" else torch.float32),
        "approx_error": ((), torch.float32),
        "input_scale": ((in_features,), torch.float16),
        "lora_l1": ((out_features, rank, 2), torch.float32),
        "lora_l2": ((rank, cols, 2), torch.float32),
        **({"table": ((1 << (amplitude_bits + phase_bits), 2), torch.float16)} if codebook == "vq" else {}),
    }


def is_fourier_linear(module: nn.Module) -> bool:
    """True for a FourierLinear of any copy of this file (remote code can import it twice: no isinstance)."""
    return getattr(module, "is_fourier_linear", False) is True


class FourierLinear(nn.Module):
    """Drop-in `nn.Linear` replacement holding a Fourier approximation of its weight.

    Args:
        in_features, out_features, bias: as for `nn.Linear`.
        rank, amplitude_bits, phase_bits, group_size, transform, codebook: compression settings
            (fix the stored tensors' shapes, see :func:`fourier_layout`).
        scale_dtype: dtype of the stored amplitude scales.
        compute_dtype: dtype of the matmul (`None`: the input's dtype).
        device, dtype: where to create the (empty) tensors; `dtype` is the bias dtype.
        placeholder: also register an empty `weight` of shape (out, in) that quantize-on-load fills
            (transformers matches checkpoint keys against the model's state dict); removed once compressed.

    Input ``(..., in_features)`` of any float dtype; output ``(..., out_features)`` in the input's dtype.
    """

    is_fourier_linear = True

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        rank: int,
        amplitude_bits: int,
        phase_bits: int,
        group_size: Optional[int] = 64,
        transform: str = "rfft",
        codebook: str = "lloyd",
        scale_dtype: torch.dtype = torch.float16,
        compute_dtype: Optional[torch.dtype] = None,
        factor_dtype: torch.dtype = torch.float16,
        device: Any = None,
        dtype: Optional[torch.dtype] = None,
        placeholder: bool = False,
    ):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.rank, self.amplitude_bits, self.phase_bits = int(rank), int(amplitude_bits), int(phase_bits)
        self.group_size = None if group_size is None else int(group_size)
        self.transform, self.codebook = transform, codebook
        self.scale_dtype, self.compute_dtype, self.factor_dtype = scale_dtype, compute_dtype, factor_dtype
        self.n_cols = spectrum_columns(self.in_features, transform)
        layout = fourier_layout(self.out_features, self.in_features, rank=self.rank, amplitude_bits=self.amplitude_bits,
                                phase_bits=self.phase_bits, group_size=self.group_size, transform=transform,
                                codebook=codebook, scale_dtype=scale_dtype)
        self.stored_names = tuple(layout)
        for name in layout:
            if name in ("lora_l1", "lora_l2"):
                continue
            shape, dt = layout[name]
            self.register_buffer(name, torch.ones(shape, dtype=dt, device=device))
        for name in ("lora_l1", "lora_l2"):
            shape, dt = layout[name]
            self.register_parameter(name, nn.Parameter(torch.zeros(shape, dtype=dt, device=device)))
        self.bias = nn.Parameter(torch.zeros(self.out_features, dtype=dtype, device=device)) if bias else None
        if placeholder:
            self.weight = nn.Parameter(torch.empty(self.out_features, self.in_features, dtype=dtype, device="meta"),
                                       requires_grad=False)

    # ----- building -------------------------------------------------------------------------
    @staticmethod
    def tensors_from_approximation(approx: FourierApproximation) -> dict[str, torch.Tensor]:
        """The stored tensors (by local name, without bias) of a core approximation, on its device."""
        quant = approx.quant
        device = quant.codes.device
        input_scale = getattr(approx, "input_scale", None)
        if input_scale is None:
            input_scale = torch.ones(approx.shape[1], dtype=torch.float16, device=device)
        return {
            "codes": quant.codes.contiguous(),
            "scales": quant.scales.contiguous(),
            "levels": quant.levels.contiguous(),
            "approx_error": torch.tensor(float(approx.error), dtype=torch.float32, device=device),
            "input_scale": input_scale.to(device=device, dtype=torch.float16).contiguous(),
            "lora_l1": torch.view_as_real(approx.l1.to(torch.complex64)).contiguous(),
            "lora_l2": torch.view_as_real(approx.l2.to(torch.complex64)).contiguous(),
            **({} if quant.table is None else {"table": quant.table.contiguous()}),
        }

    @classmethod
    def from_approximation(
        cls,
        approx: FourierApproximation,
        bias: Optional[torch.Tensor] = None,
        compute_dtype: Optional[torch.dtype] = None,
    ) -> "FourierLinear":
        """A FourierLinear holding `approx` (codes, scales, factors), with optional `bias` ``(out,)``."""
        m, n = approx.shape
        quant = approx.quant
        module = cls(n, m, bias=bias is not None, rank=approx.rank, amplitude_bits=quant.amplitude_bits,
                     phase_bits=quant.phase_bits, group_size=quant.group_size, transform=approx.transform,
                     codebook=quant.codebook, scale_dtype=quant.scales.dtype, compute_dtype=compute_dtype,
                     factor_dtype=approx.factor_dtype,
                     device=quant.codes.device, dtype=None if bias is None else bias.dtype)
        module.load_compressed(cls.tensors_from_approximation(approx))
        if bias is not None:
            module.bias.data.copy_(bias.detach())
        return module

    def load_compressed(self, tensors: dict[str, torch.Tensor]) -> None:
        """Set the stored tensors from `tensors` (names of `self.stored_names`); shapes and dtypes must match."""
        for name in self.stored_names:
            current = getattr(self, name)
            value = tensors[name]
            if tuple(value.shape) != tuple(current.shape) or value.dtype != current.dtype:
                raise ValueError(f"FourierLinear: tensor {name!r} has shape {tuple(value.shape)} dtype {value.dtype}, "
                                 f"expected {tuple(current.shape)} {current.dtype} for {self.extra_repr()}.")
            if name in self._parameters:
                self._parameters[name] = nn.Parameter(value.detach().clone(), requires_grad=current.requires_grad)
            else:
                self._buffers[name] = value.detach().clone()
        self._parameters.pop("weight", None)

    # ----- reading --------------------------------------------------------------------------
    def polar_codes(self) -> PolarCodes:
        """The frozen quantized spectrum as the core's `PolarCodes` (views of the buffers)."""
        return PolarCodes(codes=self.codes, scales=self.scales, levels=self.levels, amplitude_bits=self.amplitude_bits,
                          phase_bits=self.phase_bits, group_size=self.group_size,
                          shape=(self.out_features, self.n_cols), codebook=self.codebook,
                          table=getattr(self, "table", None))

    def spectrum(self) -> torch.Tensor:
        """Complex64 ``(out, n_cols)`` approximated half-spectrum ``Q~ + L1 @ L2`` (differentiable in the factors)."""
        approx = self.polar_codes().dequantize()
        if self.rank:
            approx = approx + torch.view_as_complex(self.lora_l1) @ torch.view_as_complex(self.lora_l2)
        return approx

    def dense_weight(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """The approximated weight, real ``(out, in)``, float32 unless `dtype` is given."""
        weight = from_spectrum(self.spectrum(), self.in_features, self.transform)
        weight = weight / self.input_scale.float().unsqueeze(0)
        return weight if dtype is None else weight.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compute = self.compute_dtype or x.dtype
        bias = None if self.bias is None else self.bias.to(compute)
        return F.linear(x.to(compute), self.dense_weight(compute), bias).to(x.dtype)

    def dequantize(self, dtype: Optional[torch.dtype] = None) -> nn.Linear:
        """An `nn.Linear` with the approximated weight (`dtype`: default the bias dtype, else float32)."""
        dtype = dtype or (self.bias.dtype if self.bias is not None else torch.float32)
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device=self.codes.device, dtype=dtype)
        with torch.no_grad():
            linear.weight.copy_(self.dense_weight(dtype))
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear

    # ----- accounting -----------------------------------------------------------------------
    def nbits(self, factor_bits: Optional[int] = None) -> int:
        """Bits of the compressed weight: codes + scales (+ levels/table) + input scale + factors at `factor_bits`
        (default: the bits of `factor_dtype`, the dtype they are saved in)."""
        factor_bits = torch.finfo(self.factor_dtype).bits if factor_bits is None else factor_bits
        bits = self.polar_codes().nbits()
        if not bool(torch.all(self.input_scale == 1)):
            bits += self.input_scale.numel() * 16
        return bits + (self.lora_l1.numel() + self.lora_l2.numel()) * factor_bits

    def stored_bytes(self) -> int:
        """Bytes the weight's tensors take on disk (factors in `factor_dtype`, see `saved_tensors`); bias excluded."""
        return sum(t.numel() * t.element_size() for t in self.saved_tensors().values())

    def saved_tensors(self) -> dict[str, torch.Tensor]:
        """The stored tensors as `save_pretrained` writes them: the float32 factor parameters (trainable in
        memory) are cast to `factor_dtype`; they were rounded to it at compression, so nothing is lost
        unless they were trained since. Reloading casts them back to float32 parameters."""
        return {n: getattr(self, n).detach().to(self.factor_dtype) if n in ("lora_l1", "lora_l2") else getattr(self, n)
                for n in self.stored_names}

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"rank={self.rank}, amplitude_bits={self.amplitude_bits}, phase_bits={self.phase_bits}, "
                f"group_size={self.group_size}, transform={self.transform!r}, codebook={self.codebook!r}")


__all__ = ["FourierLinear", "fourier_layout", "is_fourier_linear", "STORED_TENSORS"]

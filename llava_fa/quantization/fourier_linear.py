"""`FourierLinear`: a Linear layer stored as PolarQuant codes + trainable complex low-rank factors.

``W = from_spectrum(Q~ + L1 @ L2, in_features, transform) @ diag(1 / d)`` with ``Q~`` the
dequantised PolarQuant codes (frozen), ``L1 (out, r)``, ``L2 (r, n_cols)`` complex factors
(trainable) and ``d`` the input-channel scale.

State dict (names and shapes are a pure function of the layer's sizes and settings, see
:func:`fourier_layout`, so an empty module built on ``meta`` loads a saved one as is):

=============  ===========================  ==========================================
name           shape                        dtype / role
=============  ===========================  ==========================================
codes          (packed_bytes,)              uint8 buffer, packed joint (amplitude, phase) codes
scales         (n_groups,)                  ``scale_dtype`` buffer, per-group amplitude scale
levels         (2^amplitude_bits,)          float16 buffer, codebook="lloyd" only: fitted amplitude levels
table          (2^(amp+phase bits), 2)      float16 buffer, codebook="vq" only: the 2-D code points
approx_error   ()                           float32 buffer, relative spatial error at compression
input_scale    (in,)                        float16 buffer, channel scale ``d`` (ones without calibration)
lowrank_l1     (out, r, 2)                  float32 Parameter, real/imag parts of L1
lowrank_l2     (r, n_cols, 2)               float32 Parameter, real/imag parts of L2
bias           (out,)                       Parameter (optional)
=============  ===========================  ==========================================

Saved folders hold the factors in ``factor_dtype`` (float16 by default); they reload as float32
parameters. Casting the module (``.to(torch.bfloat16)``, ``.half()``) changes only the bias: codes,
scales, levels, table and input scale stay as stored and the factors stay float32.

This file is shipped as Hub remote code (flat imports only).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Optional

import torch
from torch import nn

from ..fourier.approximate import FourierApproximation
from ..fourier.packing import packed_nbytes
from ..fourier.polar_quant import PolarCodes
from ..fourier.settings import CompressionSettings
from ..fourier.transform import from_spectrum, spectrum_columns
from ..kernels.dispatch import fourier_linear_forward

#: The trainable factor parameters (no "lora" in their names: transformers treats such keys as adapters).
FACTOR_NAMES: tuple[str, str] = ("lowrank_l1", "lowrank_l2")
#: Names used by folders saved before the rename, and their new names.
LEGACY_FACTOR_NAMES: dict[str, str] = {"lora_l1": "lowrank_l1", "lora_l2": "lowrank_l2"}


def fourier_layout(
    out_features: int, in_features: int, settings: CompressionSettings
) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Shapes and dtypes of the stored tensors: ``{name: (shape, dtype)}`` (pure function of its arguments)."""
    cols = spectrum_columns(in_features, settings.transform)
    count = out_features * cols
    group_len = count if settings.group_size is None else settings.group_size
    n_groups = math.ceil(count / group_len)
    n_codes = 1 << settings.code_bits
    layout: dict[str, tuple[tuple[int, ...], torch.dtype]] = {
        "codes": ((packed_nbytes(n_groups * group_len, settings.code_bits),), torch.uint8),
        "scales": ((n_groups,), settings.scale_dtype),
    }
    if settings.codebook == "lloyd":
        layout["levels"] = ((1 << settings.amplitude_bits,), torch.float16)
    if settings.codebook == "vq":
        layout["table"] = ((n_codes, 2), torch.float16)
    layout.update({
        "approx_error": ((), torch.float32),
        "input_scale": ((in_features,), torch.float16),
        "lowrank_l1": ((out_features, settings.rank, 2), torch.float32),
        "lowrank_l2": ((settings.rank, cols, 2), torch.float32),
    })
    return layout


def is_fourier_linear(module: nn.Module) -> bool:
    """True for a FourierLinear of any copy of this file (remote code can import it twice: no isinstance)."""
    return getattr(module, "is_fourier_linear", False) is True


class FourierLinear(nn.Module):
    """Drop-in `nn.Linear` replacement holding a Fourier approximation of its weight.

    Args:
        in_features, out_features, bias: as for `nn.Linear`.
        settings: the compression settings (fix the stored tensors' shapes, see :func:`fourier_layout`);
            `rank`, `amplitude_bits`, ... keyword `fields` override them.
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
        settings: Optional[CompressionSettings] = None,
        *,
        compute_dtype: Optional[torch.dtype] = None,
        device: Any = None,
        dtype: Optional[torch.dtype] = None,
        placeholder: bool = False,
        **fields: Any,
    ):
        super().__init__()
        settings = (settings or CompressionSettings()).replace(**fields)
        self.settings = settings
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.compute_dtype = compute_dtype
        self.n_cols = spectrum_columns(self.in_features, settings.transform)
        layout = fourier_layout(self.out_features, self.in_features, settings)
        self.stored_names = tuple(layout)
        for name, (shape, dt) in layout.items():
            if name in FACTOR_NAMES:
                self.register_parameter(name, nn.Parameter(torch.zeros(shape, dtype=dt, device=device)))
            else:
                self.register_buffer(name, torch.ones(shape, dtype=dt, device=device))
        self.bias = nn.Parameter(torch.zeros(self.out_features, dtype=dtype, device=device)) if bias else None
        if placeholder:
            self.weight = nn.Parameter(torch.empty(self.out_features, self.in_features, dtype=dtype, device="meta"),
                                       requires_grad=False)
        self._register_load_state_dict_pre_hook(_rename_legacy_keys, with_module=True)

    # The per-matrix settings, read from `self.settings` (never stored twice).
    rank = property(lambda self: self.settings.rank)
    amplitude_bits = property(lambda self: self.settings.amplitude_bits)
    phase_bits = property(lambda self: self.settings.phase_bits)
    group_size = property(lambda self: self.settings.group_size)
    transform = property(lambda self: self.settings.transform)
    codebook = property(lambda self: self.settings.codebook)
    scale_dtype = property(lambda self: self.settings.scale_dtype)
    factor_dtype = property(lambda self: self.settings.factor_dtype)

    # ----- building -------------------------------------------------------------------------
    @staticmethod
    def tensors_from_approximation(approx: FourierApproximation) -> dict[str, torch.Tensor]:
        """The stored tensors (by local name, without bias) of a core approximation, on its device."""
        quant = approx.quant
        device = quant.codes.device
        input_scale = approx.input_scale
        if input_scale is None:
            input_scale = torch.ones(approx.shape[1], dtype=torch.float16, device=device)
        optional = {"levels": quant.levels, "table": quant.table}
        return {
            "codes": quant.codes.contiguous(),
            "scales": quant.scales.contiguous(),
            **{k: v.contiguous() for k, v in optional.items() if v is not None},
            "approx_error": torch.tensor(float(approx.error), dtype=torch.float32, device=device),
            "input_scale": input_scale.to(device=device, dtype=torch.float16).contiguous(),
            "lowrank_l1": torch.view_as_real(approx.l1.to(torch.complex64)).contiguous(),
            "lowrank_l2": torch.view_as_real(approx.l2.to(torch.complex64)).contiguous(),
        }

    @classmethod
    def from_approximation(
        cls,
        approx: FourierApproximation,
        bias: Optional[torch.Tensor] = None,
        compute_dtype: Optional[torch.dtype] = None,
    ) -> FourierLinear:
        """A FourierLinear holding `approx` (codes, scales, factors), with optional `bias` ``(out,)``."""
        m, n = approx.shape
        quant = approx.quant
        settings = CompressionSettings(rank=approx.rank, amplitude_bits=quant.amplitude_bits,
                                       phase_bits=quant.phase_bits, group_size=quant.group_size,
                                       transform=approx.transform, codebook=quant.codebook,
                                       scale_dtype=quant.scales.dtype, factor_dtype=approx.factor_dtype)
        module = cls(n, m, bias=bias is not None, settings=settings, compute_dtype=compute_dtype,
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

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> FourierLinear:
        """Move like any module, but let dtype casts reach only the bias: codes, scales, levels, table and
        input scale keep their stored dtypes and values, and the factors stay float32 (`bf16_full_eval` casts
        models). Only the device that `fn` picks is applied to them."""
        held: dict[str, tuple[dict[str, Any], torch.Tensor]] = {}
        for name in self.stored_names:
            store = self._parameters if name in self._parameters else self._buffers
            held[name] = (store, store[name])
            store[name] = None  # nn.Module._apply skips None entries (keeps the key order)
        try:
            super()._apply(fn, recurse)
        finally:
            for name, (store, tensor) in held.items():
                store[name] = _moved_like(tensor, fn)
        return self

    # ----- reading --------------------------------------------------------------------------
    def polar_codes(self) -> PolarCodes:
        """The frozen quantized spectrum as the core's `PolarCodes` (views of the buffers)."""
        return PolarCodes(codes=self.codes, scales=self.scales, amplitude_bits=self.amplitude_bits,
                          phase_bits=self.phase_bits, group_size=self.group_size,
                          shape=(self.out_features, self.n_cols), codebook=self.codebook,
                          levels=getattr(self, "levels", None), table=getattr(self, "table", None))

    def spectrum(self) -> torch.Tensor:
        """Complex64 ``(out, n_cols)`` approximated half-spectrum ``Q~ + L1 @ L2`` (differentiable in the factors)."""
        approx = self.polar_codes().dequantize()
        if self.rank:
            approx = approx + torch.view_as_complex(self.lowrank_l1) @ torch.view_as_complex(self.lowrank_l2)
        return approx

    def dense_weight(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """The approximated weight, real ``(out, in)``, float32 unless `dtype` is given."""
        weight = from_spectrum(self.spectrum(), self.in_features, self.transform)
        weight = weight / self.input_scale.float().unsqueeze(0)
        return weight if dtype is None else weight.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W.T + bias`` computed in the frequency domain from the codes (see `llava_fa.kernels`)."""
        return fourier_linear_forward(self, x)

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
    def nbits(self) -> int:
        """Bits the weight takes on disk (``8 * stored_bytes()``): codes, scales, levels/table, input scale,
        compression error and the factors in `factor_dtype`; bias excluded."""
        return 8 * self.stored_bytes()

    def stored_bytes(self) -> int:
        """Bytes the weight's tensors take on disk (factors in `factor_dtype`, see `saved_tensors`); bias excluded."""
        return sum(t.numel() * t.element_size() for t in self.saved_tensors(warn=False).values())

    def saved_tensors(self, warn: bool = True) -> dict[str, torch.Tensor]:
        """The stored tensors as `save_pretrained` writes them: the float32 factor parameters are cast to
        `factor_dtype`. They were rounded to it at compression; if they were trained since and the cast
        changes them, a warning says so (`warn`) — save with `factor_dtype="float32"` to keep them exact."""
        out = {}
        for name in self.stored_names:
            tensor = getattr(self, name).detach()
            if name in FACTOR_NAMES and tensor.dtype != self.factor_dtype:
                rounded = tensor.to(self.factor_dtype)
                if warn and not torch.equal(rounded.to(tensor.dtype), tensor):
                    warnings.warn(f"FourierLinear: saving rounds trained factor {name!r} from {tensor.dtype} to "
                                  f"factor_dtype={self.factor_dtype}; pass "
                                  f"FourierApproxConfig(factor_dtype='float32') to keep trained factors exact.",
                                  stacklevel=2)
                    warn = False  # once per module
                tensor = rounded
            out[name] = tensor
        return out

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"rank={self.rank}, amplitude_bits={self.amplitude_bits}, phase_bits={self.phase_bits}, "
                f"group_size={self.group_size}, transform={self.transform!r}, codebook={self.codebook!r}")


def _moved_like(tensor: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """`tensor` on the device `fn` moves tensors to, with its own dtype and exact values (same Parameter object).

    `fn` runs on an empty probe of the tensor's dtype and device, so only the device it picks is read and
    the data is copied once.
    """
    with torch.no_grad():
        device = fn(torch.empty(0, dtype=tensor.dtype, device=tensor.device)).device
        if tensor.is_meta or device.type == "meta":
            moved = torch.empty(tensor.shape, dtype=tensor.dtype, device=device)
        else:
            moved = tensor.detach().to(device)
    if isinstance(tensor, nn.Parameter):
        tensor.data = moved
        return tensor
    return moved


def _rename_legacy_keys(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """`load_state_dict` of folders saved before the factor rename (`lora_l1` -> `lowrank_l1`)."""
    for old, new in LEGACY_FACTOR_NAMES.items():
        if prefix + old in state_dict and prefix + new not in state_dict:
            state_dict[prefix + new] = state_dict.pop(prefix + old)


__all__ = ["FACTOR_NAMES", "FourierLinear", "LEGACY_FACTOR_NAMES", "fourier_layout", "is_fourier_linear"]

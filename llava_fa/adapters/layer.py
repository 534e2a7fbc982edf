"""`FourierLoraLayer`: a peft `LoraLayer` whose adapter is the complex low-rank factors of a FourierLinear.

A `FourierLinear` computes ``y = x W^T + b`` with ``W = from_spectrum(Q~ + L1 L2) diag(1/d)``: frozen
PolarQuant codes ``Q~`` plus a complex rank-``r`` pair ``L1 (m, r)``, ``L2 (r, n_cols)``. This layer wraps
such a base for peft and trains a copy of the pair:

* adapter weights: ``fourier_l1[name]`` float32 ``(m, r, 2)`` and ``fourier_l2[name]`` float32
  ``(r, n_cols, 2)`` (real/imaginary parts in the last dim, the base's layout), ``r == base.rank``;
* initialisation: COPIES of the base's factors (``fourier_l1 = base L1 / scaling``), so the wrapped
  model starts exactly where the compressed model is (with ``scaling = lora_alpha / r == 1``, the
  default of `get_fourier_peft_model`, the copy is bit-exact; other scalings are exact up to one
  rounding of ``L1 / scaling``);
* forward: the base's codes + bias plus the adapter's low-rank term ``x from_spectrum(s L1 L2)^T``,
  through one rfft of the input, never a dense weight (`forward_with_factors`: the kernel's forward
  on a view of the base carrying the adapter's factors, so an unchanged adapter is bit-identical to
  the base); with active ``lora_dropout`` the low-rank term reads the dropped-out input
  (``fourier_linear_forward(base, x, include_lowrank=False) + lowrank_forward(base, dropout(x), ...)``);
* ``disable_adapters``: the base forward WITH its own factors = the shipped compressed model;
* ``merge``: the base's factors := ``scaling * fourier_l1``, ``fourier_l2`` (a copy, not a sum: each
  adapter is a complete low-rank part); ``unmerge`` restores the base's previous factors;
  ``merge_and_unload()`` therefore returns FourierLinear modules (no dense weight).

Only one adapter may be active (or merged) at a time, and DoRA / other LoRA variants, ``lora_bias``
and mixed-adapter batches (``adapter_names=``) are rejected with a ValueError.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from peft.tuners.lora import LoraConfig
from peft.tuners.lora.layer import LoraLayer, LoraVariant
from peft.tuners.tuners_utils import check_adapters_to_merge
from torch import nn

from ..fourier.transform import from_spectrum

#: Names of a FourierLinear's factor Parameters (the lead renamed them from ``lora_l1``/``lora_l2``).
FACTOR_NAMES: tuple[str, str] = ("lowrank_l1", "lowrank_l2")
_OLD_FACTOR_NAMES: tuple[str, str] = ("lora_l1", "lora_l2")


def base_factors(base: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The base FourierLinear's factor Parameters ``(L1 (m, r, 2), L2 (r, n_cols, 2))`` (real views)."""
    for names in (FACTOR_NAMES, _OLD_FACTOR_NAMES):
        if all(name in base._parameters for name in names):
            return base._parameters[names[0]], base._parameters[names[1]]
    raise TypeError(f"{type(base).__name__} has no low-rank factor parameters {FACTOR_NAMES}; "
                    f"FourierLoraLayer wraps FourierLinear modules only.")


def _kernel_forward():
    """`llava_fa.kernels.fourier_linear_forward` when the kernels package provides it, else None."""
    try:
        from ..kernels import fourier_linear_forward
    except ImportError:
        return None
    return fourier_linear_forward


def frozen_forward(base: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The base FourierLinear WITHOUT its low-rank part: codes + bias, output in ``x.dtype``, shape ``(..., m)``."""
    kernel = _kernel_forward()
    if kernel is not None:
        return kernel(base, x, include_lowrank=False)
    compute = base.compute_dtype or x.dtype
    weight = from_spectrum(base.polar_codes().dequantize(), base.in_features, base.transform)
    weight = (weight / base.input_scale.float().unsqueeze(0)).to(compute)
    bias = None if base.bias is None else base.bias.to(compute)
    return F.linear(x.to(compute), weight, bias).to(x.dtype)


def lowrank_forward(base: nn.Module, x: torch.Tensor, l1: torch.Tensor, l2: torch.Tensor) -> torch.Tensor:
    """``x W_lr^T`` with ``W_lr = from_spectrum(L1 L2, n, base.transform) diag(1/d)``: float32 ``(..., m)``.

    ``l1`` ``(m, r, 2)``, ``l2`` ``(r, n_cols, 2)`` real views; differentiable in ``x``, ``l1`` and ``l2``.
    ``"rfft"``: one rfft of ``x / d`` and ``2 r`` real dot products per token and row
    (`llava_fa.kernels.spectral.lowrank_term`); ``"rfft2"`` mixes rows and uses the dense low-rank weight.
    Computed in float32 with autocast off.
    """
    n, m = base.in_features, base.out_features
    lead = x.shape[:-1]
    with torch.autocast(device_type=x.device.type, enabled=False):
        flat = x.reshape(-1, n).float()
        if base.transform == "rfft":
            from ..kernels.spectral import lowrank_term, spectral_input

            out = lowrank_term(spectral_input(flat, base.input_scale), l1.float(), l2.float(), n)
        else:
            spectrum = torch.view_as_complex(l1.float().contiguous()) @ torch.view_as_complex(l2.float().contiguous())
            weight = from_spectrum(spectrum, n, base.transform) / base.input_scale.float().unsqueeze(0)
            out = flat @ weight.T
    return out.reshape(*lead, m)


class _WithFactors:
    """Read-only view of a FourierLinear whose low-rank factors are replaced by ``(l1, l2)``.

    Every other attribute (codes, scales, tables, sizes, bias, settings) is the base's own, so
    `fourier_linear_forward` (duck-typed on its module argument) computes the base's forward with these
    factors by exactly the same operations as for the base itself.
    """

    __slots__ = ("_base", "lowrank_l1", "lowrank_l2")

    def __init__(self, base: nn.Module, l1: torch.Tensor, l2: torch.Tensor):
        object.__setattr__(self, "_base", base)
        object.__setattr__(self, "lowrank_l1", l1)
        object.__setattr__(self, "lowrank_l2", l2)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)


def _fast_transforms() -> tuple[str, ...]:
    try:
        from ..kernels.dispatch import FAST_TRANSFORMS
    except ImportError:
        return ()
    return tuple(FAST_TRANSFORMS)


def forward_with_factors(base: nn.Module, x: torch.Tensor, l1: torch.Tensor, l2: torch.Tensor) -> torch.Tensor:
    """The base FourierLinear's forward with factors ``(l1, l2)`` in place of its own: output in ``x.dtype``.

    Runs `llava_fa.kernels.fourier_linear_forward` on a view of the base carrying these factors, so factors
    equal to the base's give a result bit-identical to the base's own forward (and a merged layer equals the
    unmerged one). Differentiable in ``x``, ``l1``, ``l2`` (and the bias). Transforms the kernels read
    through the dense weight (``"rfft2"``) and a missing kernels package fall back to `frozen_forward` +
    `lowrank_forward` (equal to float32 rounding).
    """
    kernel = _kernel_forward()
    if kernel is not None and base.transform in _fast_transforms():
        return kernel(_WithFactors(base, l1, l2), x)
    result = frozen_forward(base, x)
    return result + lowrank_forward(base, x, l1, l2).to(result.dtype)


def real_lowrank(base: nn.Module, l1: torch.Tensor, l2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact real form of the low-rank part: float32 ``A (m, 2r)``, ``B (2r, n)`` with
    ``A @ B == from_spectrum(L1 L2, n, transform) diag(1/d)`` (to float32 rounding).

    Applies the synthesis to the factors row by row (``Re(z G) = from_spectrum(z)``) instead of building the
    ``(n_cols, n)`` synthesis matrix ``G``; same result as `llava_fa.fourier.approximate.lowrank_to_real`.
    """
    n = base.in_features
    a = torch.view_as_complex(l1.detach().float().contiguous())
    b = torch.view_as_complex(l2.detach().float().contiguous())
    if base.transform == "rfft":
        def synth(z: torch.Tensor) -> torch.Tensor:
            return from_spectrum(z, n, "rfft")
    else:
        a = torch.fft.ifft(a, dim=0, norm="ortho")

        def synth(z: torch.Tensor) -> torch.Tensor:
            return torch.fft.irfft(z, n=n, dim=-1, norm="ortho")
    # Re(a (b G)) = Re(a) Re(b G) - Im(a) Im(b G), Re(b G) = synth(b), Im(b G) = Re(-i b G) = synth(-i b)
    left = torch.cat([a.real, -a.imag], dim=1)
    right = torch.cat([synth(b), synth(-1j * b)], dim=0) / base.input_scale.float().unsqueeze(0)
    return left, right


class FourierLoraLayer(nn.Module, LoraLayer):
    """peft LoRA layer for a FourierLinear base: the adapter is a trainable copy of its complex factors.

    Built by peft (``LoraConfig._register_custom_module({FourierLinear: FourierLoraLayer})``) with
    ``r == base.rank``; see the module docstring for the forward, merge and scaling contracts.
    Input ``(..., in_features)``; output ``(..., out_features)`` in the dtype of the base's output.
    """

    adapter_layer_names: tuple[str, ...] = ("fourier_l1", "fourier_l2")

    def __init__(self, base_layer: nn.Module, adapter_name: str, config: LoraConfig, r: int = 0,
                 lora_alpha: int = 1, **kwargs: Any) -> None:
        super().__init__()
        LoraLayer.__init__(self, base_layer)
        self.fourier_l1 = nn.ParameterDict({})
        self.fourier_l2 = nn.ParameterDict({})
        self._replaced_factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.fan_in_fan_out = False
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, r, lora_alpha=lora_alpha, config=config)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> FourierLoraLayer:
        """Move like any module, but keep the adapter factors float32: dtype casts (``.to(torch.bfloat16)``,
        ``bf16_full_eval``) reach the rest, only the device that `fn` picks is applied to the factors."""
        held = []
        for container in (self.fourier_l1, self.fourier_l2):
            for key, param in list(container._parameters.items()):
                held.append((container, key, param))
                container._parameters[key] = None  # nn.Module._apply skips None entries
        try:
            super()._apply(fn, recurse)
        finally:
            for container, key, param in held:
                if param is not None and not param.is_meta:
                    with torch.no_grad():
                        device = fn(param.detach()[:0]).device
                    if device != param.device:
                        param.data = param.data.to(device)
                container._parameters[key] = param
        return self

    # ----- peft hooks ------------------------------------------------------------------------
    def _get_in_out_features(self, module: nn.Module) -> tuple[int, int]:
        return int(module.in_features), int(module.out_features)

    def _get_base_layer_device_and_dtype(self, base_layer: nn.Module):
        # A FourierLinear has no `weight`: put the adapter beside the codes, in float32.
        return base_layer.codes.device, torch.float32

    def resolve_lora_variant(self, *, config: LoraConfig, **kwargs: Any) -> Optional[LoraVariant]:
        requested = [f.name for f in dataclasses.fields(config)
                     if f.metadata.get("is_lora_variant") and getattr(config, f.name)]
        if requested:
            raise ValueError(f"FourierLoraLayer does not support the LoRA variant(s) {requested}; "
                             f"set them to their defaults in the LoraConfig.")
        return None

    def update_layer(self, adapter_name: str, r: int, lora_alpha: float, config: LoraConfig, **kwargs: Any) -> None:
        """Add adapter `adapter_name`: a copy of the base's factors (r must equal the base's rank)."""
        base = self.get_base_layer()
        if config.init_lora_weights is not True:
            raise ValueError(f"FourierLoraLayer initialises its adapter from the base's factors; "
                             f"init_lora_weights={config.init_lora_weights!r} is not supported (use True).")
        if config.lora_bias:
            raise ValueError("FourierLoraLayer does not support lora_bias=True; train the bias with `bias=` or "
                             "modules_to_save instead.")
        if int(r) != int(base.rank) or int(r) <= 0:
            raise ValueError(f"FourierLoraLayer: r={r} must equal the base FourierLinear's rank {base.rank} (> 0); "
                             f"use llava_fa.get_fourier_peft_model, which sets r/rank_pattern from the model.")
        self.resolve_lora_variant(config=config)
        self.r[adapter_name] = int(r)
        self.lora_alpha[adapter_name] = lora_alpha
        self.scaling[adapter_name] = (lora_alpha / (r ** 0.5)) if config.use_rslora else (lora_alpha / r)
        self.use_rslora[adapter_name] = bool(config.use_rslora)
        self.use_dora[adapter_name] = False
        self.lora_bias[adapter_name] = False
        dropout = nn.Dropout(p=config.lora_dropout) if config.lora_dropout > 0.0 else nn.Identity()
        self.lora_dropout.update(nn.ModuleDict({adapter_name: dropout}))
        l1, l2 = base_factors(base)
        scaling = float(self.scaling[adapter_name])
        with torch.no_grad():
            init_l1 = l1.detach().float().clone()
            init_l1 = init_l1 / scaling if scaling != 1.0 else init_l1
            init_l2 = l2.detach().float().clone()
            if adapter_name in self.fourier_l1:
                # Re-adding an existing adapter (peft's load_adapter, Trainer resume): keep the Parameter
                # objects, which an optimizer may already hold, and copy the values in.
                self.fourier_l1[adapter_name].copy_(init_l1)
                self.fourier_l2[adapter_name].copy_(init_l2)
            else:
                self.fourier_l1[adapter_name] = nn.Parameter(init_l1)
                self.fourier_l2[adapter_name] = nn.Parameter(init_l2)
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    def _check_forward_args(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("adapter_names") is not None:
            raise ValueError("FourierLoraLayer does not support mixed-adapter batches (`adapter_names=`).")

    # ----- math ------------------------------------------------------------------------------
    def _active(self) -> Optional[str]:
        names = [a for a in self.active_adapters if a in self.fourier_l1]
        if len(names) > 1:
            raise ValueError(f"FourierLoraLayer: adapters {names} are active at once; each one is a complete "
                             f"low-rank part, activate one (`set_adapter`).")
        return names[0] if names else None

    def adapter_factors(self, adapter_name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The adapter's effective factors ``(scaling * L1, L2)`` as real views (differentiable)."""
        scaling = float(self.scaling[adapter_name])
        l1 = self.fourier_l1[adapter_name]
        return (l1 if scaling == 1.0 else l1 * scaling), self.fourier_l2[adapter_name]

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        self._check_forward_args(x, *args, **kwargs)
        kwargs.pop("adapter_names", None)
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_layer(x, *args, **kwargs)
        active = None if self.merged else self._active()
        if active is None:
            return self.base_layer(x, *args, **kwargs)
        base = self.get_base_layer()
        l1, l2 = self.adapter_factors(active)
        dropout = self.lora_dropout[active]
        if isinstance(dropout, nn.Dropout) and dropout.training and dropout.p > 0:
            result = frozen_forward(base, x)
            return result + lowrank_forward(base, dropout(x), l1, l2).to(result.dtype)
        return forward_with_factors(base, x, l1, l2)

    def get_delta_weight(self, adapter: str) -> torch.Tensor:
        """Dense float32 ``(m, n)`` change of the weight the adapter makes (its low-rank part minus the base's)."""
        base = self.get_base_layer()
        a, b = real_lowrank(base, *self.adapter_factors(adapter))
        a0, b0 = real_lowrank(base, *base_factors(base))
        return a @ b - a0 @ b0

    def merge(self, safe_merge: bool = False, adapter_names: Optional[list[str]] = None) -> None:
        """Copy the adapter's factors (``scaling * L1``, ``L2``) into the base; the previous ones are kept for
        `unmerge`. Only one adapter can be merged."""
        adapter_names = check_adapters_to_merge(self, adapter_names)
        adapter_names = [a for a in adapter_names if a in self.fourier_l1]
        if not adapter_names:
            return
        if len(adapter_names) > 1 or self.merged:
            raise ValueError(f"FourierLoraLayer: cannot merge {adapter_names} (merged already: "
                             f"{self.merged_adapters}); each adapter replaces the base's factors, merge one.")
        name = adapter_names[0]
        base = self.get_base_layer()
        l1, l2 = base_factors(base)
        new_l1, new_l2 = (t.detach() for t in self.adapter_factors(name))
        if safe_merge and not (torch.isfinite(new_l1).all() and torch.isfinite(new_l2).all()):
            raise ValueError(f"NaNs detected in the factors of adapter {name!r}; nothing was merged.")
        self._replaced_factors[name] = (l1.detach().clone(), l2.detach().clone())
        with torch.no_grad():
            l1.copy_(new_l1)
            l2.copy_(new_l2)
        self.merged_adapters.append(name)

    def unmerge(self) -> None:
        """Restore the base's factors saved by `merge`."""
        if not self.merged:
            warnings.warn("Already unmerged. Nothing to do.", stacklevel=2)
            return
        base = self.get_base_layer()
        l1, l2 = base_factors(base)
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            old_l1, old_l2 = self._replaced_factors.pop(name)
            with torch.no_grad():
                l1.copy_(old_l1)
                l2.copy_(old_l2)

    def __repr__(self) -> str:
        return "lora." + super().__repr__()


__all__ = ["FourierLoraLayer", "FACTOR_NAMES", "base_factors", "forward_with_factors", "frozen_forward", "lowrank_forward",
           "real_lowrank"]

"""`FourierApproxHfQuantizer`: transformers wiring of the Fourier Approximation (like transformers' quantizer_*.py).

Importing this module registers `FourierApproxConfig` and the quantizer under
`quant_method="fourier_approx"` (guarded: remote code may import a second copy). The shipped
LLaVA-FA configuration file imports it, so a saved quantized folder loads with
`trust_remote_code=True` where `llava_fa` is not installed.

This file is shipped as Hub remote code (flat imports only).
"""

from __future__ import annotations

import os
from typing import Any, Optional

import torch
from transformers.quantizers import register_quantization_config, register_quantizer
from transformers.quantizers.auto import AUTO_QUANTIZATION_CONFIG_MAPPING, AUTO_QUANTIZER_MAPPING
from transformers.quantizers.base import HfQuantizer
from transformers.quantizers.quantizers_utils import get_module_from_name
from transformers.utils import logging

from .fourier_config import QUANT_METHOD, FourierApproxConfig
from .fourier_integration import (
    PROGRESS_ATTR,
    FourierQuantize,
    check_prequantized_layout,
    dequantize_model,
    open_calibration,
    replace_with_fourier_linear,
    unloaded_modules,
)
from .fourier_linear import LEGACY_FACTOR_NAMES, is_fourier_linear
from .native_remote_code import ship_with_remote_code

logger = logging.get_logger(__name__)


class FourierApproxHfQuantizer(HfQuantizer):
    """Quantize-on-load and pre-quantized loading of `FourierLinear` modules (see `fourier_integration`)."""

    requires_calibration = False
    quantization_config: FourierApproxConfig

    def __init__(self, quantization_config: FourierApproxConfig, **kwargs: Any):
        super().__init__(quantization_config, **kwargs)
        self.modules_to_not_convert: list[str] = []

    def is_serializable(self) -> bool:
        return True

    @property
    def is_trainable(self) -> bool:
        return True

    @property
    def is_qat_trainable(self) -> bool:
        return True

    @property
    def is_compileable(self) -> bool:
        """The forward is one custom op with a fake implementation: `generate` may compile decoding."""
        return True

    def update_device_map(self, device_map: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
        """Compress on this process's GPU when there is one (transformers would otherwise load to the CPU): the
        local rank's device under torchrun / accelerate, else the current device."""
        if device_map is None:
            if torch.cuda.is_available():
                device_map = {"": int(os.environ.get("LOCAL_RANK", torch.cuda.current_device()))}
            else:
                device_map = {"": "cpu"}
        return device_map

    def param_element_size(self, model, param_name: str, param: torch.Tensor) -> float:
        # The placeholder weight is never materialised as such: count it as 0 bytes for device_map="auto".
        if self.param_needs_quantization(model, param_name):
            return 0
        return param.element_size()

    def param_needs_quantization(self, model, param_name: str, **kwargs: Any) -> bool:
        if self.pre_quantized:
            return False
        module, tensor_name = get_module_from_name(model, param_name)
        return tensor_name == "weight" and is_fourier_linear(module) and "weight" in module._parameters

    def get_state_dict_and_metadata(self, model) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """What `save_pretrained` writes: the model's state dict with each FourierLinear's factors in its
        `factor_dtype` (float16 by default: half the bytes of the float32 training copies)."""
        state = model.state_dict()
        for name, module in model.named_modules():
            if is_fourier_linear(module):
                prefix = f"{name}." if name else ""
                state.update({prefix + key: tensor for key, tensor in module.saved_tensors().items()})
        return state, {}

    def get_quantize_ops(self) -> FourierQuantize:
        return FourierQuantize(self)

    def get_weight_conversions(self) -> list[Any]:
        """Load folders saved before the factor rename: `*.lora_l1` / `*.lora_l2` -> `*.lowrank_l1` / `*.lowrank_l2`."""
        from transformers.core_model_loading import WeightRenaming

        legacy = [WeightRenaming(old, new) for old, new in LEGACY_FACTOR_NAMES.items()] if self.pre_quantized else []
        return [*super().get_weight_conversions(), *legacy]

    def _process_model_before_weight_loading(self, model, keep_in_fp32_modules: Optional[list[str]] = None,
                                             dtype: Optional[torch.dtype] = None,
                                             checkpoint_files: Optional[list[str]] = None, **kwargs: Any) -> None:
        keep_in_fp32_modules = keep_in_fp32_modules or getattr(model, "_keep_in_fp32_modules", None)
        self.modules_to_not_convert = self.get_modules_to_not_convert(
            model, self.quantization_config.modules_to_not_convert, keep_in_fp32_modules, add_default_skips=True
        )
        convert = replace_with_fourier_linear(model, self.quantization_config, self.modules_to_not_convert,
                                              pre_quantized=self.pre_quantized, dtype=dtype)
        if self.pre_quantized:
            check_prequantized_layout(model, checkpoint_files)
        else:
            self.calibration_file = open_calibration(self.quantization_config, convert)
            from transformers.utils.logging import tqdm  # honours HF_HUB_DISABLE_PROGRESS_BARS

            model.__dict__[PROGRESS_ATTR] = tqdm(total=len(convert), desc="Fourier-compressing", unit="module")

    def _process_model_after_weight_loading(self, model, **kwargs: Any):
        progress = model.__dict__.pop(PROGRESS_ATTR, None)
        if progress is not None:
            progress.close()
        missing = unloaded_modules(model)
        if missing:
            raise ValueError(f"FourierApprox: the checkpoint has no dense weight for {len(missing)} module(s) to "
                             f"compress (e.g. {missing[:3]}); check that the checkpoint matches the model class.")
        _forget_legacy_renamings(model)
        ship_with_remote_code(model.config)  # native classes (Qwen2, CLIP): saved folders load via remote code
        return model

    def _dequantize(self, model, dtype: Optional[torch.dtype] = None):
        return dequantize_model(model, dtype)


def _forget_legacy_renamings(model) -> None:
    """Saving reverts the renamings a load used: drop the legacy factor ones so a re-save writes the new names."""
    conversions = getattr(model, "_weight_conversions", None)
    if conversions:
        legacy = [[old] for old in LEGACY_FACTOR_NAMES]
        model._weight_conversions = [c for c in conversions if getattr(c, "_original_source_patterns", None) not in legacy]


def register_fourier_approx() -> None:
    """Register the config and the quantizer with transformers (no-op when already registered)."""
    if QUANT_METHOD not in AUTO_QUANTIZATION_CONFIG_MAPPING:
        register_quantization_config(QUANT_METHOD)(FourierApproxConfig)
    if QUANT_METHOD not in AUTO_QUANTIZER_MAPPING:
        register_quantizer(QUANT_METHOD)(FourierApproxHfQuantizer)


register_fourier_approx()

__all__ = ["FourierApproxHfQuantizer", "register_fourier_approx"]

"""Fourier-factor adapters through peft: the trainable part of a compressed model is its complex factors.

* `FourierLoraLayer` (:mod:`.layer`): a peft `LoraLayer` for FourierLinear bases.
* `get_fourier_peft_model`, `fourier_lora_config`, `load_fourier_adapter`, `export_real_lora`,
  `dequantize_codes_only` (:mod:`.api`).
* `register_fourier_layers`, `fourier_linear_classes`, `unused_vision_modules` (:mod:`.registration`).
"""

from .api import (
    dequantize_codes_only,
    export_real_lora,
    fourier_lora_config,
    get_fourier_peft_model,
    load_fourier_adapter,
)
from .layer import FourierLoraLayer
from .registration import fourier_linear_classes, register_fourier_layers, unused_vision_modules

__all__ = [
    "FourierLoraLayer",
    "dequantize_codes_only",
    "export_real_lora",
    "fourier_linear_classes",
    "fourier_lora_config",
    "get_fourier_peft_model",
    "load_fourier_adapter",
    "register_fourier_layers",
    "unused_vision_modules",
]

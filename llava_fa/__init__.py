"""llava-fa: Fourier-domain compression of LLaVA-style multimodal models, native to transformers.

* :mod:`llava_fa.fourier`: the algorithm in plain torch (Algorithms 1-3 of the paper); importing it
  does not import transformers.
* :mod:`llava_fa.modeling`: ``LlavaFAConfig``, ``LlavaFAForConditionalGeneration``, ``LlavaFAProcessor``.
* :mod:`llava_fa.quantization`: ``FourierApproxConfig`` (``quant_method="fourier_approx"``),
  ``FourierLinear``, calibration and the compression report.
* :mod:`llava_fa.adapters`: Fourier-factor adapters through peft (``get_fourier_peft_model``, ...).
* :mod:`llava_fa.training`: LLaVA data, collator, stages, ``FourierTrainer``.
* :mod:`llava_fa.evaluation`, :mod:`llava_fa.hub`, :mod:`llava_fa.cli`: benchmarks, cards, push, ``llava-fa``.
* :mod:`llava_fa.testing`: tiny models and isolation helpers for tests (not public API).

Names are imported lazily: ``import llava_fa`` is cheap, and the first access to a name from
``modeling`` or ``quantization`` imports that subpackage, which registers the Auto classes and
the quantization method with transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    "PAPER_SETTINGS": "llava_fa.fourier",
    "Calibration": "llava_fa.fourier",
    "CompressionSettings": "llava_fa.fourier",
    "FourierApproximation": "llava_fa.fourier",
    "fourier_approximate": "llava_fa.fourier",
    "fourier_linear_forward": "llava_fa.kernels",
    "LlavaFAConfig": "llava_fa.modeling",
    "LlavaFAForConditionalGeneration": "llava_fa.modeling",
    "LlavaFAModel": "llava_fa.modeling",
    "LlavaFAProcessor": "llava_fa.modeling",
    "CompressionReport": "llava_fa.quantization",
    "FourierApproxConfig": "llava_fa.quantization",
    "FourierApproxHfQuantizer": "llava_fa.quantization",
    "FourierLinear": "llava_fa.quantization",
    "calibrate": "llava_fa.quantization",
    "compression_report": "llava_fa.quantization",
    "dequantize_model": "llava_fa.quantization",
    "get_fourier_peft_model": "llava_fa.adapters",
    "load_fourier_adapter": "llava_fa.adapters",
    "export_real_lora": "llava_fa.adapters",
    "dequantize_codes_only": "llava_fa.adapters",
    "FourierTrainer": "llava_fa.training.trainer_support",
    "fourier_training_arguments": "llava_fa.training.trainer_support",
    "train_factors_only": "llava_fa.training.trainer_support",
    "LlavaCollator": "llava_fa.training.collator",
    "load_llava_dataset": "llava_fa.training.data",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'llava_fa' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

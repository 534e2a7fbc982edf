"""llava-fa: Fourier-domain compression of LLaVA-style multimodal models, native to transformers.

* :mod:`llava_fa.fourier`: the algorithm in plain torch (Algorithms 1-3 of the paper).
* :mod:`llava_fa.modeling`: ``LlavaFAConfig``, ``LlavaFAForConditionalGeneration``, ``LlavaFAProcessor``.
* :mod:`llava_fa.quantization`: ``FourierApproxConfig`` (``quant_method="fourier_approx"``),
  ``FourierLinear``, calibration and the compression report.

Importing the package registers the Auto classes and the quantization method with transformers.
"""

from .fourier import PAPER_SETTINGS, Calibration, FourierApproximation, fourier_approximate
from .modeling import (
    LlavaFAConfig,
    LlavaFAForConditionalGeneration,
    LlavaFAModel,
    LlavaFAProcessor,
    build_tiny_llava_fa,
    build_tiny_processor,
    build_tiny_tokenizer,
    save_tiny_llava_fa,
)
from .quantization import (
    CompressionReport,
    FourierApproxConfig,
    FourierApproxHfQuantizer,
    FourierLinear,
    calibrate,
    compression_report,
    dequantize_model,
)

__version__ = "0.1.0"

__all__ = [
    "PAPER_SETTINGS",
    "Calibration",
    "CompressionReport",
    "FourierApproxConfig",
    "FourierApproxHfQuantizer",
    "FourierApproximation",
    "FourierLinear",
    "LlavaFAConfig",
    "LlavaFAForConditionalGeneration",
    "LlavaFAModel",
    "LlavaFAProcessor",
    "__version__",
    "build_tiny_llava_fa",
    "build_tiny_processor",
    "build_tiny_tokenizer",
    "calibrate",
    "compression_report",
    "dequantize_model",
    "fourier_approximate",
    "save_tiny_llava_fa",
]

"""transformers quantization backend of the Fourier Approximation (`quant_method="fourier_approx"`).

Importing this package registers `FourierApproxConfig` and `FourierApproxHfQuantizer` with transformers.
Modules: `fourier_config` (the config), `fourier_linear` (the layer), `fourier_integration` (model
surgery + load-time op), `fourier_quantizer` (HfQuantizer wiring + registration),
`native_remote_code` (remote code for quantized native classes), `report` (compression report).
Calibration lives in the core: `llava_fa.fourier.calibration` (re-exported here).
"""

from ..fourier.calibration import calibrate, collect_statistics, save_statistics
from .fourier_config import FourierApproxConfig
from .fourier_integration import dequantize_model
from .fourier_linear import FourierLinear, fourier_layout, is_fourier_linear
from .fourier_quantizer import FourierApproxHfQuantizer, register_fourier_approx
from .report import CompressionReport, ModuleReport, compression_report

__all__ = [
    "CompressionReport",
    "FourierApproxConfig",
    "FourierApproxHfQuantizer",
    "FourierLinear",
    "ModuleReport",
    "calibrate",
    "collect_statistics",
    "compression_report",
    "dequantize_model",
    "fourier_layout",
    "is_fourier_linear",
    "register_fourier_approx",
    "save_statistics",
]

"""The Fourier Approximation core (plain torch, no transformers import).

Modules, one concept each: :mod:`.settings` (the per-matrix settings, defaults and checks),
:mod:`.transform` (real <-> half-spectrum and its error weights), :mod:`.svd` (FourierSVD,
Algorithm 2), :mod:`.polar_quant` (PolarQuant, Algorithm 3), :mod:`.packing` (bit-packing),
:mod:`.calibration` (diagonal weights; collecting, saving and reading statistics),
:mod:`.approximate` (Algorithm 1 and its result), :mod:`.error_feedback` (GPTQ-style sequential rounding
in the rfft basis with the input second moment: same storage, lower output error; used by
``fourier_approximate`` when ``CompressionSettings(error_feedback=True)`` and the calibration holds a
``second_moment``).
"""

from .approximate import PAPER_SETTINGS, FourierApproximation, fourier_approximate, lowrank_to_real
from .calibration import (
    Calibration,
    CalibrationFile,
    calibrate,
    channel_scale,
    collect_statistics,
    input_power_spectrum,
    save_statistics,
)
from .error_feedback import approximate_with_feedback, error_feedback_quantize, input_second_moment, spectral_hessian
from .packing import pack_codes, unpack_codes
from .polar_quant import PolarCodes, gaussian_table, polar_quantize, refit_codes
from .settings import TABLE_FITS, CompressionSettings
from .svd import fourier_svd
from .transform import from_spectrum, spectrum_columns, spectrum_weights, to_spectrum

__all__ = [
    "TABLE_FITS",
    "gaussian_table",
    "refit_codes",
    "PAPER_SETTINGS",
    "Calibration",
    "CalibrationFile",
    "CompressionSettings",
    "FourierApproximation",
    "PolarCodes",
    "approximate_with_feedback",
    "calibrate",
    "channel_scale",
    "collect_statistics",
    "error_feedback_quantize",
    "fourier_approximate",
    "fourier_svd",
    "from_spectrum",
    "input_power_spectrum",
    "input_second_moment",
    "lowrank_to_real",
    "pack_codes",
    "polar_quantize",
    "save_statistics",
    "spectral_hessian",
    "spectrum_columns",
    "spectrum_weights",
    "to_spectrum",
    "unpack_codes",
]

"""The Fourier Approximation core (plain torch, no transformers import).

Modules, one concept each: :mod:`.settings` (the per-matrix settings, defaults and checks),
:mod:`.transform` (real <-> half-spectrum and its error weights), :mod:`.svd` (FourierSVD,
Algorithm 2), :mod:`.polar_quant` (PolarQuant, Algorithm 3), :mod:`.packing` (bit-packing),
:mod:`.calibration` (diagonal weights; collecting, saving and reading statistics),
:mod:`.approximate` (Algorithm 1 and its result).
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
from .packing import pack_codes, unpack_codes
from .polar_quant import PolarCodes, polar_quantize
from .settings import CompressionSettings
from .svd import fourier_svd
from .transform import from_spectrum, spectrum_columns, spectrum_weights, to_spectrum

__all__ = [
    "PAPER_SETTINGS",
    "Calibration",
    "CalibrationFile",
    "CompressionSettings",
    "FourierApproximation",
    "PolarCodes",
    "calibrate",
    "channel_scale",
    "collect_statistics",
    "fourier_approximate",
    "fourier_svd",
    "from_spectrum",
    "input_power_spectrum",
    "lowrank_to_real",
    "pack_codes",
    "polar_quantize",
    "save_statistics",
    "spectrum_columns",
    "spectrum_weights",
    "to_spectrum",
    "unpack_codes",
]

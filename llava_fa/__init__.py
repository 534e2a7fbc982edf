"""llava-fa: Fourier-domain compression of LLaVA-style multimodal models."""

from .fourier import PAPER_SETTINGS, Calibration, FourierApproximation, fourier_approximate

__version__ = "0.1.0"

__all__ = ["PAPER_SETTINGS", "Calibration", "FourierApproximation", "fourier_approximate", "__version__"]

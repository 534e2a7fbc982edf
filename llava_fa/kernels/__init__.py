"""Fast FourierLinear forward: frequency-domain torch path (CPU), Triton LUT kernels (CUDA), one entry point.

``fourier_linear_forward(module, x, *, include_lowrank=True)`` is the API; see ``dispatch``.
Modules (shipped flat as remote code): ``spectral``, ``triton_lut``, ``spectral_ops``, ``dispatch``.
"""

from .dispatch import fourier_linear_forward

__all__ = ["fourier_linear_forward"]

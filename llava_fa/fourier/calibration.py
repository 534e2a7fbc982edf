"""Diagonal calibration: squared-error weights for spectrum rows and columns.

The calibrated objective of Algorithm 1 is ``sum_ik row_i * col_k * w_k * |E~_ik|^2``
with ``w_k`` the half-spectrum weights of :mod:`.transform`. For a linear layer
``y = W x`` the output error ``E[|E x|^2]`` is approximated by this with
``col_k = E|rfft(x)_k|^2`` (the mean input power spectrum: exact when inputs are
stationary, i.e. their covariance is circulant) and ``row_i`` = ones or the mean
squared output gradient (diagonal Fisher). FourierSVD uses the square roots as
``D_row`` / ``D_col`` (the paper's RowAverage / ColAverage of ``C``).

Measured on real MiniLM activations the spectral column weights barely move the
output error (inputs are far from stationary: a few channels carry outliers).
The spatial ``channel`` weights do: ``channel_j = E[x_j^2]`` (mean input power
per input channel) makes the compressor work on ``W diag(d)`` with
``d = channel^(alpha/2)`` (normalised to geometric mean 1, stored in float16) and
rebuild ``W = W' diag(1/d)``, so error lands where inputs are small (the
activation-aware scaling of AWQ). This is the default calibration collected by
``llava_fa.calibrate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .transform import Transform, spectrum_columns

#: Relative floor for weights before taking 1 / sqrt: dead frequencies stay invertible.
WEIGHT_FLOOR = 1e-6


@dataclass
class Calibration:
    """Squared-error weights, all optional and non-negative.

    ``row``: ``(m,)`` over output rows; ``col``: ``(n_cols,)`` over spectrum columns;
    ``channel``: ``(n,)`` spatial input power per input channel, used through
    ``d = channel^(channel_alpha / 2)`` (``channel_alpha`` in [0, 1]).
    """

    row: Optional[torch.Tensor] = None
    col: Optional[torch.Tensor] = None
    channel: Optional[torch.Tensor] = None
    channel_alpha: float = 0.5

    @classmethod
    def from_matrix(cls, matrix: torch.Tensor) -> "Calibration":
        """Paper form: ``D_row = RowAverage(C)``, ``D_col = ColAverage(C)`` of a ``(m, n_cols)`` ``C``."""
        c = matrix.to(torch.float32)
        return cls(row=c.mean(dim=1), col=c.mean(dim=0))

    def validate(self, rows: int, cols: int, in_features: int) -> None:
        """Raise ``ValueError`` if a weight vector has the wrong shape or bad values."""
        if not 0.0 <= float(self.channel_alpha) <= 1.0:
            raise ValueError(f"calibration.channel_alpha must lie in [0, 1], got {self.channel_alpha!r}")
        checks = (("row", self.row, rows), ("col", self.col, cols), ("channel", self.channel, in_features))
        for name, vec, size in checks:
            if vec is None:
                continue
            if not isinstance(vec, torch.Tensor) or vec.dim() != 1 or vec.numel() != size:
                got = tuple(vec.shape) if isinstance(vec, torch.Tensor) else type(vec).__name__
                raise ValueError(f"calibration.{name} must be a 1-D tensor of length {size}, got {got}")
            if not torch.isfinite(vec).all() or (vec < 0).any():
                raise ValueError(f"calibration.{name} must be finite and non-negative")
            if not (vec > 0).any():
                raise ValueError(f"calibration.{name} is all zeros; it would weight every error by 0")


def input_power_spectrum(inputs: torch.Tensor, transform: Transform) -> torch.Tensor:
    """Mean power spectrum ``E|rfft(x)_k|^2`` (float32, ``(n_cols,)``) of inputs ``(..., n)``.

    In the packed even-``n`` ``"rfft"`` layout column 0 holds DC and Nyquist
    together and gets the mean of their powers.
    """
    x = inputs.reshape(-1, inputs.shape[-1]).to(torch.float32)
    n = x.shape[-1]
    power = torch.fft.rfft(x, dim=-1, norm="ortho").abs().square().mean(dim=0)
    cols = spectrum_columns(n, transform)
    if transform == "rfft" and n % 2 == 0:
        packed = power[:cols].clone()
        packed[0] = (power[0] + power[n // 2]) / 2
        return packed
    return power[:cols]


def channel_scale(channel: torch.Tensor, alpha: float) -> torch.Tensor:
    """Input-channel scale ``d = channel^(alpha/2)`` (float32 values exact in float16), geometric mean 1."""
    power = channel.to(torch.float32)
    power = power.clamp_min(float(power.max()) * WEIGHT_FLOOR)
    log_d = 0.5 * alpha * power.log()
    return (log_d - log_d.mean()).exp().to(torch.float16).to(torch.float32)


def amplitude_scale(weights: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """``sqrt`` of squared-error weights, floored relative to the largest one."""
    if weights is None:
        return None
    w = weights.to(torch.float32)
    return w.clamp_min(float(w.max()) * WEIGHT_FLOOR).sqrt()

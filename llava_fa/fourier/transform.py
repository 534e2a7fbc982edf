"""Real weight <-> half-spectrum transforms and their exact error weighting.

Two transforms, both orthonormal (``norm="ortho"``) so that the spatial squared
error equals a weighted sum of squared spectral errors:

* ``"rfft2"`` (the paper's): ``S = rfft2(W)``, shape ``(m, n // 2 + 1)``. Column
  ``k`` of the half-spectrum stands for ``w_k`` coefficients of the full
  spectrum: ``w_0 = 1``, ``w_{n/2} = 1`` when ``n`` is even, else ``2``.
* ``"rfft"``: a 1-D rfft along the input dimension only, rows stay spatial.
  For even ``n`` the spectrum is *packed*: the (real) Nyquist coefficient is
  stored as the imaginary part of the (real) DC coefficient, so an ``m x n``
  real matrix maps to exactly ``m x n/2`` complex numbers (no overhead), with
  ``w_0 = 1`` and ``w_k = 2`` otherwise. For odd ``n`` the layout is
  ``(m, (n + 1) // 2)`` and the imaginary part of the DC column is ignored.

All functions compute in float32 / complex64 on the input's device.
``from_spectrum`` accepts any complex matrix: entries that a real matrix cannot
have (imaginary parts of real-only coefficients, non-Hermitian DC columns of
``rfft2``) are projected away, which can only lower the spatial error.
"""

from __future__ import annotations

from typing import Literal

import torch

from .settings import check_field

Transform = Literal["rfft", "rfft2"]


def check_transform(transform: str) -> None:
    """Raise ``ValueError`` (``TypeError`` for a non-string) naming the valid choices if ``transform`` is unknown."""
    check_field("transform", transform)


def spectrum_columns(n: int, transform: Transform) -> int:
    """Number of complex columns the spectrum of an ``m x n`` real matrix has."""
    check_transform(transform)
    if transform == "rfft2":
        return n // 2 + 1
    return n // 2 if n % 2 == 0 else (n + 1) // 2


def spectrum_weights(n: int, transform: Transform, device: torch.device | str | None = None) -> torch.Tensor:
    """Per-column weights ``w_k`` (float32, ``(n_cols,)``): spatial ||E||^2 = sum_ik w_k |E~_ik|^2."""
    cols = spectrum_columns(n, transform)
    w = torch.full((cols,), 2.0, dtype=torch.float32, device=device)
    w[0] = 1.0
    if transform == "rfft2" and n % 2 == 0:
        w[-1] = 1.0
    return w


def to_spectrum(weight: torch.Tensor, transform: Transform) -> torch.Tensor:
    """Half-spectrum of a real ``(m, n)`` matrix as complex64 ``(m, n_cols)``."""
    check_transform(transform)
    w = weight.to(torch.float32)
    n = w.shape[-1]
    if transform == "rfft2":
        return torch.fft.rfft2(w, norm="ortho")
    s = torch.fft.rfft(w, dim=-1, norm="ortho")
    if n % 2 == 1:
        return s
    packed = s[..., : n // 2].clone()
    packed[..., 0] = torch.complex(s[..., 0].real, s[..., n // 2].real)
    return packed


def from_spectrum(spectrum: torch.Tensor, n: int, transform: Transform) -> torch.Tensor:
    """Real float32 ``(m, n)`` matrix whose half-spectrum is (the realisable part of) ``spectrum``."""
    check_transform(transform)
    s = spectrum.to(torch.complex64)
    m = s.shape[-2]
    if transform == "rfft2":
        return torch.fft.irfft2(s, s=(m, n), norm="ortho")
    if n % 2 == 1:
        return torch.fft.irfft(s, n=n, dim=-1, norm="ortho")
    full = torch.zeros(*s.shape[:-1], n // 2 + 1, dtype=s.dtype, device=s.device)
    full[..., : n // 2] = s
    full[..., 0] = s[..., 0].real.to(s.dtype)
    full[..., n // 2] = s[..., 0].imag.to(s.dtype)
    return torch.fft.irfft(full, n=n, dim=-1, norm="ortho")


def synthesize_rows(rows: torch.Tensor, n: int, transform: Transform) -> tuple[torch.Tensor, torch.Tensor]:
    """Real and imaginary parts of ``rows @ G`` (float32 ``(k, n)`` each) for complex ``rows`` ``(k, n_cols)``.

    ``G`` is the row synthesis: for ``"rfft"`` ``from_spectrum(S) = Re(S @ G)``; for ``"rfft2"`` it is the
    inverse rfft along the input dimension (apply the inverse FFT along rows separately). ``G`` itself
    (an ``n_cols x n`` complex matrix) is never built: ``Re(z G) = g(z)`` and ``Im(z G) = g(-i z)`` for the
    real-linear synthesis ``g``.
    """
    check_transform(transform)
    z = rows.to(torch.complex64)

    def synth(s: torch.Tensor) -> torch.Tensor:
        if transform == "rfft":
            return from_spectrum(s, n, "rfft")
        return torch.fft.irfft(s, n=n, dim=-1, norm="ortho")

    return synth(z), synth(-1j * z)

"""Fourier Approximation (Algorithm 1): W~ ~= Q~ + L1 L2, alternating FourierSVD and PolarQuant.

``fourier_approximate(weight, rank=..., amplitude_bits=..., phase_bits=...)``
returns a :class:`FourierApproximation` holding exactly what is stored (packed
codes, scales, complex factors rounded to their storage dtype) and able to
rebuild the weight. All computation is float32 / complex64 on ``weight.device``.

The loop starts from ``Q~ = 0``, alternates ``L = FourierSVD(W~ - Q~)`` and
``Q~ = PolarQuant(W~ - L1 L2)``, measures the (calibration-weighted) error of
the *spatial* reconstruction after each step, stops as soon as the error rises
and returns the best iterate.

With ``settings.error_feedback`` the PolarQuant step chooses its codes by
GPTQ-style error feedback (:mod:`.error_feedback`) with the calibration's input
second moment ``Sigma``, and each round is measured by the relative output error
``sqrt(tr(E Sigma E^T) / tr(W Sigma W^T))``; scales, table and layout are those of
plain PolarQuant, so the result is stored and run exactly like a plain one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

import torch

from .calibration import Calibration, amplitude_scale, channel_scale
from .error_feedback import error_feedback_quantize, output_error, spectral_hessian
from .polar_quant import PolarCodes, polar_quantize
from .settings import CompressionSettings, check_rank_fits
from .svd import fourier_svd
from .transform import Transform, from_spectrum, spectrum_columns, spectrum_weights, synthesize_rows, to_spectrum

#: The paper's PolarQuant as printed: 2-D rfft, one amplitude scale per matrix,
#: uniform amplitude grid, amplitude quantised independently of the phase.
PAPER_SETTINGS: dict[str, Any] = dict(
    transform="rfft2", group_size=None, codebook="uniform", phase_aware=False, svd_method="exact"
)


@dataclass
class FourierApproximation:
    """A compressed real matrix ``W ~= from_spectrum(Q~ + L1 L2)``.

    Attributes:
        shape: ``(m, n)`` of the original weight; ``dtype``: its dtype.
        transform: ``"rfft"`` or ``"rfft2"`` (see :mod:`.transform`).
        rank: complex rank ``r`` of the low-rank part (real rank <= 2r).
        quant: the packed PolarQuant codes of ``Q~`` (``(m, n_cols)``).
        l1, l2: complex64 ``(m, r)`` and ``(r, n_cols)``, values exactly representable in ``factor_dtype``.
        factor_dtype: dtype the real and imaginary parts of the factors are stored in.
        error: relative spatial error ``||W - W_hat|| / ||W||`` (calibration-weighted if ``weighted``;
            with error feedback the relative output error ``sqrt(tr(E Sigma E^T) / tr(W Sigma W^T))``).
        history: the error after each iteration.
        input_scale: ``None`` or float16 ``(n,)`` channel scale ``d``: the codes and factors
            approximate ``W diag(d)`` and ``W_hat = from_spectrum(...) diag(1/d)``.
    """

    shape: tuple[int, int]
    dtype: torch.dtype
    transform: str
    rank: int
    quant: PolarCodes
    l1: torch.Tensor
    l2: torch.Tensor
    factor_dtype: torch.dtype
    error: float
    weighted: bool
    history: list[float] = field(default_factory=list)
    input_scale: Optional[torch.Tensor] = None

    @property
    def codes(self) -> torch.Tensor:
        """Packed joint amplitude/phase codes (uint8)."""
        return self.quant.codes

    @property
    def scales(self) -> torch.Tensor:
        """Per-group amplitude scales."""
        return self.quant.scales

    @property
    def amplitude_bits(self) -> int:
        return self.quant.amplitude_bits

    @property
    def phase_bits(self) -> int:
        return self.quant.phase_bits

    @property
    def group_size(self) -> Optional[int]:
        return self.quant.group_size

    def spectrum(self) -> torch.Tensor:
        """Complex64 ``(m, n_cols)`` approximation of the half-spectrum of ``W diag(input_scale)``."""
        approx = self.quant.dequantize()
        if self.rank:
            approx = approx + self.l1 @ self.l2
        return approx

    def reconstruct(self) -> torch.Tensor:
        """The approximated weight: real, ``shape``, ``dtype``, on the codes' device."""
        dense = from_spectrum(self.spectrum(), self.shape[1], self.transform)
        if self.input_scale is not None:
            dense = dense / self.input_scale.float().unsqueeze(0)
        return dense.to(self.dtype)

    def lowrank_real(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact real form of the low-rank part: float32 ``A (m, 2r)``, ``B (2r, n)`` with ``A @ B = from_spectrum(L1 L2)``."""
        a, b = lowrank_to_real(self.l1, self.l2, self.shape[1], self.transform)
        if self.input_scale is not None:
            b = b / self.input_scale.float().unsqueeze(0)
        return a, b

    @property
    def nbits(self) -> int:
        """Bits stored: codes, scales, codebook, both factors (real + imaginary parts), input scale."""
        factor_bits = 2 * (self.l1.numel() + self.l2.numel()) * torch.finfo(self.factor_dtype).bits
        scale_bits = 0 if self.input_scale is None else self.input_scale.numel() * 16
        return self.quant.nbits() + factor_bits + scale_bits

    @property
    def bits_per_weight(self) -> float:
        """Stored bits per original weight entry."""
        return self.nbits / (self.shape[0] * self.shape[1])


def lowrank_to_real(
    l1: torch.Tensor, l2: torch.Tensor, n: int, transform: Transform
) -> tuple[torch.Tensor, torch.Tensor]:
    """Real ``A (m, 2r)``, ``B (2r, n)`` (float32) with ``A @ B == from_spectrum(l1 @ l2, n, transform)``."""
    a = l1.to(torch.complex64)
    if transform == "rfft2":
        a = torch.fft.ifft(a, dim=0, norm="ortho")
    b_real, b_imag = synthesize_rows(l2, n, transform)
    return torch.cat([a.real, -a.imag], dim=1), torch.cat([b_real, b_imag], dim=0)


def fourier_approximate(
    weight: torch.Tensor,
    settings: Optional[CompressionSettings] = None,
    *,
    calibration: Union[None, Calibration, torch.Tensor] = None,
    **fields: Any,
) -> FourierApproximation:
    """Compress a real 2-D ``weight`` (any float dtype, any device) with Algorithm 1.

    Args:
        weight: real ``(m, n)`` matrix (``out_features x in_features`` for a Linear).
        settings: the compression settings (default: ``CompressionSettings()``); keyword `fields`
            (``rank=8``, ``codebook="vq"``, ... see :class:`CompressionSettings`) override them.
        calibration: ``None``, a :class:`Calibration` (spectral ``row``/``col`` weights, spatial
            ``channel`` input power, ``second_moment``) or the paper's ``(m, n_cols)`` matrix ``C``.
            ``settings.error_feedback`` needs a ``Calibration`` with ``second_moment`` ``(n, n)``.

    Raises ``TypeError`` / ``ValueError`` naming the argument or field that is wrong. Deterministic for
    given inputs and settings (the randomized SVD is seeded by ``settings.seed``).
    """
    _validate_weight(weight)
    if settings is not None and not isinstance(settings, CompressionSettings):
        raise TypeError(f"settings must be a CompressionSettings, got {type(settings).__name__}")
    settings = (settings or CompressionSettings()).replace(**fields)
    m, n = weight.shape
    cols = spectrum_columns(n, settings.transform)
    check_rank_fits(settings.rank, m, cols)
    calibration = _as_calibration(calibration, m, cols, n)
    if settings.error_feedback and (calibration is None or calibration.second_moment is None):
        raise ValueError("error_feedback=True needs the layer's input second moment: pass calibration="
                         "Calibration(second_moment=E[x x^T] (n, n), ...) (llava_fa.fourier.input_second_moment(x), "
                         "or calibrate(..., second_moment=True)), or set error_feedback=False")
    problem = _Problem(weight, settings, calibration)
    err, quant, l1, l2, history = _alternate(problem, settings)
    return FourierApproximation(
        shape=(m, n), dtype=weight.dtype, transform=settings.transform, rank=settings.rank, quant=quant, l1=l1, l2=l2,
        factor_dtype=settings.factor_dtype, error=err, weighted=problem.calibrated, history=history,
        input_scale=None if problem.input_scale is None else problem.input_scale.to(torch.float16),
    )


class _Problem:
    """The weighted spectrum to approximate and how to measure a candidate (Algorithm 1's fixed inputs)."""

    def __init__(self, weight: torch.Tensor, settings: CompressionSettings, calib: Optional[Calibration]):
        w = weight.detach().to(torch.float32)
        self.n, self.transform = w.shape[1], settings.transform
        self.calibrated = calib is not None and (calib.has_weights or settings.error_feedback)
        row_w, col_w, channel_w = (None, None, None) if calib is None else (
            None if v is None else v.to(w.device, torch.float32) for v in (calib.row, calib.col, calib.channel))
        self.input_scale = None if channel_w is None else channel_scale(channel_w, calib.channel_alpha)
        self.spec = to_spectrum(w if self.input_scale is None else w * self.input_scale.unsqueeze(0), self.transform)
        half_weights = spectrum_weights(self.n, self.transform, device=w.device)
        self.row_scale = amplitude_scale(row_w)
        self.col_scale = amplitude_scale(half_weights if col_w is None else half_weights * col_w)
        #: error-feedback Hessian over the packed coefficients of ``W diag(d)``; None: plain rounding
        self.hessian: Optional[torch.Tensor] = None
        self.error_of: Callable[[torch.Tensor], float]
        if settings.error_feedback:
            assert calib is not None and calib.second_moment is not None
            sigma = calib.second_moment.to(w.device, torch.float32)
            self.hessian = spectral_hessian(sigma, self.input_scale)
            self.error_of = _OutputErrorMeter(w, sigma)
        else:
            self.error_of = _ErrorMeter(w, self.transform, row_w, col_w, channel_w)

    def error(self, approx_spec: torch.Tensor) -> float:
        """Relative (calibration-weighted or output) error of the weight rebuilt from `approx_spec`."""
        dense = from_spectrum(approx_spec, self.n, self.transform)
        return self.error_of(dense if self.input_scale is None else dense / self.input_scale.unsqueeze(0))


def _alternate(
    problem: _Problem, settings: CompressionSettings
) -> tuple[float, PolarCodes, torch.Tensor, torch.Tensor, list[float]]:
    """Alternate FourierSVD and PolarQuant from ``Q~ = 0``; stop when the error rises; return the best iterate.

    PolarQuant rounds each coefficient to its nearest point, or by error feedback when ``problem.hessian`` is set.
    """
    spec, rank = problem.spec, settings.rank
    quant_kwargs = dict(group_size=settings.group_size, codebook=settings.codebook, phase_aware=settings.phase_aware,
                        scale_dtype=settings.scale_dtype, table_fit=settings.table_fit,
                        refit_rounds=settings.refit_rounds,
                        column_weights=spectrum_weights(problem.n, problem.transform, device=spec.device))
    q_spec = torch.zeros_like(spec)
    best: Optional[tuple[float, PolarCodes, torch.Tensor, torch.Tensor]] = None
    history: list[float] = []
    for step in range(settings.max_iters if rank > 0 else 1):
        l1, l2 = fourier_svd(spec - q_spec, rank, problem.row_scale, problem.col_scale, method=settings.svd_method,
                             seed=settings.seed + step)
        l1, l2 = _round_factor(l1, settings.factor_dtype), _round_factor(l2, settings.factor_dtype)
        low = l1 @ l2 if rank else torch.zeros_like(spec)
        warm = None if best is None else best[1].table  # VQ: start from the best table so far
        if problem.hessian is None:
            quant = polar_quantize(spec - low, settings.amplitude_bits, settings.phase_bits, init_table=warm,
                                   **quant_kwargs)
        else:
            quant = error_feedback_quantize(spec - low, problem.hessian, settings.amplitude_bits, settings.phase_bits,
                                            init_table=warm, damp=settings.feedback_damp, **quant_kwargs)
        q_spec = quant.dequantize()
        err = problem.error(q_spec + low)
        history.append(err)
        if best is not None and err > best[0]:
            break
        best = (err, quant, l1, l2)
    assert best is not None
    return (*best, history)


class _OutputErrorMeter:
    """Relative output error ``sqrt(tr(E Sigma E^T) / tr(W Sigma W^T))`` of a spatial reconstruction ``W - E``."""

    def __init__(self, w: torch.Tensor, sigma: torch.Tensor):
        self.w, self.sigma = w, sigma

    def __call__(self, approx: torch.Tensor) -> float:
        return output_error(self.w, approx, self.sigma)


class _ErrorMeter:
    """Relative error of a spatial reconstruction, optionally calibration-weighted.

    Weighted norm of ``X``: ``X diag(sqrt(channel))`` (spatial), then, with ``row``/``col``,
    ``sqrt(sum_ik row_i col_k w_k |spectrum_ik|^2)`` of that; plain Frobenius otherwise.
    """

    def __init__(
        self,
        w: torch.Tensor,
        transform: str,
        row: Optional[torch.Tensor],
        col: Optional[torch.Tensor],
        channel: Optional[torch.Tensor],
    ):
        self.transform, self.row, self.col = transform, row, col
        self.channel_amp = None if channel is None else channel.sqrt().unsqueeze(0)
        self.half_weights = spectrum_weights(w.shape[1], transform, device=w.device)
        self.w = w
        self.norm = self._norm(w)

    def _norm(self, x: torch.Tensor) -> float:
        if self.channel_amp is not None:
            x = x * self.channel_amp
        if self.col is None and self.row is None:
            return float(torch.linalg.vector_norm(x))
        col = self.half_weights if self.col is None else self.half_weights * self.col
        power = to_spectrum(x, self.transform).abs().square() * col.unsqueeze(0)
        if self.row is not None:
            power = power * self.row.unsqueeze(1)
        return float(power.sum().sqrt())

    def __call__(self, approx: torch.Tensor) -> float:
        return self._norm(self.w - approx) / max(self.norm, 1e-30)


def _round_factor(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if dtype == torch.float32:
        return x.contiguous()
    return torch.view_as_complex(torch.view_as_real(x.contiguous()).to(dtype).to(torch.float32).contiguous())


def _validate_weight(weight: Any) -> None:
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
    if weight.is_complex() or not weight.is_floating_point():
        raise TypeError(f"weight must be a real floating-point tensor, got dtype {weight.dtype}")
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D (out_features, in_features), got shape {tuple(weight.shape)}")
    if weight.shape[0] == 0 or weight.shape[1] < 2:
        raise ValueError(f"weight of shape {tuple(weight.shape)} is too small to compress")
    if not torch.isfinite(weight).all():
        raise ValueError("weight contains NaN or Inf; fix the checkpoint before compressing")


def _as_calibration(calibration: Any, m: int, cols: int, n: int) -> Optional[Calibration]:
    if calibration is None:
        return None
    if isinstance(calibration, torch.Tensor):
        if calibration.dim() != 2 or tuple(calibration.shape) != (m, cols):
            raise ValueError(
                f"calibration matrix must have the spectrum's shape ({m}, {cols}), got {tuple(calibration.shape)}"
            )
        if not torch.isfinite(calibration).all() or (calibration < 0).any():
            raise ValueError("calibration matrix must be finite and non-negative")
        calibration = Calibration.from_matrix(calibration)
    if not isinstance(calibration, Calibration):
        raise TypeError(f"calibration must be None, a Calibration or a tensor, got {type(calibration).__name__}")
    calibration.validate(m, cols, n)
    return calibration

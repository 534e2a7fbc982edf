"""Error-feedback rounding of complex codes (GPTQ/OBQ-style, in the 1-D rfft basis).

Plain PolarQuant rounds every complex coefficient to its nearest table point on
its own. For a linear layer ``y = W x`` what matters is the output error
``E||(W - W_hat) x||^2 = tr(E Sigma E^T)`` with ``Sigma = E[x x^T]`` the input
second moment. GPTQ (Frantar et al., after OBQ) rounds one weight column at a
time and moves the error it makes onto the not-yet-rounded columns, weighted by
the inverse Hessian. This module does the same for complex coefficients:

* Parameters: each row of the packed rfft spectrum ``S`` (``(m, c)`` complex,
  see :mod:`.transform`) is the real vector ``p = [Re s_0, Im s_0, Re s_1, ...]``
  (length ``2c``); the spatial row is ``w = p M`` with ``M`` the real
  ``(2c, n)`` synthesis matrix (:func:`spectral_basis`). The Hessian of the
  output error in these coordinates is ``H = M Sigma M^T``
  (:func:`spectral_hessian`), i.e. ``F Sigma F^H`` written in real pairs.
* Rounding: complex coefficients are taken one at a time (optionally in order of
  decreasing Hessian diagonal), each row's coefficient goes to the table point
  that minimises the exact GPTQ loss ``||(p_b - q) U_bb^{-1}||^2`` of its 2x2
  block (``U`` the upper Cholesky factor of ``H^{-1}``), and the error
  ``e = (p_b - q) U_bb^{-1}`` is fed to the later coefficients by
  ``p_later -= e U_b,later`` (GPTVQ's block form of the GPTQ update), with
  GPTQ's lazy block updates.
* The storage format does not change: the scales and the table (Lloyd polar
  grid, uniform grid or VQ points) come from :func:`~.polar_quant.polar_quantize`
  on the target, and only the codes are chosen differently. Dequantisation and
  kernels are unaffected; this is a compression-time option.

Users reach it through ``CompressionSettings(error_feedback=True)`` in
:func:`~.approximate.fourier_approximate` (Algorithm 1's loop calls
:func:`error_feedback_quantize` in place of PolarQuant) and
``FourierApproxConfig(error_feedback=True)``; this module holds the rounding itself.

The same function rounds *spatial* pairs ``(w_2j, w_2j+1)`` when given
``Sigma`` itself as the Hessian (their basis matrix is the identity): the
control that separates what the transform adds from what error feedback adds.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Optional

import torch

from .packing import pack_codes
from .polar_quant import Codebook, PolarCodes, TableFit, _quantize_once, polar_quantize
from .settings import check_fields
from .transform import from_spectrum, spectrum_columns, spectrum_weights, to_spectrum

if TYPE_CHECKING:
    from .approximate import FourierApproximation

#: Dampening: this fraction of the mean Hessian diagonal is added to it (GPTQ uses 0.01; 0.1 measured better here).
DEFAULT_DAMP = 0.1
#: Columns (real parameters) per lazy update block.
DEFAULT_BLOCK = 128


def input_second_moment(inputs: torch.Tensor) -> torch.Tensor:
    """``Sigma = X^T X / N`` (float32 ``(n, n)``) of layer inputs ``(..., n)`` (any float dtype)."""
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs must be a torch.Tensor, got {type(inputs).__name__}")
    if inputs.dim() < 2 or inputs.is_complex() or not inputs.is_floating_point():
        raise ValueError(f"inputs must be a real float tensor of shape (..., n), got {tuple(inputs.shape)} {inputs.dtype}")
    x = inputs.reshape(-1, inputs.shape[-1]).to(torch.float32)
    if x.shape[0] == 0:
        raise ValueError("inputs hold no rows; pass at least one calibration token")
    return x.T @ x / x.shape[0]


def spectral_basis(n: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Real ``(2c, n)`` matrix ``M`` with ``from_spectrum(S, n, "rfft")[i] = p_i M`` for interleaved ``p_i``.

    ``c = spectrum_columns(n, "rfft")``; ``p_i = [Re S_i0, Im S_i0, Re S_i1, Im S_i1, ...]``.
    For odd ``n`` the row of ``Im S_i0`` is zero (that part is not realisable).
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    c = spectrum_columns(n, "rfft")
    eye = torch.eye(c, dtype=torch.complex64, device=device)
    real_rows = from_spectrum(eye, n, "rfft")  # unit real part of coefficient k -> spatial row
    imag_rows = from_spectrum(1j * eye, n, "rfft")
    return torch.stack([real_rows, imag_rows], dim=1).reshape(2 * c, n)


def spectral_hessian(sigma: torch.Tensor, input_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Output-error Hessian ``M Sigma' M^T`` (float32 ``(2c, 2c)``) of the packed rfft coefficients.

    Args:
        sigma: symmetric ``(n, n)`` input second moment ``E[x x^T]`` (see :func:`input_second_moment`).
        input_scale: optional ``(n,)`` channel scale ``d`` when the spectrum is that of
            ``W diag(d)`` (the inputs it sees are ``x / d``): ``Sigma' = diag(1/d) Sigma diag(1/d)``.
    """
    sigma = _scaled_sigma(_check_sigma(sigma), input_scale)
    half = _times_basis_t(sigma)  # Sigma M^T, (n, 2c)
    return _times_basis_t(half.T.contiguous()).T.contiguous()  # M Sigma M^T, O(n^2 log n) by FFTs


def _times_basis_t(x: torch.Tensor) -> torch.Tensor:
    """``x M^T`` (float32 ``(r, 2c)``) for real rows ``x`` ``(r, n)``, by one rfft (no ``(2c, n)`` matrix).

    Row ``k`` of ``M`` synthesises coefficient ``k`` (:func:`spectral_basis`), so ``<x, M_k>`` is the
    packed spectrum of ``x`` (:func:`~.transform.to_spectrum`) at ``k`` times its half-spectrum weight
    (:func:`~.transform.spectrum_weights`), in the interleaved real layout.
    """
    n = x.shape[-1]
    weighted = to_spectrum(x, "rfft") * spectrum_weights(n, "rfft", device=x.device)
    return torch.view_as_real(weighted.contiguous()).reshape(*x.shape[:-1], 2 * spectrum_columns(n, "rfft"))


def pair_hessian(sigma: torch.Tensor, input_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Hessian of *spatial* pairs ``(w_2j, w_2j+1)``: ``Sigma`` itself (optionally channel-scaled); ``n`` even."""
    sigma = _check_sigma(sigma)
    if sigma.shape[0] % 2:
        raise ValueError(f"spatial pairs need an even number of inputs, got n={sigma.shape[0]}")
    return _scaled_sigma(sigma, input_scale).clone()


def _scaled_sigma(sigma: torch.Tensor, input_scale: Optional[torch.Tensor]) -> torch.Tensor:
    """``diag(1/d) Sigma diag(1/d)``: the second moment of the inputs ``x / d`` that ``W diag(d)`` sees."""
    if input_scale is None:
        return sigma
    n = sigma.shape[0]
    if not isinstance(input_scale, torch.Tensor) or tuple(input_scale.shape) != (n,):
        got = tuple(input_scale.shape) if isinstance(input_scale, torch.Tensor) else type(input_scale).__name__
        raise ValueError(f"input_scale must be a tensor of shape ({n},), got {got}")
    if not torch.isfinite(input_scale).all() or (input_scale == 0).any():
        raise ValueError("input_scale must be finite and non-zero")
    inv = 1.0 / input_scale.to(sigma.device, torch.float32)
    return sigma * inv.unsqueeze(0) * inv.unsqueeze(1)


def error_feedback_round(
    target: torch.Tensor,
    hessian: torch.Tensor,
    scales: torch.Tensor,
    table: torch.Tensor,
    group_size: Optional[int],
    *,
    damp: float = DEFAULT_DAMP,
    block_size: int = DEFAULT_BLOCK,
    act_order: bool = True,
) -> torch.Tensor:
    """Table indices (int64 ``(m, c)``) for ``target`` chosen by GPTQ-style error feedback.

    Args:
        target: complex ``(m, c)`` matrix to quantise (a packed rfft spectrum, or spatial pairs).
        hessian: real symmetric PSD ``(2c, 2c)`` output-error Hessian over interleaved
            ``[Re, Im]`` parameters (:func:`spectral_hessian` / :func:`pair_hessian`).
        scales: ``(n_groups,)`` positive group scales of the row-major flattened target
            (``group_size`` consecutive coefficients per scale, ``None``: one for all).
        table: complex ``(K,)`` normalised code points; coefficient value = ``scale * table[idx]``.
        damp: fraction of the mean Hessian diagonal added to it (GPTQ's ``percdamp``), >= 0.
        block_size: real parameters per lazy update block (even, >= 2).
        act_order: round coefficients in order of decreasing Hessian diagonal (GPTQ's act-order);
            scales and groups stay those of the original order.
    """
    m, c = _check_target(target)
    h = _check_hessian(hessian, 2 * c)
    if not isinstance(damp, (int, float)) or isinstance(damp, bool) or not damp >= 0:
        raise ValueError(f"damp must be a non-negative number, got {damp!r}")
    if not isinstance(block_size, int) or isinstance(block_size, bool) or block_size < 2 or block_size % 2:
        raise ValueError(f"block_size must be an even integer >= 2, got {block_size!r}")
    if not isinstance(table, torch.Tensor) or table.dim() != 1 or not table.is_complex() or table.numel() == 0:
        raise ValueError("table must be a non-empty 1-D complex tensor of code points")
    group_len = m * c if group_size is None else int(group_size)
    n_groups = -(-m * c // group_len)
    if not isinstance(scales, torch.Tensor) or tuple(scales.shape) != (n_groups,):
        got = tuple(scales.shape) if isinstance(scales, torch.Tensor) else type(scales).__name__
        raise ValueError(f"scales must have shape ({n_groups},) for a {m}x{c} target in groups of {group_len}, got {got}")
    if not torch.isfinite(scales).all() or (scales <= 0).any():
        raise ValueError("scales must be finite and positive")

    device = target.device
    flat_index = torch.arange(m * c, device=device).view(m, c)
    coef_scale = scales.to(device, torch.float32)[flat_index // group_len]  # (m, c)
    points = torch.view_as_real(table.to(device, torch.complex64).contiguous())  # (K, 2)
    p = torch.view_as_real(target.to(torch.complex64).contiguous()).reshape(m, 2 * c).clone()

    h = h.to(device, torch.float32).clone()
    diag = torch.diagonal(h)
    dead = diag <= 0
    h[dead, dead] = 1.0
    p[:, dead] = 0.0
    order = torch.arange(c, device=device)
    if act_order:
        order = torch.argsort(diag.view(c, 2).sum(1), descending=True, stable=True)
    perm = torch.stack([2 * order, 2 * order + 1], dim=1).reshape(-1)
    h = h[perm][:, perm]
    p = p[:, perm]
    coef_scale = coef_scale[:, order]
    torch.diagonal(h).add_(damp * float(torch.diagonal(h).mean()))
    u = _inverse_cholesky_upper(h)

    # Per coefficient: A_k = U_bb^-1 of its 2x2 diagonal block, the table mapped through it and its norms.
    ar = torch.arange(c, device=device)
    a_all = torch.linalg.inv(u.view(c, 2, c, 2)[ar, :, ar, :])  # (c, 2, 2)
    ta_all = torch.einsum("kd,cde->cke", points, a_all)  # (c, K, 2)
    ta_sq = ta_all.square().sum(-1)  # (c, K)
    idx = torch.empty(m, c, dtype=torch.int64, device=device)
    for start in range(0, 2 * c, block_size):
        stop = min(start + block_size, 2 * c)
        block = p[:, start:stop].clone()
        errors = torch.zeros_like(block)
        u_block = u[start:stop, start:stop]
        for j in range(0, stop - start, 2):
            k = (start + j) // 2
            s = coef_scale[:, k : k + 1]
            # GPTQ loss of point t: ||(w - s t) A||^2 = s^2 |t A|^2 - 2 s (w A).(t A) + const, A = U_bb^-1.
            wa = block[:, j : j + 2] @ a_all[k]
            best = (s.square() * ta_sq[k] - 2 * s * (wa @ ta_all[k].T)).argmin(dim=1)
            idx[:, k] = best
            err = wa - s * ta_all[k][best]
            errors[:, j : j + 2] = err
            block[:, j + 2 :] -= err @ u_block[j : j + 2, j + 2 :]
        p[:, stop:] -= errors @ u[start:stop, stop:]
    out = torch.empty_like(idx)
    out[:, order] = idx
    return out


def error_feedback_quantize(
    target: torch.Tensor,
    hessian: torch.Tensor,
    amplitude_bits: int,
    phase_bits: int,
    group_size: Optional[int] = 64,
    *,
    codebook: Codebook = "lloyd",
    phase_aware: bool = True,
    scale_dtype: torch.dtype = torch.float16,
    damp: float = DEFAULT_DAMP,
    block_size: int = DEFAULT_BLOCK,
    act_order: bool = True,
    init_table: Optional[torch.Tensor] = None,
    table_fit: TableFit = "kmeans",
    refit_rounds: int = 0,
    column_weights: Optional[torch.Tensor] = None,
) -> PolarCodes:
    """PolarQuant codes of a complex ``(m, c)`` ``target`` rounded by error feedback.

    Scales, levels and table are those :func:`~.polar_quant.polar_quantize` fits to
    ``target`` with the same options (``table_fit``, ``refit_rounds``, ``column_weights``
    included: a refit runs on the plain codes, before error feedback); only the codes differ
    (same storage layout, same bits). See :func:`error_feedback_round` for
    ``hessian``/``damp``/``block_size``/``act_order``.
    """
    _check_target(target)
    if table_fit == "gaussian" and codebook == "vq" and not refit_rounds:
        # the fixed table needs no plain codes: error feedback chooses them below
        check_fields({"amplitude_bits": amplitude_bits, "phase_bits": phase_bits})
        first = _quantize_once(target, amplitude_bits, phase_bits, group_size, codebook, phase_aware, scale_dtype,
                               None, table_fit, with_codes=False)
    else:
        first = polar_quantize(
            target, amplitude_bits, phase_bits, group_size, codebook=codebook, phase_aware=phase_aware,
            scale_dtype=scale_dtype, init_table=init_table, table_fit=table_fit, refit_rounds=refit_rounds,
            column_weights=column_weights,
        )
    table = first.lookup_table()  # polar grids: index (q_r << b_theta) | q_theta is the joint code
    idx = error_feedback_round(
        target, hessian, first.scales.float(), table, group_size,
        damp=damp, block_size=block_size, act_order=act_order,
    )
    pad = first.padded_count - idx.numel()
    flat = torch.nn.functional.pad(idx.reshape(-1), (0, pad))
    return dataclasses.replace(first, codes=pack_codes(flat, first.code_bits))


def approximate_with_feedback(
    weight: torch.Tensor,
    sigma: torch.Tensor,
    *,
    channel: Optional[torch.Tensor] = None,
    channel_alpha: float = 0.5,
    **fields: Any,
) -> FourierApproximation:
    """Shorthand for ``fourier_approximate`` with error feedback (rank 0 unless `fields` say otherwise).

    ``fourier_approximate(weight, CompressionSettings(rank=0, error_feedback=True, **fields),
    calibration=Calibration(second_moment=sigma, channel=channel, channel_alpha=channel_alpha))``:
    `sigma` is the ``(n, n)`` input second moment, `channel` optional ``(n,)`` input power for the
    channel scale. Prefer that call (or ``FourierApproxConfig(error_feedback=True)``) in new code.
    """
    from .approximate import fourier_approximate
    from .calibration import Calibration
    from .settings import CompressionSettings

    settings = CompressionSettings(rank=0, error_feedback=True).replace(**fields)
    calibration = Calibration(second_moment=sigma, channel=channel, channel_alpha=channel_alpha)
    return fourier_approximate(weight, settings, calibration=calibration)


def output_error(weight: torch.Tensor, approx: torch.Tensor, sigma: torch.Tensor) -> float:
    """Relative output error ``sqrt(tr(E Sigma E^T) / tr(W Sigma W^T))`` with ``E = weight - approx``."""
    sigma = _check_sigma(sigma)
    e = (weight - approx).to(torch.float32)
    w = weight.to(torch.float32)
    num = float(((e @ sigma) * e).sum())
    den = float(((w @ sigma) * w).sum())
    return (max(num, 0.0) / max(den, 1e-30)) ** 0.5


def _inverse_cholesky_upper(h: torch.Tensor) -> torch.Tensor:
    """Upper ``U`` with ``H^{-1} = U^T U``; raises ``ValueError`` if ``H`` is not positive definite."""
    chol, info = torch.linalg.cholesky_ex(h)
    if int(info) != 0:
        raise ValueError("the Hessian is not positive definite after dampening; raise damp (e.g. 0.1)")
    h_inv = torch.cholesky_inverse(chol)
    u, info = torch.linalg.cholesky_ex(h_inv, upper=True)
    if int(info) != 0:
        raise ValueError("the inverse Hessian is not positive definite; raise damp (e.g. 0.1)")
    return u


def _check_sigma(sigma: object) -> torch.Tensor:
    if not isinstance(sigma, torch.Tensor):
        raise TypeError(f"sigma must be a torch.Tensor, got {type(sigma).__name__}")
    if sigma.dim() != 2 or sigma.shape[0] != sigma.shape[1] or sigma.shape[0] < 2:
        raise ValueError(f"sigma must be a square (n, n) matrix with n >= 2, got shape {tuple(sigma.shape)}")
    if sigma.is_complex() or not sigma.is_floating_point() or not torch.isfinite(sigma).all():
        raise ValueError("sigma must be real, floating point and finite")
    return sigma.to(torch.float32)


def _check_target(target: object) -> tuple[int, int]:
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if target.dim() != 2 or not target.is_complex():
        raise ValueError(f"target must be a 2-D complex matrix, got shape {tuple(target.shape)} dtype {target.dtype}")
    if not torch.isfinite(torch.view_as_real(target)).all():
        raise ValueError("target contains NaN or Inf")
    return target.shape[0], target.shape[1]


def _check_hessian(hessian: object, size: int) -> torch.Tensor:
    if not isinstance(hessian, torch.Tensor):
        raise TypeError(f"hessian must be a torch.Tensor, got {type(hessian).__name__}")
    if tuple(hessian.shape) != (size, size):
        raise ValueError(f"hessian must have shape ({size}, {size}) (two real parameters per complex column), "
                         f"got {tuple(hessian.shape)}")
    if hessian.is_complex() or not torch.isfinite(hessian).all():
        raise ValueError("hessian must be real and finite")
    return hessian


__all__ = [
    "approximate_with_feedback",
    "DEFAULT_BLOCK",
    "DEFAULT_DAMP",
    "error_feedback_quantize",
    "error_feedback_round",
    "input_second_moment",
    "output_error",
    "pair_hessian",
    "spectral_basis",
    "spectral_hessian",
]

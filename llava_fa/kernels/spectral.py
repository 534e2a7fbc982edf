"""Plain-torch frequency-domain forward of a FourierLinear (no dense weight, no inverse FFT of the weight).

A FourierLinear stores ``W = from_spectrum(S, n, "rfft") diag(1 / d)`` with ``S = Q~ + L1 L2`` the
``(m, n_cols)`` complex half-spectrum. With ``u = x / d`` and ``U = rfft(u, norm="ortho")`` the
orthonormal transform gives, for every output row ``o``::

    y_o = sum_k w_k Re(conj(S[o, k]) X_k)

with ``X`` the *packed* spectrum of ``u`` (for even ``n`` column 0 holds ``U_0 + i U_{n/2}``, both real;
for odd ``n`` it is ``U_0``) and ``w_0 = 1``, ``w_k = 2`` otherwise. Writing
``x'[2k] = w_k Re X_k``, ``x'[2k + 1] = w_k Im X_k`` (the *interleaved spectral input*, ``K = 2 n_cols``
reals) and ``W'[o, 2k] = Re S[o, k]``, ``W'[o, 2k + 1] = Im S[o, k]`` turns the layer into an ordinary
real product ``y = x' W'^T``. ``W'`` of the quantized part is a table lookup of the codes times the
group scale (``dequantized_rows``); the low-rank part is ``Re(L1 (L2 conj(x~)))``: ``2 r`` real dot
products per token (``lowrank_term``), written against the rfft output itself so that both parts
share ONE FFT of the input.

Shapes: ``uv`` is ``torch.view_as_real(rfft(u))``, float32 ``(M, n // 2 + 1, 2)``; ``x'`` is float32
``(M, 2 n_cols)``. Everything here is differentiable torch (autograd reaches ``x`` and the factors);
only the 1-D ``"rfft"`` transform is handled (``"rfft2"`` mixes rows and stays on the dense path).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..fourier.packing import unpack_codes
from ..fourier.polar_quant import code_table
from ..fourier.transform import spectrum_columns

#: Complex coefficients dequantised at once by the CPU path (rows are chunked to about this many).
CHUNK_COEFFICIENTS = 1 << 20


@dataclass(frozen=True)
class SpectralCodes:
    """The frozen quantized spectrum of one FourierLinear, as the kernels read it.

    Attributes:
        codes: uint8, the packed joint codes (``code_bits`` bits each) of ``n_groups * group_len`` coefficients,
            row-major over the ``(out_features, n_cols)`` half-spectrum.
        scales: ``(n_groups,)`` per-group amplitude scale (float16 / float32).
        table: complex64 ``(2^code_bits,)`` lookup table (``level * e^{i theta}`` or the VQ point).
        code_bits: bits per code.
        group_len: coefficients per scale.
        out_features, in_features, n_cols: layer sizes (``n_cols`` complex columns).
    """

    codes: torch.Tensor
    scales: torch.Tensor
    table: torch.Tensor
    code_bits: int
    group_len: int
    out_features: int
    in_features: int
    n_cols: int


def spectral_codes(module) -> SpectralCodes:
    """The `SpectralCodes` of a FourierLinear (duck-typed: reads its buffers and size attributes)."""
    group = module.group_size if module.group_size is not None else module.out_features * module.n_cols
    return SpectralCodes(codes=module.codes, scales=module.scales,
                         table=code_table(getattr(module, "levels", None), getattr(module, "table", None),
                                          module.amplitude_bits, module.phase_bits, module.codes.device),
                         code_bits=module.amplitude_bits + module.phase_bits, group_len=int(group),
                         out_features=module.out_features, in_features=module.in_features, n_cols=module.n_cols)


def spectral_input(x: torch.Tensor, input_scale: torch.Tensor) -> torch.Tensor:
    """``view_as_real(rfft(x / d, norm="ortho"))``: float32 ``(M, n // 2 + 1, 2)`` for ``x`` ``(M, n)``."""
    u = x.float() / input_scale.float()
    if u.shape[0] == 0:  # MKL's FFT rejects an empty batch; keep the graph connected to x
        return u.new_zeros(0, u.shape[-1] // 2 + 1, 2) + u.sum() * 0
    return torch.view_as_real(torch.fft.rfft(u, dim=-1, norm="ortho"))


def scaled_spectral_input(x: torch.Tensor, inverse_scale: Optional[torch.Tensor]) -> torch.Tensor:
    """``view_as_real(rfft(x * inverse_scale, norm="ortho"))`` for ``x`` ``(M, n)``, ``M >= 1``: the inference
    paths' :func:`spectral_input` with a cached float32 ``1 / d`` (``None``: unit channel scale)."""
    u = x.float() if inverse_scale is None else x.float() * inverse_scale
    return torch.view_as_real(torch.fft.rfft(u, dim=-1, norm="ortho"))


def interleaved_input(uv: torch.Tensor, n: int) -> torch.Tensor:
    """The interleaved spectral input ``x'`` float32 ``(M, 2 n_cols)`` from ``uv`` (see the module docstring)."""
    n_cols = spectrum_columns(n, "rfft")
    xp = uv[:, :n_cols, :] * 2.0
    xp[:, 0, 0] = uv[:, 0, 0]  # packed DC / Nyquist pair, weight 1 (both real)
    xp[:, 0, 1] = uv[:, n // 2, 0] if n % 2 == 0 else 0.0
    return xp.reshape(uv.shape[0], 2 * n_cols)


def planar_input(uv: torch.Tensor, n: int) -> torch.Tensor:
    """``[w Re X | w Im X]`` float32 ``(M, 2 n_cols)`` (the planar spectral input, which multiplies ``W'`` stored as
    ``[Re | Im]``) from ``uv`` ``(M, n // 2 + 1, 2)``."""
    n_cols = spectrum_columns(n, "rfft")
    re = uv[:, :n_cols, 0] * 2.0
    im = uv[:, :n_cols, 1] * 2.0
    re[:, 0] = uv[:, 0, 0]
    im[:, 0] = uv[:, n // 2, 0] if n % 2 == 0 else 0.0
    return torch.cat((re, im), dim=1)


def interleaved_input_adjoint(grad: torch.Tensor, n: int) -> torch.Tensor:
    """Adjoint of :func:`interleaved_input`: ``(M, 2 n_cols)`` -> ``(M, n // 2 + 1, 2)``."""
    m_rows = grad.shape[0]
    n_cols = grad.shape[1] // 2
    g = grad.reshape(m_rows, n_cols, 2)
    out = grad.new_zeros(m_rows, n // 2 + 1, 2)
    out[:, 1:n_cols, :] = 2.0 * g[:, 1:, :]
    out[:, 0, 0] = g[:, 0, 0]
    if n % 2 == 0:
        out[:, n // 2, 0] = out[:, n // 2, 0] + g[:, 0, 1]
    return out


def dequantized_rows(spec: SpectralCodes, start: int, stop: int) -> torch.Tensor:
    """Rows ``[start, stop)`` of ``W'`` for the quantized part: float32 ``(stop - start, 2 n_cols)``.

    ``start`` must be a multiple of 8 (so that every chunk starts on a byte of the packed code stream).
    """
    if start % 8:
        raise ValueError(f"dequantized_rows: start={start} must be a multiple of 8")
    c0, c1 = start * spec.n_cols, stop * spec.n_cols
    count = c1 - c0
    if spec.code_bits == 8:
        codes = spec.codes[c0:c1].int()  # int32 indices: index_select is several times faster than with int64
    else:
        codes = unpack_codes(spec.codes[c0 * spec.code_bits // 8:], spec.code_bits, count)
    # (Re, Im) float32 pairs gathered as one 8-byte word each (a 1-D float64 index_select: the fast CPU path;
    # complex advanced indexing is far slower)
    pairs = torch.view_as_real(spec.table.to(torch.complex64)).contiguous().view(torch.float64).reshape(-1)
    values = pairs.index_select(0, codes).view(torch.float32).view(count, 2)
    g0 = c0 // spec.group_len
    if c0 % spec.group_len == 0 and count % spec.group_len == 0:
        scale = spec.scales[g0:g0 + count // spec.group_len].float()
        values.view(-1, 2 * spec.group_len).mul_(scale[:, None])  # in place on the fresh gather: no broadcast copy
    else:
        g1 = -(-c1 // spec.group_len)
        scale = spec.scales[g0:g1].float().repeat_interleave(spec.group_len)
        offset = c0 - g0 * spec.group_len
        values.mul_(scale[offset:offset + count, None])
    return values.view(stop - start, 2 * spec.n_cols)


def _row_chunk(spec: SpectralCodes) -> int:
    rows = max(8, CHUNK_COEFFICIENTS // max(spec.n_cols, 1))
    return rows - rows % 8


def quantized_matmul(xp: torch.Tensor, spec: SpectralCodes) -> torch.Tensor:
    """``x' W'^T`` for the quantized part: float32 ``(M, out_features)`` from ``x'`` ``(M, 2 n_cols)``.

    Dequantises ``W'`` chunk-wise over rows (never the whole matrix at once); no autograd through it.
    """
    xp = xp.float()
    out = xp.new_empty(xp.shape[0], spec.out_features)
    step = _row_chunk(spec)
    for start in range(0, spec.out_features, step):
        stop = min(start + step, spec.out_features)
        torch.matmul(xp, dequantized_rows(spec, start, stop).T, out=out[:, start:stop])
    return out


def quantized_matmul_transposed(grad: torch.Tensor, spec: SpectralCodes) -> torch.Tensor:
    """``g W'``: float32 ``(M, 2 n_cols)`` from ``g`` ``(M, out_features)`` (the backward of `quantized_matmul`)."""
    grad = grad.float()
    out = grad.new_zeros(grad.shape[0], 2 * spec.n_cols)
    step = _row_chunk(spec)
    for start in range(0, spec.out_features, step):
        stop = min(start + step, spec.out_features)
        out.addmm_(grad[:, start:stop], dequantized_rows(spec, start, stop))
    return out


def lowrank_input_matrix(l2: torch.Tensor, n: int) -> torch.Tensor:
    """Real ``(2 r, 2 (n // 2 + 1))`` matrix ``B`` with ``[Re t, Im t] = uv_flat B^T``, ``t = L2 conj(x~)``.

    ``l2`` is the ``(r, n_cols, 2)`` real view of ``L2``; the rfft weights and the DC/Nyquist packing
    are folded in, so ``B`` multiplies the plain rfft output ``uv`` flattened to ``(M, 2 (n // 2 + 1))``.
    Differentiable in ``l2``.
    """
    a, b = l2[..., 0].float(), l2[..., 1].float()  # (r, n_cols)
    r, n_cols = a.shape
    full = n // 2 + 1
    # t_re = sum_k xr a + xi b;  t_im = sum_k xr b - xi a   (x' = interleave(xr, xi))
    coef_r = torch.cat((a, b), dim=0)  # multiplies xr
    coef_i = torch.cat((b, -a), dim=0)  # multiplies xi
    inter = torch.stack((coef_r, coef_i), dim=-1).reshape(2 * r, 2 * n_cols)
    return interleaved_input_adjoint(inter, n).reshape(2 * r, 2 * full) if r else a.new_zeros(0, 2 * full)


def rfft_adjoint(v: torch.Tensor, n: int) -> torch.Tensor:
    """Adjoint of ``u -> view_as_real(rfft(u, norm="ortho"))``: float32 ``(..., n)`` from ``v`` ``(..., n // 2 + 1, 2)``."""
    full = n // 2 + 1
    w = torch.full((full,), 0.5, dtype=torch.float32, device=v.device)
    w[0] = 1.0
    if n % 2 == 0:
        w[-1] = 1.0
    return torch.fft.irfft(torch.view_as_complex(v.float().contiguous()) * w, n=n, dim=-1, norm="ortho")


def lowrank_spatial_matrix(l2: torch.Tensor, n: int, input_scale: torch.Tensor) -> torch.Tensor:
    """Real ``(2 r, n)`` matrix ``A`` with ``[Re t, Im t] = x A^T`` (the low-rank projection straight from ``x``,
    channel scale included): ``lowrank_input_matrix`` pulled back through the rfft and ``1 / d``."""
    b = lowrank_input_matrix(l2, n)
    a = rfft_adjoint(b.reshape(b.shape[0], n // 2 + 1, 2), n)
    return a / input_scale.float()


def lowrank_output_matrix(l1: torch.Tensor) -> torch.Tensor:
    """Real ``(m, 2 r)`` matrix ``C`` with ``Re(L1 t) = [Re t, Im t] C^T``, from ``l1`` ``(m, r, 2)``."""
    return torch.cat((l1[..., 0].float(), -l1[..., 1].float()), dim=1)


def lowrank_term(uv: torch.Tensor, l1: torch.Tensor, l2: torch.Tensor, n: int) -> torch.Tensor:
    """``x W_lr^T`` float32 ``(M, m)`` from ``uv`` ``(M, n // 2 + 1, 2)``; differentiable in all three."""
    flat = uv.flatten(1)
    t = flat @ lowrank_input_matrix(l2, n).T
    return t @ lowrank_output_matrix(l1).T


__all__ = [
    "CHUNK_COEFFICIENTS",
    "SpectralCodes",
    "dequantized_rows",
    "interleaved_input",
    "interleaved_input_adjoint",
    "lowrank_input_matrix",
    "lowrank_spatial_matrix",
    "lowrank_output_matrix",
    "lowrank_term",
    "planar_input",
    "quantized_matmul",
    "quantized_matmul_transposed",
    "rfft_adjoint",
    "scaled_spectral_input",
    "spectral_codes",
    "spectral_input",
]

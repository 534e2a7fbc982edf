"""PolarQuant (Algorithm 3 of the LLaVA-FA paper): amplitude/phase quantisation of complex matrices.

Not to be confused with the unrelated KV-cache methods also called "PolarQuant":
this one quantises each complex coefficient ``z = r e^{i theta}`` of a weight
spectrum with ``b_r`` amplitude bits and ``b_theta`` phase bits.

* Phase: uniform over the circle, ``theta_hat = q_theta * 2pi / 2^b_theta - pi``.
  The paper's code ``round((theta + pi) / dtheta)`` reaches ``2^b_theta`` at
  ``theta = +pi``; it wraps to 0 (the same point on the circle).
* Amplitude: ``r_hat = scale * level[q_r]`` with ``scale`` the largest amplitude
  of the group (``group_size=None``: one scale per matrix, the paper's r_max)
  and ``level`` either the paper's uniform grid ``q / (2^b_r - 1)``
  (``codebook="uniform"``) or levels fitted to the matrix by weighted Lloyd
  iterations (``codebook="lloyd"``, stored in float16 and counted).
* ``codebook="vq"`` keeps the code size and the table lookup but frees the
  geometry: the ``2^(b_r+b_theta)`` points of the polar grid are moved by 2-D
  weighted k-means over the group-normalised coefficients (fitted on a strided
  subsample, stored in float16 and counted); each coefficient takes the nearest
  point (lower error than the Lloyd polar grid at the same bits; README, Quality).
* ``table_fit="gaussian"`` (``"vq"`` only) skips the per-matrix k-means: the table is a fixed
  one, fitted once per (bits, group length) by the same weighted k-means to group-max normalised
  complex Gaussian samples (seeded, cached; the spectrum coefficients of a weight row are close to
  complex Gaussian), then stored like any VQ table.
* ``refit_rounds=k`` (any codebook) alternates, ``k`` times, least-squares refits of the group
  scales and of the codebook (Lloyd amplitude levels along each point's phase, or the VQ points)
  given the codes, with re-choosing each code as the nearest 2-D point of the scaled table
  (HQQ-like scale search on the 2-D code). Each step lowers the (column-weighted) squared error.
* ``phase_aware=True`` quantises the amplitude of the projection of ``z`` on the
  chosen phase, ``r cos(theta - theta_hat)``, which is the least-squares optimal
  amplitude for that phase (the paper quantises ``r`` itself: ``phase_aware=False``).

Storage layout (what a kernel reads): the ``(rows, cols)`` matrix is flattened
row-major and cut into groups of ``group_size`` consecutive coefficients (the
last group zero-padded). Each coefficient has one joint code
``(q_r << b_theta) | q_theta`` of ``b_r + b_theta`` bits, bit-packed by
:mod:`llava_fa.fourier.packing` (4+4 bits: one byte per coefficient).
Dequantisation is one lookup in a ``2^(b_r+b_theta)`` complex table times the
group scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional

import torch

from .packing import pack_codes, unpack_codes
from .settings import check_fields

Codebook = Literal["uniform", "lloyd", "vq"]
TableFit = Literal["kmeans", "gaussian"]
#: The fixed Gaussian VQ table: samples, k-means rounds and generator seed of its one-off fit.
GAUSSIAN_TABLE_SAMPLES = 1 << 17
GAUSSIAN_TABLE_ITERS = 30
GAUSSIAN_TABLE_SEED = 0
LLOYD_ITERS = 20
VQ_ITERS = 15
#: k-means rounds when starting from a previous table (Algorithm 1 re-quantises a similar residual).
VQ_WARM_ITERS = 5
VQ_FIT_SAMPLES = 1 << 17
#: Coefficients per nearest-point chunk: a (chunk x 2^bits) float32 distance block each
#: (64 MiB on CPU, 512 MiB on a GPU, where fewer, larger launches matter).
VQ_CHUNK = {"cpu": 1 << 16, "cuda": 1 << 19}


@dataclass
class PolarCodes:
    """Packed PolarQuant codes of a complex ``(rows, cols)`` matrix.

    Attributes:
        codes: uint8, packed joint codes of ``n_groups * group_len`` coefficients.
        scales: ``(n_groups,)`` per-group amplitude scale (``scale_dtype``).
        levels: ``"lloyd"`` only: float16 ``(2^amplitude_bits,)`` fitted normalised amplitude levels in [0, 1]
            (``None`` otherwise: ``"uniform"`` levels are implied by the bit width).
        amplitude_bits, phase_bits: bit widths (1..8 each).
        group_size: coefficients per scale, ``None`` for one scale per matrix.
        shape: ``(rows, cols)`` of the quantised matrix.
        codebook: ``"uniform"``, ``"lloyd"`` or ``"vq"``.
        table: for ``"vq"`` only, float16 ``(2^(b_r+b_theta), 2)`` normalised points (real, imag).
    """

    codes: torch.Tensor
    scales: torch.Tensor
    amplitude_bits: int
    phase_bits: int
    group_size: Optional[int]
    shape: tuple[int, int]
    codebook: str = "uniform"
    levels: Optional[torch.Tensor] = None
    table: Optional[torch.Tensor] = None

    @property
    def code_bits(self) -> int:
        return self.amplitude_bits + self.phase_bits

    @property
    def group_len(self) -> int:
        return self.group_size if self.group_size is not None else self.shape[0] * self.shape[1]

    @property
    def padded_count(self) -> int:
        return self.scales.numel() * self.group_len

    def lookup_table(self) -> torch.Tensor:
        """Complex64 ``(2^(b_r+b_theta),)`` table: entry ``code`` is ``level * e^{i theta}`` (or the VQ point)."""
        return code_table(self.levels, self.table, self.amplitude_bits, self.phase_bits, self.codes.device)

    def dequantize(self) -> torch.Tensor:
        """Complex64 ``(rows, cols)`` matrix the codes stand for."""
        rows, cols = self.shape
        codes = unpack_codes(self.codes, self.code_bits, self.padded_count)
        values = self.lookup_table()[codes].view(-1, self.group_len)
        values = values * self.scales.float().unsqueeze(1)
        return values.reshape(-1)[: rows * cols].view(rows, cols)

    def nbits(self) -> int:
        """Bits stored: packed codes, scales, and the fitted levels or VQ table where there is one."""
        stored = [self.codes, self.scales, self.levels, self.table]
        return sum(t.numel() * t.element_size() * 8 for t in stored if t is not None)


def code_table(
    levels: Optional[torch.Tensor],
    table: Optional[torch.Tensor],
    amplitude_bits: int,
    phase_bits: int,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Complex64 ``(2^(a+p),)`` table of the stored codebook: the VQ points ``table`` ``(2^(a+p), 2)`` if given,
    else the polar grid of amplitude ``levels`` (``None``: the uniform grid of ``amplitude_bits``)."""
    if table is not None:
        return torch.view_as_complex(table.float().contiguous())
    if levels is None:
        levels = uniform_levels(amplitude_bits, device)
    return polar_lookup_table(levels.float(), phase_bits)


def polar_lookup_table(levels: torch.Tensor, phase_bits: int) -> torch.Tensor:
    """Joint table for amplitude ``levels`` (float, ``(2^b_r,)``) and ``2^phase_bits`` phases."""
    n_phase = 1 << phase_bits
    phases = torch.arange(n_phase, device=levels.device, dtype=torch.float32) * (2 * math.pi / n_phase) - math.pi
    unit = torch.polar(torch.ones_like(phases), phases)
    return (levels.to(torch.float32).unsqueeze(1) * unit.unsqueeze(0)).reshape(-1)


def uniform_levels(amplitude_bits: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The paper's amplitude grid ``q / (2^b_r - 1)``, float32 ``(2^b_r,)``."""
    n = 1 << amplitude_bits
    return torch.arange(n, dtype=torch.float32, device=device) / (n - 1)


def polar_quantize(
    z: torch.Tensor,
    amplitude_bits: int,
    phase_bits: int,
    group_size: Optional[int] = None,
    *,
    codebook: Codebook = "uniform",
    phase_aware: bool = False,
    scale_dtype: torch.dtype = torch.float16,
    init_table: Optional[torch.Tensor] = None,
    table_fit: TableFit = "kmeans",
    refit_rounds: int = 0,
    column_weights: Optional[torch.Tensor] = None,
) -> PolarCodes:
    """Quantise a complex ``(rows, cols)`` matrix; see the module docstring for the scheme.

    ``init_table`` (``"vq"`` with ``table_fit="kmeans"`` only): start k-means from these ``(2^bits, 2)``
    points, with fewer rounds. ``table_fit``, ``refit_rounds``: see the module docstring.
    ``column_weights``: optional positive ``(cols,)`` weight of each column's squared error in the
    refit (e.g. the half-spectrum weights, so the refit lowers the spatial error); default uniform.
    """
    if z.dim() != 2 or not z.is_complex():
        raise ValueError(f"polar_quantize expects a 2-D complex matrix, got shape {tuple(z.shape)} dtype {z.dtype}")
    check_fields({"amplitude_bits": amplitude_bits, "phase_bits": phase_bits, "codebook": codebook,
                  "table_fit": table_fit, "refit_rounds": refit_rounds})
    if table_fit != "kmeans" and codebook != "vq":
        raise ValueError(f"table_fit={table_fit!r} applies to codebook='vq' only, got codebook={codebook!r}")
    if column_weights is not None and (not isinstance(column_weights, torch.Tensor)
                                       or tuple(column_weights.shape) != (z.shape[1],)):
        raise ValueError(f"column_weights must be a tensor of shape ({z.shape[1]},), got "
                         f"{getattr(column_weights, 'shape', type(column_weights).__name__)}")
    codes = _quantize_once(z, amplitude_bits, phase_bits, group_size, codebook, phase_aware, scale_dtype,
                           init_table, table_fit)
    if refit_rounds:
        codes = refit_codes(z, codes, refit_rounds, column_weights)
    return codes


def _quantize_once(
    z: torch.Tensor,
    amplitude_bits: int,
    phase_bits: int,
    group_size: Optional[int],
    codebook: str,
    phase_aware: bool,
    scale_dtype: torch.dtype,
    init_table: Optional[torch.Tensor],
    table_fit: str,
    with_codes: bool = True,
) -> PolarCodes:
    """Max-amplitude group scales, the codebook's fit and nearest codes (no refit).

    ``with_codes=False`` (``table_fit="gaussian"`` only): the codes are left at 0, for a caller that replaces them.
    """
    groups, shape = _grouped(z, group_size)
    amplitude = groups.abs()
    if codebook == "vq":
        scales = _group_scales(amplitude, scale_dtype)
        fixed = None if table_fit != "gaussian" else gaussian_table(amplitude_bits, phase_bits, groups.shape[1])
        return _vq_quantize(groups, scales, amplitude_bits, phase_bits, group_size, shape, init_table,
                            fixed_table=fixed, with_codes=with_codes)
    q_theta, miss = _phase_codes(groups, phase_bits)
    if phase_aware:
        amplitude = amplitude * torch.cos(miss)
    scales = _group_scales(amplitude, scale_dtype)
    unit_amp = amplitude / scales.float().unsqueeze(1)
    levels = uniform_levels(amplitude_bits, z.device)
    stored_levels = None
    if codebook == "lloyd":
        stored_levels = _lloyd_levels(unit_amp, scales.float().square().unsqueeze(1), levels).to(torch.float16)
        levels = stored_levels.float()
    q_r = _nearest_level(unit_amp, levels)
    codes = pack_codes(((q_r << phase_bits) | q_theta).reshape(-1), amplitude_bits + phase_bits)
    return PolarCodes(codes=codes, scales=scales, levels=stored_levels, amplitude_bits=amplitude_bits,
                      phase_bits=phase_bits, group_size=group_size, shape=shape, codebook=codebook)


def refit_codes(z: torch.Tensor, codes: PolarCodes, rounds: int,
                column_weights: Optional[torch.Tensor] = None) -> PolarCodes:
    """``rounds`` alternations of [nearest 2-D codes, least-squares group scales, least-squares codebook].

    Minimises ``sum_k w_k |z_k - scale * table[code_k]|^2`` (``w``: `column_weights` per column, default 1)
    by block coordinate descent from `codes` (which must quantise `z`): codes given scales and table
    (nearest point), scales given codes (one weighted least squares per group), then the codebook given
    both (``"lloyd"``: each amplitude level along its points' phases; ``"vq"``: each point; ``"uniform"``:
    implied by the bits, not refitted). Ends with the codes nearest to the final scales and table.
    Scales stay positive (at least 1e-3 of their start) and are rounded to the codes' scale dtype,
    levels and points to float16, as stored.
    """
    groups, shape = _grouped(z, codes.group_size)
    if shape != codes.shape:
        raise ValueError(f"codes quantise a {codes.shape} matrix, got z of shape {shape}")
    rows, cols = shape
    w = torch.ones(cols, device=z.device) if column_weights is None else column_weights.to(z.device, torch.float32)
    pad = groups.numel() - rows * cols
    wts = torch.nn.functional.pad(w.repeat(rows), (0, pad)).view(groups.shape)
    scale_dtype = codes.scales.dtype
    scales = codes.scales.float()
    floor = scales * 1e-3
    levels = None if codes.levels is None else codes.levels.float()
    table = codes.lookup_table().to(z.device)
    n_phase = 1 << codes.phase_bits
    for _ in range(rounds):
        idx = _nearest_code(groups, scales, table)
        t = table[idx]
        num = (wts * (t.conj() * groups).real).sum(1)
        den = (wts * t.abs().square()).sum(1)
        fitted = torch.maximum(num / den.clamp_min(1e-30), floor).to(scale_dtype)
        if not torch.isfinite(fitted).all():
            fitted = torch.where(torch.isfinite(fitted), fitted, codes.scales)
        scales = torch.where(den > 0, fitted.float(), scales)
        unit = groups / scales.unsqueeze(1)
        mass_w = (wts * scales.square().unsqueeze(1)).reshape(-1)  # a normalised point's error weight
        flat_idx = idx.reshape(-1)
        if codes.codebook == "lloyd" and levels is not None:
            amp = flat_idx // n_phase
            phase = table[flat_idx] / table[flat_idx].abs().clamp_min(1e-30)
            proj = (unit.reshape(-1) * phase.conj()).real
            mass = torch.zeros_like(levels).index_add_(0, amp, mass_w)
            moment = torch.zeros_like(levels).index_add_(0, amp, mass_w * proj)
            levels = torch.where(mass > 0, moment / mass.clamp_min(1e-30), levels).to(torch.float16).float()
            table = polar_lookup_table(levels, codes.phase_bits)
        elif codes.codebook == "vq":
            mass = torch.zeros(table.numel(), device=z.device).index_add_(0, flat_idx, mass_w)
            moment = torch.zeros_like(table).index_add_(0, flat_idx, mass_w.to(table.dtype) * unit.reshape(-1))
            table = torch.where(mass > 0, moment / mass.clamp_min(1e-30).to(table.dtype), table)
            table = torch.view_as_complex(torch.view_as_real(table).to(torch.float16).float().contiguous())
    idx = _nearest_code(groups, scales, table)
    return PolarCodes(
        codes=pack_codes(idx.reshape(-1), codes.code_bits), scales=scales.to(scale_dtype),
        amplitude_bits=codes.amplitude_bits, phase_bits=codes.phase_bits, group_size=codes.group_size, shape=shape,
        codebook=codes.codebook, levels=None if levels is None else levels.to(torch.float16),
        table=None if codes.table is None else torch.view_as_real(table).to(torch.float16).contiguous(),
    )


def _nearest_code(groups: torch.Tensor, scales: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Index (int64, ``groups.shape``) of the nearest point of the complex ``table`` to each ``group / scale``."""
    unit = torch.view_as_real((groups / scales.unsqueeze(1)).reshape(-1).contiguous())
    return _nearest_point(unit, torch.view_as_real(table.contiguous())).view(groups.shape)


_GAUSSIAN_TABLES: dict[tuple[int, int, int], torch.Tensor] = {}


def gaussian_table(amplitude_bits: int, phase_bits: int, group_len: int) -> torch.Tensor:
    """The fixed VQ table: float16 ``(2^(a+p), 2)`` points (CPU), cached per ``(a, p, group_len)``.

    Weighted k-means (the ``"vq"`` fit: weights ``scale^2``, initialised on the polar grid) of
    ``GAUSSIAN_TABLE_SAMPLES`` complex Gaussian samples in groups of ``group_len``, each divided by
    its group's largest amplitude; seeded, so the same on every call and process.
    """
    key = (int(amplitude_bits), int(phase_bits), min(int(group_len), GAUSSIAN_TABLE_SAMPLES))
    if key not in _GAUSSIAN_TABLES:
        gen = torch.Generator().manual_seed(GAUSSIAN_TABLE_SEED)
        group_len = key[2]
        n_groups = max(1, GAUSSIAN_TABLE_SAMPLES // group_len)
        z = torch.complex(torch.randn(n_groups, group_len, generator=gen), torch.randn(n_groups, group_len, generator=gen))
        scale = z.abs().amax(1, keepdim=True)
        unit = torch.view_as_real((z / scale).reshape(-1))
        weights = scale.square().expand(n_groups, group_len).reshape(-1)
        points = _fit_vq_points(unit, weights, amplitude_bits, phase_bits, GAUSSIAN_TABLE_ITERS)
        _GAUSSIAN_TABLES[key] = points.to(torch.float16)
    return _GAUSSIAN_TABLES[key].clone()


def _grouped(z: torch.Tensor, group_size: Optional[int]) -> tuple[torch.Tensor, tuple[int, int]]:
    """Complex64 ``(n_groups, group_len)`` row-major groups of ``z`` (last one zero-padded) and ``z``'s shape."""
    rows, cols = z.shape
    count = rows * cols
    group_len = count if group_size is None else int(group_size)
    n_groups = math.ceil(count / group_len)
    flat = torch.nn.functional.pad(z.to(torch.complex64).reshape(-1), (0, n_groups * group_len - count))
    return flat.view(n_groups, group_len), (rows, cols)


def _phase_codes(groups: torch.Tensor, phase_bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform phase codes (int64; ``+pi`` wraps to code 0) and the signed phase miss in ``[-pi, pi)``."""
    n_phase = 1 << phase_bits
    dtheta = 2 * math.pi / n_phase
    theta = torch.angle(groups)
    q_theta = torch.round((theta + math.pi) / dtheta).to(torch.int64) % n_phase
    miss = torch.remainder(theta - (q_theta.to(torch.float32) * dtheta - math.pi) + math.pi, 2 * math.pi) - math.pi
    return q_theta, miss


def _group_scales(amplitude: torch.Tensor, scale_dtype: torch.dtype) -> torch.Tensor:
    scales = amplitude.amax(dim=1)
    scales = torch.where(scales > 0, scales, torch.ones_like(scales)).to(scale_dtype)
    if not torch.isfinite(scales).all():
        raise ValueError(
            f"amplitude scales overflow scale_dtype={scale_dtype}; pass scale_dtype=torch.float32"
        )
    return scales


def _nearest_level(values: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Index of the nearest entry of sorted ``levels`` for each value (int64)."""
    mids = (levels[1:] + levels[:-1]) / 2
    return torch.bucketize(values.contiguous(), mids.contiguous())


def _vq_quantize(
    groups: torch.Tensor,
    scales: torch.Tensor,
    amplitude_bits: int,
    phase_bits: int,
    group_size: Optional[int],
    shape: tuple[int, int],
    init_table: Optional[torch.Tensor] = None,
    fixed_table: Optional[torch.Tensor] = None,
    with_codes: bool = True,
) -> PolarCodes:
    """2-D k-means codebook initialised on the polar grid (or ``init_table``); codes are nearest-point indices.

    ``fixed_table`` (float16 ``(2^bits, 2)``): use these points instead of fitting them. ``with_codes=False``:
    leave every code at 0 (a caller that chooses the codes itself skips the nearest-point search).
    """
    unit = torch.view_as_real((groups / scales.float().unsqueeze(1)).reshape(-1))
    if fixed_table is not None:
        table = fixed_table.to(groups.device)
    else:
        weights = scales.float().square().unsqueeze(1).expand(groups.shape).reshape(-1)
        init, rounds = None, VQ_ITERS
        if init_table is not None:
            if tuple(init_table.shape) != (1 << (amplitude_bits + phase_bits), 2):
                raise ValueError(f"init_table must have shape {(1 << (amplitude_bits + phase_bits), 2)}, "
                                 f"got {tuple(init_table.shape)}")
            init, rounds = init_table.to(groups.device, torch.float32).clone(), VQ_WARM_ITERS
        stride = max(1, unit.shape[0] // VQ_FIT_SAMPLES)
        table = _fit_vq_points(unit[::stride], weights[::stride], amplitude_bits, phase_bits, rounds, init)
        table = table.to(torch.float16)
    idx = (_nearest_point(unit, table.float()) if with_codes
           else torch.zeros(unit.shape[0], dtype=torch.int64, device=unit.device))
    return PolarCodes(
        codes=pack_codes(idx, amplitude_bits + phase_bits),
        scales=scales,
        amplitude_bits=amplitude_bits,
        phase_bits=phase_bits,
        group_size=group_size,
        shape=shape,
        codebook="vq",
        table=table,
    )


def _fit_vq_points(unit: torch.Tensor, weights: torch.Tensor, amplitude_bits: int, phase_bits: int, rounds: int,
                   init: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Weighted 2-D k-means: float32 ``(2^bits, 2)`` points for real pairs `unit` ``(N, 2)`` with `weights` ``(N,)``,
    started from `init` or the polar grid of mid-bin amplitude levels."""
    if init is None:
        n_amp = 1 << amplitude_bits
        levels = (torch.arange(n_amp, device=unit.device, dtype=torch.float32) + 0.5) / n_amp
        init = torch.view_as_real(polar_lookup_table(levels, phase_bits)).contiguous()
    points = init
    for _ in range(rounds):
        idx = _nearest_point(unit, points)
        mass = torch.zeros(points.shape[0], device=unit.device).index_add_(0, idx, weights)
        moment = torch.zeros_like(points).index_add_(0, idx, unit * weights.unsqueeze(1))
        points = torch.where(mass.unsqueeze(1) > 0, moment / mass.clamp_min(1e-30).unsqueeze(1), points)
    return points


def _nearest_point(points: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Index (int64) of the nearest ``table`` row for each row of ``points`` ``(N, 2)``, in chunks."""
    out = torch.empty(points.shape[0], dtype=torch.int64, device=points.device)
    table_sq = table.square().sum(1)
    step = VQ_CHUNK.get(points.device.type, VQ_CHUNK["cpu"])
    for start in range(0, points.shape[0], step):
        chunk = points[start : start + step]
        out[start : start + step] = (table_sq - 2 * chunk @ table.T).argmin(dim=1)
    return out


def _lloyd_levels(values: torch.Tensor, weights: torch.Tensor, init: torch.Tensor) -> torch.Tensor:
    """Weighted 1-D Lloyd-Max levels for ``values`` (weights broadcast), sorted float32.

    Fitted on a strided subsample of at most ``VQ_FIT_SAMPLES`` values: a handful of
    bins over tens of millions of values is bound by atomics on a GPU.
    """
    levels = init.clone()
    w = weights.expand_as(values).reshape(-1)
    v = values.reshape(-1)
    stride = max(1, v.numel() // VQ_FIT_SAMPLES)
    w, v = w[::stride], v[::stride]
    k = levels.numel()
    for _ in range(LLOYD_ITERS):
        idx = _nearest_level(v, levels)
        mass = torch.zeros(k, device=v.device).index_add_(0, idx, w)
        moment = torch.zeros(k, device=v.device).index_add_(0, idx, w * v)
        levels = torch.where(mass > 0, moment / mass.clamp_min(1e-30), levels)
        levels, _ = torch.sort(levels)
    return levels

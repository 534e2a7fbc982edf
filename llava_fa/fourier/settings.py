"""`CompressionSettings`: the per-matrix settings of the Fourier Approximation, their defaults and their checks.

The one place that states the defaults and validates the fields. `fourier_approximate`,
`FourierLinear` / `fourier_layout`, `FourierApproxConfig` (which adds the HF concerns: target
modules, overrides, dtypes as strings) and the benchmarks all build on it.

Wrong types raise `TypeError`, wrong values `ValueError`; both name the field, and `where`
(e.g. ``FourierApproxConfig.overrides['layers.1']``) when given.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Optional

import torch

TRANSFORMS: tuple[str, ...] = ("rfft", "rfft2")
CODEBOOKS: tuple[str, ...] = ("uniform", "lloyd", "vq")
SVD_METHODS: tuple[str, ...] = ("exact", "randomized")
TABLE_FITS: tuple[str, ...] = ("kmeans", "gaussian")
#: dtypes the factors and scales may be stored in.
STORAGE_DTYPES: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16, torch.float32)


@dataclass(frozen=True)
class CompressionSettings:
    """Settings of one matrix's compression (defaults are the package's defaults).

    Attributes:
        rank: complex rank ``r`` of the low-rank factors (real rank <= 2r); 0 for codes only.
        amplitude_bits, phase_bits: PolarQuant bit widths, 1..8 each (one code of their sum per
            complex coefficient).
        group_size: complex coefficients per amplitude scale; ``None``: one scale per matrix (paper).
        transform: ``"rfft"`` (1-D along the input dimension, packed) or ``"rfft2"`` (paper).
        max_iters: at most this many FourierSVD / PolarQuant rounds of Algorithm 1 (the best is kept).
        svd_method: ``"randomized"`` (seeded) or ``"exact"``.
        codebook: ``"lloyd"`` (fitted amplitude levels), ``"uniform"`` (paper) or ``"vq"`` (2-D points).
        phase_aware: quantise the amplitude projected on the chosen phase (paper: False).
        factor_dtype: storage dtype of the factors' real and imaginary parts.
        scale_dtype: storage dtype of the amplitude scales.
        seed: seed of the randomized SVD.
        error_feedback: choose the codes by GPTQ-style error-feedback rounding with the layer's input
            second moment ``E[x x^T]`` (opt-in; needs a :class:`~.calibration.Calibration` with
            ``second_moment``, and ``transform="rfft"``). Lowers the *output* error at the same storage
            (only the codes differ: same scales, table, bits and kernels) at a higher compression time
            (a Cholesky of the ``(n, n)`` Hessian and a sequential pass over the ``n/2`` coefficient
            columns per PolarQuant round). Rounds are then compared by that output error.
        feedback_damp: error-feedback dampening, the fraction of the mean Hessian diagonal added to
            it (GPTQ's ``percdamp``), ``>= 0``; ignored without `error_feedback`.
        table_fit: how a ``codebook="vq"`` table is fitted: ``"kmeans"`` (2-D k-means per matrix) or
            ``"gaussian"`` (opt-in: one fixed table, fitted once to normalised complex Gaussian samples
            and cached; no per-matrix k-means, so about the compression time of ``"lloyd"``; stored
            and run like any VQ table). Other values of `codebook` need ``"kmeans"``.
        refit_rounds: rounds of least-squares refit of the group scales and the codebook (Lloyd
            levels / VQ points) given the codes, each followed by re-choosing the codes (nearest 2-D
            point), after the first rounding (opt-in; 0: off). Same storage and bits; each round lowers
            the weight error. With `error_feedback` the refit runs before it (on the plain codes) and
            the error-feedback codes use the refitted scales and codebook.
    """

    rank: int = 16
    amplitude_bits: int = 3
    phase_bits: int = 5
    group_size: Optional[int] = 64
    transform: str = "rfft"
    max_iters: int = 5
    svd_method: str = "randomized"
    codebook: str = "lloyd"
    phase_aware: bool = True
    factor_dtype: torch.dtype = torch.float16
    scale_dtype: torch.dtype = torch.float16
    seed: int = 0
    error_feedback: bool = False
    feedback_damp: float = 0.1
    table_fit: str = "kmeans"
    refit_rounds: int = 0

    def __post_init__(self) -> None:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        check_fields(fields)
        check_combination(fields)

    def replace(self, **changes: Any) -> CompressionSettings:
        """A copy with `changes` applied (validated)."""
        unknown = sorted(set(changes) - set(FIELDS))
        if unknown:
            raise TypeError(f"CompressionSettings has no field(s) {unknown}; fields: {FIELDS}")
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """``{field: value}`` (dtypes as `torch.dtype`)."""
        return {name: getattr(self, name) for name in FIELDS}

    @property
    def code_bits(self) -> int:
        return self.amplitude_bits + self.phase_bits


#: Field names, in declaration order.
FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(CompressionSettings))
#: Field defaults.
DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(CompressionSettings)}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_field(name: str, value: Any, low: int, high: Optional[int], where: str) -> None:
    if not _is_int(value):
        raise TypeError(f"{where}{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"in {low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"{where}{name} must be an integer {bound}, got {value!r}")


def _choice_field(name: str, value: Any, choices: tuple[str, ...], where: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{where}{name} must be a string among {choices}, got {type(value).__name__} {value!r}")
    if value not in choices:
        raise ValueError(f"{where}{name}={value!r} is not supported; use one of {choices}")


def check_field(name: str, value: Any, where: str = "") -> None:
    """Validate one field's value; `where` prefixes the message (e.g. ``"FourierApproxConfig: "``)."""
    if name == "rank":
        _int_field(name, value, 0, None, where)
    elif name in ("amplitude_bits", "phase_bits"):
        _int_field(name, value, 1, 8, where)
    elif name == "group_size":
        if value is not None:
            _int_field(name, value, 1, None, where)
    elif name == "refit_rounds":
        _int_field(name, value, 0, None, where)
    elif name == "table_fit":
        _choice_field(name, value, TABLE_FITS, where)
    elif name == "max_iters":
        _int_field(name, value, 1, None, where)
    elif name == "seed":
        _int_field(name, value, 0, None, where)
    elif name == "transform":
        _choice_field(name, value, TRANSFORMS, where)
    elif name == "codebook":
        _choice_field(name, value, CODEBOOKS, where)
    elif name == "svd_method":
        _choice_field(name, value, SVD_METHODS, where)
    elif name in ("phase_aware", "error_feedback"):
        if not isinstance(value, bool):
            raise TypeError(f"{where}{name} must be True or False, got {type(value).__name__} {value!r}")
    elif name == "feedback_damp":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{where}feedback_damp must be a number >= 0, got {type(value).__name__} {value!r}")
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{where}feedback_damp must be a finite number >= 0 (e.g. 0.1), got {value!r}")
    elif name in ("factor_dtype", "scale_dtype"):
        if not isinstance(value, torch.dtype):
            raise TypeError(f"{where}{name} must be a torch.dtype among {STORAGE_DTYPES}, got {value!r}")
        if value not in STORAGE_DTYPES:
            raise ValueError(f"{where}{name}={value} is not supported; use one of {STORAGE_DTYPES}")
    else:
        raise TypeError(f"{where}unknown compression field {name!r}; fields: {FIELDS}")


def check_fields(fields: dict[str, Any], where: str = "") -> None:
    """Validate every ``{field: value}`` of `fields` (a subset of `FIELDS`)."""
    for name, value in fields.items():
        check_field(name, value, where)


def check_combination(fields: dict[str, Any], where: str = "") -> None:
    """Checks across fields (`ValueError`): ``error_feedback=True`` needs ``transform="rfft"``,
    ``table_fit="gaussian"`` needs ``codebook="vq"``.

    `fields` may be partial; missing fields take their defaults.
    """
    merged = {**DEFAULTS, **fields}
    if merged["error_feedback"] and merged["transform"] != "rfft":
        raise ValueError(f"{where}error_feedback=True works in the 1-D rfft basis only, got "
                         f"transform={merged['transform']!r}; set transform='rfft' or error_feedback=False")
    if merged["table_fit"] != "kmeans" and merged["codebook"] != "vq":
        raise ValueError(f"{where}table_fit={merged['table_fit']!r} fits a codebook='vq' table, got "
                         f"codebook={merged['codebook']!r}; set codebook='vq' or table_fit='kmeans'")


def check_rank_fits(rank: int, rows: int, cols: int) -> None:
    """`ValueError` if `rank` exceeds the largest rank of a ``rows x cols`` spectrum."""
    if rank > min(rows, cols):
        raise ValueError(f"rank={rank} exceeds the largest rank of the {rows} x {cols} spectrum ({min(rows, cols)})")


__all__ = ["CODEBOOKS", "DEFAULTS", "FIELDS", "STORAGE_DTYPES", "SVD_METHODS", "TABLE_FITS", "TRANSFORMS", "CompressionSettings",
           "check_combination", "check_field", "check_fields", "check_rank_fits"]

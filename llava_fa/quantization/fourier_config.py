r"""`FourierApproxConfig`: the transformers quantization config of the Fourier Approximation.

`from_pretrained(src, quantization_config=FourierApproxConfig(rank=8, amplitude_bits=4, phase_bits=4))`
compresses every `nn.Linear` (but `modules_to_not_convert`) with
`llava_fa.fourier.fourier_approximate` as it is loaded. The config is JSON-serialisable
(`to_dict` / `from_dict` round-trip) and is written to `config.json` by `save_pretrained`.

The per-matrix fields, their defaults and their checks are the core's
`llava_fa.fourier.settings.CompressionSettings`; this class adds the HF concerns (target modules,
overrides, dtypes as strings, the calibration file).

Per-module settings: `overrides` maps a pattern to a dict of per-matrix fields (`rank`,
`amplitude_bits`, `phase_bits`, `group_size`, `transform`, `max_iters`, `svd_method`, `codebook`,
`phase_aware`, `error_feedback`, `feedback_damp`, `table_fit`, `refit_rounds`). Patterns are matched like peft's
`rank_pattern`: a regular expression that must
match a whole suffix of the module name made of complete dotted components
(``re.fullmatch(rf"(.*\.)?{pattern}", name)``): `"layers.1.mlp.up_proj"` or `"up_proj"` hit
`model.layers.1.mlp.up_proj`, `"layers.1"` hits the module `model.layers.1` only (not its children and
not `layers.12`), `r"layers\.1\..*"` hits everything under it. Every matching pattern applies, in
insertion order (later ones win).

Calibration: `calibration` is the path of a statistics file while compressing; the saved
`config.json` keeps no path, only the file's SHA-256 (`calibration_sha256`).

Error feedback (opt-in): `error_feedback=True` chooses the codes by GPTQ-style error-feedback rounding
with each layer's input second moment, read from the calibration file (write it with
`llava_fa.calibrate(model, batches, path, second_moment=True)`). It lowers the layer *output* error at
the same storage (same scales, codebook, bits, kernels and saved layout: only the codes differ) and
costs compression time: per matrix a Cholesky of the ``(in, in)`` Hessian and a sequential pass over
the ``in/2`` coefficient columns, per PolarQuant round (rank > 0 runs up to `max_iters` of them), and
the file grows by ``in^2 * 4`` bytes per distinct layer input. Modules whose input has no second
moment in the file (wider than `second_moment_max_features` when it was collected) are rounded
without it, with a warning.

This file is shipped as Hub remote code: it only imports installed libraries and flat
siblings (`from ..fourier.x import y` becomes `from .x import y`).
"""

from __future__ import annotations

import os
import re
from typing import Any, Optional

import torch
from transformers.utils.quantization_config import QuantizationConfigMixin

from ..fourier.calibration import CALIBRATION_STATS, DEFAULT_CALIBRATION_STATS
from ..fourier.settings import DEFAULTS, CompressionSettings, check_combination, check_fields

QUANT_METHOD = "fourier_approx"

#: Module names never converted unless the user passes their own list (output head, embeddings).
DEFAULT_MODULES_TO_NOT_CONVERT: tuple[str, ...] = ("lm_head", "embed_tokens", "embeddings")

#: Fields that `overrides` may change per module (the per-matrix compression settings).
PER_MODULE_FIELDS: tuple[str, ...] = (
    "rank", "amplitude_bits", "phase_bits", "group_size", "transform", "max_iters", "svd_method",
    "codebook", "phase_aware", "error_feedback", "feedback_damp", "table_fit", "refit_rounds",
)

_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_WHERE = "FourierApproxConfig: "


def dtype_from_name(name: Optional[str]) -> Optional[torch.dtype]:
    """`"bfloat16"` -> `torch.bfloat16`; `None` stays `None`."""
    return None if name is None else _DTYPES[name]


def _dtype_name(value: Any, field: str, allow_none: bool) -> Optional[str]:
    if value is None and allow_none:
        return None
    if isinstance(value, torch.dtype):
        value = str(value).removeprefix("torch.")
    if not isinstance(value, str):
        raise TypeError(f"{_WHERE}{field} must be a dtype name among {sorted(_DTYPES)}, got {value!r}.")
    if value not in _DTYPES:
        raise ValueError(f"{_WHERE}{field}={value!r} is not supported; use one of {sorted(_DTYPES)}"
                         + (" or None" if allow_none else "") + ".")
    return value


def override_matches(pattern: str, module_name: str) -> bool:
    """peft's `rank_pattern` rule: `pattern` matches a whole dotted suffix of `module_name`."""
    return re.fullmatch(rf"(.*\.)?(?:{pattern})", module_name) is not None


class FourierApproxConfig(QuantizationConfigMixin):
    """Settings of the Fourier Approximation quantizer (`quant_method="fourier_approx"`).

    Args:
        rank, amplitude_bits, phase_bits, group_size, transform, max_iters, svd_method, codebook,
        phase_aware, seed: the per-matrix settings, defaults and meaning as in
            `llava_fa.fourier.settings.CompressionSettings`.
        error_feedback: opt-in error-feedback rounding (see the module docstring): lower output error at
            the same bits, more compression time; needs `calibration` (a file written with
            ``second_moment=True``) and ``transform="rfft"``.
        feedback_damp: its dampening, the fraction of the mean Hessian diagonal added to it (>= 0).
        table_fit: ``"kmeans"`` (default: a 2-D k-means table per matrix) or ``"gaussian"`` (opt-in, with
            ``codebook="vq"``: one fixed table fitted once to normalised complex Gaussian samples; the
            quality of a per-matrix k-means table at about the compression time of ``"lloyd"``; same
            storage and kernels as any VQ table).
        refit_rounds: opt-in (default 0) rounds of least-squares refit of the group scales and the
            codebook given the codes, each followed by re-rounding: lower weight error at the same bits,
            a little more compression time per round (one nearest-point search).
        factor_dtype, scale_dtype: storage dtypes (names or `torch.dtype`) of the factors and the
            amplitude scales; factors are trainable float32 parameters in memory.
        calibration: `None` or the path of a statistics file written by `llava_fa.calibrate`; makes the
            compression minimise the calibration-weighted (output) error. Not saved: `to_dict` writes
            `calibration=None` and the file's SHA-256 as `calibration_sha256`.
        calibration_sha256: the SHA-256 of the statistics file a saved model was compressed with
            (informational; set by `to_dict`).
        calibration_stats: statistics of the file to use, among `"power"` (spectral column weights),
            `"channel"` (spatial input-channel scaling) and `"fisher"` (row weights); default
            `("channel", "fisher")`.
        channel_alpha: exponent of the channel scaling ``d = channel^(alpha / 2)``, in [0, 1].
        modules_to_not_convert: module names (prefix, regex or suffix, transformers' rules) kept dense;
            default: `lm_head` and embeddings. The output embeddings and tied weights are always kept.
        overrides: `{pattern: {field: value}}` per-module settings (see the module docstring).
        compute_dtype: dtype of the matmul in `FourierLinear.forward` (`None`: the input's dtype).

    Wrong types raise `TypeError`, wrong values `ValueError`, naming the field (and the override pattern).
    """

    def __init__(
        self,
        rank: int = DEFAULTS["rank"],
        amplitude_bits: int = DEFAULTS["amplitude_bits"],
        phase_bits: int = DEFAULTS["phase_bits"],
        group_size: Optional[int] = DEFAULTS["group_size"],
        transform: str = DEFAULTS["transform"],
        max_iters: int = DEFAULTS["max_iters"],
        svd_method: str = DEFAULTS["svd_method"],
        codebook: str = DEFAULTS["codebook"],
        phase_aware: bool = DEFAULTS["phase_aware"],
        error_feedback: bool = DEFAULTS["error_feedback"],
        feedback_damp: float = DEFAULTS["feedback_damp"],
        table_fit: str = DEFAULTS["table_fit"],
        refit_rounds: int = DEFAULTS["refit_rounds"],
        factor_dtype: Any = DEFAULTS["factor_dtype"],
        scale_dtype: Any = DEFAULTS["scale_dtype"],
        seed: int = DEFAULTS["seed"],
        calibration: Optional[str] = None,
        calibration_sha256: Optional[str] = None,
        calibration_stats: Optional[list[str]] = None,
        channel_alpha: float = 0.5,
        modules_to_not_convert: Optional[list[str]] = None,
        overrides: Optional[dict[str, dict[str, Any]]] = None,
        compute_dtype: Any = None,
        **kwargs: Any,
    ):
        method = kwargs.pop("quant_method", QUANT_METHOD)
        if method != QUANT_METHOD:
            raise ValueError(f"{_WHERE}quant_method must be {QUANT_METHOD!r}, got {method!r}.")
        if kwargs:
            raise TypeError(f"{_WHERE}unknown fields {sorted(kwargs)}; remove them or check their spelling.")
        self.quant_method = QUANT_METHOD
        self.rank, self.amplitude_bits, self.phase_bits, self.group_size = rank, amplitude_bits, phase_bits, group_size
        self.transform, self.max_iters, self.svd_method, self.codebook = transform, max_iters, svd_method, codebook
        self.phase_aware, self.seed = phase_aware, seed
        self.error_feedback, self.feedback_damp = error_feedback, feedback_damp
        self.table_fit, self.refit_rounds = table_fit, refit_rounds
        self.factor_dtype = _dtype_name(factor_dtype, "factor_dtype", allow_none=False)
        self.scale_dtype = _dtype_name(scale_dtype, "scale_dtype", allow_none=False)
        self.compute_dtype = _dtype_name(compute_dtype, "compute_dtype", allow_none=True)
        self.calibration = os.fspath(calibration) if isinstance(calibration, os.PathLike) else calibration
        self.calibration_sha256 = calibration_sha256
        self.calibration_stats = list(DEFAULT_CALIBRATION_STATS) if calibration_stats is None else calibration_stats
        self.channel_alpha = channel_alpha
        self.modules_to_not_convert = (list(DEFAULT_MODULES_TO_NOT_CONVERT) if modules_to_not_convert is None
                                       else modules_to_not_convert)
        if isinstance(self.modules_to_not_convert, tuple):
            self.modules_to_not_convert = list(self.modules_to_not_convert)
        self.overrides = {} if overrides is None else overrides
        if isinstance(self.overrides, dict):
            self.overrides = {k: dict(v) if isinstance(v, dict) else v for k, v in self.overrides.items()}
        self.post_init()

    def post_init(self) -> None:
        """Validate every field: `TypeError` / `ValueError` naming the field and the allowed values."""
        check_fields({**self.base_fields(), "seed": self.seed}, _WHERE)
        self._check_calibration()
        if not isinstance(self.modules_to_not_convert, list) or \
                not all(isinstance(m, str) and m for m in self.modules_to_not_convert):
            raise TypeError(f"{_WHERE}modules_to_not_convert must be a list of non-empty module names, "
                            f"got {self.modules_to_not_convert!r}.")
        self._check_overrides()
        self._check_error_feedback()

    def _check_calibration(self) -> None:
        if self.calibration is not None and not isinstance(self.calibration, str):
            raise TypeError(f"{_WHERE}calibration must be None or the path of a statistics file written by "
                            f"llava_fa.calibrate, got {type(self.calibration).__name__}.")
        if self.calibration_sha256 is not None and not isinstance(self.calibration_sha256, str):
            raise TypeError(f"{_WHERE}calibration_sha256 must be None or a hex string, got "
                            f"{type(self.calibration_sha256).__name__}.")
        stats = self.calibration_stats
        if not isinstance(stats, (list, tuple)) or not stats or not set(stats) <= set(CALIBRATION_STATS):
            raise ValueError(f"{_WHERE}calibration_stats must be a non-empty list among {CALIBRATION_STATS}, "
                             f"got {stats!r}.")
        self.calibration_stats = list(stats)
        alpha = self.channel_alpha
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
            raise TypeError(f"{_WHERE}channel_alpha must be a number in [0, 1], got {alpha!r}.")
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"{_WHERE}channel_alpha must be a number in [0, 1], got {alpha!r}.")

    def _check_overrides(self) -> None:
        if not isinstance(self.overrides, dict):
            raise TypeError(f"{_WHERE}overrides must be a dict {{pattern: {{field: value}}}}, got "
                            f"{type(self.overrides).__name__}.")
        for pattern, fields in self.overrides.items():
            where = f"FourierApproxConfig.overrides[{pattern!r}]: "
            try:
                re.compile(pattern)
            except (re.error, TypeError) as exc:
                raise ValueError(f"{where}not a valid regular expression ({exc}).") from None
            if not isinstance(fields, dict) or not fields:
                raise TypeError(f"{where}must be a non-empty dict of fields among {PER_MODULE_FIELDS}.")
            unknown = sorted(set(fields) - set(PER_MODULE_FIELDS))
            if unknown:
                raise ValueError(f"{where}fields {unknown} cannot be set per module; allowed: {PER_MODULE_FIELDS}.")
            check_fields(fields, where)

    def _check_error_feedback(self) -> None:
        """`ValueError` for error feedback with transform="rfft2" or with no statistics file to read."""
        base = self.base_fields()
        check_combination(base, _WHERE)
        wanted = bool(base["error_feedback"])
        for pattern, fields in self.overrides.items():
            check_combination({**base, **fields}, f"FourierApproxConfig.overrides[{pattern!r}]: ")
            wanted = wanted or bool(fields.get("error_feedback", False))
        if wanted and self.calibration is None and self.calibration_sha256 is None:
            raise ValueError(f"{_WHERE}error_feedback=True needs each layer's input second moment: write a "
                             f"statistics file with llava_fa.calibrate(model, batches, path, second_moment=True) and "
                             f"pass calibration=path, or set error_feedback=False.")

    def base_fields(self) -> dict[str, Any]:
        """The global per-matrix settings (before overrides)."""
        return {f: getattr(self, f) for f in PER_MODULE_FIELDS}

    def matching_overrides(self, module_name: str) -> list[str]:
        """Override patterns that match `module_name` (see the module docstring), in application order."""
        return [p for p in self.overrides if override_matches(p, module_name)]

    def settings_for(self, module_name: str) -> CompressionSettings:
        """The compression settings of `module_name`: globals updated by every matching override."""
        fields = self.base_fields()
        for pattern in self.matching_overrides(module_name):
            fields.update(self.overrides[pattern])
        return CompressionSettings(**fields, seed=self.seed, factor_dtype=dtype_from_name(self.factor_dtype),
                                   scale_dtype=dtype_from_name(self.scale_dtype))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict without local paths (the calibration file is recorded by its SHA-256)."""
        out = super().to_dict()
        out["quant_method"] = QUANT_METHOD
        if out.get("calibration") is not None:
            if out.get("calibration_sha256") is None and os.path.isfile(out["calibration"]):
                from ..fourier.calibration import file_sha256

                out["calibration_sha256"] = file_sha256(out["calibration"])
            out["calibration"] = None
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, QuantizationConfigMixin) and other.to_dict() == self.to_dict()


__all__ = ["FourierApproxConfig", "QUANT_METHOD", "DEFAULT_MODULES_TO_NOT_CONVERT", "PER_MODULE_FIELDS",
           "dtype_from_name", "override_matches"]

"""`FourierApproxConfig`: the transformers quantization config of the Fourier Approximation.

`from_pretrained(src, quantization_config=FourierApproxConfig(rank=8, amplitude_bits=4, phase_bits=4))`
compresses every `nn.Linear` (but `modules_to_not_convert`) with
`llava_fa.fourier.fourier_approximate` as it is loaded. The config is JSON-serialisable
(`to_dict` / `from_dict` round-trip) and is written to `config.json` by `save_pretrained`.

Per-module settings: `overrides` maps a regular expression (searched in the module's
full name, e.g. `"vision_tower"`) to a dict of compression fields (`rank`, `amplitude_bits`,
`phase_bits`, `group_size`, `transform`, `max_iters`, `svd_method`, `codebook`, `phase_aware`).
Every matching pattern applies, in insertion order (later ones win).

This file is shipped as Hub remote code: it only imports installed libraries and flat
siblings (`from ..fourier.x import y` becomes `from .x import y`).
"""

from __future__ import annotations

import re
from typing import Any, Optional

import torch
from transformers.utils.quantization_config import QuantizationConfigMixin

from ..fourier.polar_quant import CODEBOOKS
from ..fourier.svd import SVD_METHODS
from ..fourier.transform import TRANSFORMS

#: Statistics of a calibration file (see `llava_fa.quantization.calibrate`).
CALIBRATION_STATS: tuple[str, ...] = ("power", "channel", "fisher")
#: Used when `calibration_stats` is not given. The spectral "power" weights are left out: on real
#: MiniLM activations they moved the output error by < 2 % and they describe `x`, not the
#: channel-scaled input `x / d` the compressed matrix sees (see README, Calibration).
DEFAULT_CALIBRATION_STATS: tuple[str, ...] = ("channel", "fisher")

QUANT_METHOD = "fourier_approx"

#: Module names never converted unless the user passes their own list (output head, embeddings).
DEFAULT_MODULES_TO_NOT_CONVERT: tuple[str, ...] = ("lm_head", "embed_tokens", "embeddings")

#: Fields that `overrides` may change per module (the per-matrix compression settings).
PER_MODULE_FIELDS: tuple[str, ...] = (
    "rank", "amplitude_bits", "phase_bits", "group_size", "transform", "max_iters", "svd_method",
    "codebook", "phase_aware",
)

_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def dtype_from_name(name: Optional[str]) -> Optional[torch.dtype]:
    """`"bfloat16"` -> `torch.bfloat16`; `None` stays `None`."""
    return None if name is None else _DTYPES[name]


def _dtype_name(value: Any, field: str, allow_none: bool) -> Optional[str]:
    if value is None and allow_none:
        return None
    if isinstance(value, torch.dtype):
        value = str(value).removeprefix("torch.")
    if value not in _DTYPES:
        raise ValueError(f"FourierApproxConfig: {field}={value!r} is not supported; use one of {sorted(_DTYPES)}"
                         + (" or None" if allow_none else "") + ".")
    return value


def _check_int(field: str, value: Any, low: int, high: Optional[int] = None, where: str = "") -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low and (high is None or value <= high)
    if not ok:
        bound = f"in {low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"FourierApproxConfig{where}: {field} must be an integer {bound}, got {value!r}.")


def validate_compression_fields(fields: dict[str, Any], where: str = "") -> None:
    """Raise `ValueError` naming the field (and `where`, e.g. an override pattern) for a bad value."""
    for field, value in fields.items():
        if field == "rank":
            _check_int(field, value, 0, where=where)
        elif field in ("amplitude_bits", "phase_bits"):
            _check_int(field, value, 1, 8, where=where)
        elif field == "group_size":
            if value is not None:
                _check_int(field, value, 1, where=where)
        elif field == "max_iters":
            _check_int(field, value, 1, where=where)
        elif field == "transform" and value not in TRANSFORMS:
            raise ValueError(f"FourierApproxConfig{where}: transform={value!r} is not supported; use one of {TRANSFORMS}.")
        elif field == "svd_method" and value not in SVD_METHODS:
            raise ValueError(f"FourierApproxConfig{where}: svd_method={value!r} is not supported; use one of {SVD_METHODS}.")
        elif field == "codebook" and value not in CODEBOOKS:
            raise ValueError(f"FourierApproxConfig{where}: codebook={value!r} is not supported; use one of {CODEBOOKS}.")
        elif field == "phase_aware" and not isinstance(value, bool):
            raise ValueError(f"FourierApproxConfig{where}: phase_aware must be True or False, got {value!r}.")


class FourierApproxConfig(QuantizationConfigMixin):
    """Settings of the Fourier Approximation quantizer (`quant_method="fourier_approx"`).

    Args:
        rank: complex rank of the trainable low-rank factors per matrix (real rank <= 2 * rank).
        amplitude_bits, phase_bits: PolarQuant bit widths (1..8 each).
        group_size: complex coefficients per amplitude scale; `None`: one scale per matrix (paper).
        transform: `"rfft"` (1-D along inputs) or `"rfft2"` (the paper's 2-D transform).
        max_iters: at most this many rounds of Algorithm 1 (the best iterate is kept).
        svd_method: `"exact"` or `"randomized"` (seeded with `seed`).
        codebook: amplitude levels, `"uniform"` (paper), `"lloyd"` (fitted per matrix) or `"vq"`
            (2-D code points fitted per matrix; best quality, slowest to compress).
        phase_aware: quantise the amplitude projected on the chosen phase (paper: False).
        factor_dtype: dtype the factors are rounded to when compressing (they are stored as float32
            `[..., 2]` parameters so that they can be trained).
        scale_dtype: storage dtype of the amplitude scales.
        seed: seed of the randomized SVD.
        calibration: `None` or the path of a statistics file written by `llava_fa.calibrate`
            (per-module input power spectra and channel power, optionally output-gradient Fisher);
            makes the compression minimise the calibration-weighted (output) error.
        calibration_stats: which statistics of the file to use, among `"power"` (spectral column
            weights), `"channel"` (spatial input-channel scaling) and `"fisher"` (row weights); default
            `("channel", "fisher")` (see `DEFAULT_CALIBRATION_STATS`).
        channel_alpha: exponent of the channel scaling ``d = channel^(alpha / 2)``, in [0, 1].
        modules_to_not_convert: module names (prefix, regex or suffix, transformers' rules) kept dense;
            default: `lm_head` and embeddings. The output embeddings and tied weights are always kept.
        overrides: `{pattern: {field: value}}` per-module settings (see the module docstring).
        compute_dtype: dtype of the matmul in `FourierLinear.forward` (`None`: the input's dtype).
    """

    def __init__(
        self,
        rank: int = 16,
        amplitude_bits: int = 3,
        phase_bits: int = 5,
        group_size: Optional[int] = 64,
        transform: str = "rfft",
        max_iters: int = 5,
        svd_method: str = "randomized",
        codebook: str = "lloyd",
        phase_aware: bool = True,
        factor_dtype: Any = "float16",
        scale_dtype: Any = "float16",
        seed: int = 0,
        calibration: Optional[str] = None,
        calibration_stats: Optional[list[str]] = None,
        channel_alpha: float = 0.5,
        modules_to_not_convert: Optional[list[str]] = None,
        overrides: Optional[dict[str, dict[str, Any]]] = None,
        compute_dtype: Any = None,
        **kwargs: Any,
    ):
        method = kwargs.pop("quant_method", QUANT_METHOD)
        if method != QUANT_METHOD:
            raise ValueError(f"FourierApproxConfig: quant_method must be {QUANT_METHOD!r}, got {method!r}.")
        if kwargs:
            raise ValueError(f"FourierApproxConfig: unknown fields {sorted(kwargs)}; remove them or check their spelling.")
        self.quant_method = QUANT_METHOD
        self.rank = rank
        self.amplitude_bits = amplitude_bits
        self.phase_bits = phase_bits
        self.group_size = group_size
        self.transform = transform
        self.max_iters = max_iters
        self.svd_method = svd_method
        self.codebook = codebook
        self.phase_aware = phase_aware
        self.factor_dtype = _dtype_name(factor_dtype, "factor_dtype", allow_none=False)
        self.scale_dtype = _dtype_name(scale_dtype, "scale_dtype", allow_none=False)
        self.compute_dtype = _dtype_name(compute_dtype, "compute_dtype", allow_none=True)
        self.seed = seed
        self.calibration = None if calibration is None else str(calibration) if hasattr(calibration, "__fspath__") else calibration
        self.calibration_stats = list(DEFAULT_CALIBRATION_STATS) if calibration_stats is None else calibration_stats
        self.channel_alpha = channel_alpha
        self.modules_to_not_convert = (
            list(DEFAULT_MODULES_TO_NOT_CONVERT) if modules_to_not_convert is None
            else list(modules_to_not_convert) if isinstance(modules_to_not_convert, (list, tuple))
            else modules_to_not_convert
        )
        if overrides is None:
            overrides = {}
        self.overrides = {k: dict(v) if isinstance(v, dict) else v for k, v in overrides.items()} \
            if isinstance(overrides, dict) else overrides
        self.post_init()

    def post_init(self) -> None:
        """Validate every field; raise `ValueError` naming the field and the allowed values."""
        validate_compression_fields(self.base_fields())
        _check_int("seed", self.seed, 0)
        if self.calibration is not None and not isinstance(self.calibration, str):
            raise ValueError(f"FourierApproxConfig: calibration must be None or the path of a statistics file written "
                             f"by llava_fa.calibrate, got {type(self.calibration).__name__}.")
        if not isinstance(self.calibration_stats, (list, tuple)) or not self.calibration_stats or \
                not set(self.calibration_stats) <= set(CALIBRATION_STATS):
            raise ValueError(f"FourierApproxConfig: calibration_stats must be a non-empty list among {CALIBRATION_STATS}, "
                             f"got {self.calibration_stats!r}.")
        self.calibration_stats = list(self.calibration_stats)
        if isinstance(self.channel_alpha, bool) or not isinstance(self.channel_alpha, (int, float)) \
                or not 0.0 <= float(self.channel_alpha) <= 1.0:
            raise ValueError(f"FourierApproxConfig: channel_alpha must be a number in [0, 1], got {self.channel_alpha!r}.")
        if not isinstance(self.modules_to_not_convert, list) or \
                not all(isinstance(m, str) and m for m in self.modules_to_not_convert):
            raise ValueError(f"FourierApproxConfig: modules_to_not_convert must be a list of non-empty module names, "
                             f"got {self.modules_to_not_convert!r}.")
        if not isinstance(self.overrides, dict):
            raise ValueError(f"FourierApproxConfig: overrides must be a dict {{pattern: {{field: value}}}}, got "
                             f"{type(self.overrides).__name__}.")
        for pattern, fields in self.overrides.items():
            where = f".overrides[{pattern!r}]"
            try:
                re.compile(pattern)
            except (re.error, TypeError) as exc:
                raise ValueError(f"FourierApproxConfig{where}: not a valid regular expression ({exc}).") from None
            if not isinstance(fields, dict) or not fields:
                raise ValueError(f"FourierApproxConfig{where}: must be a non-empty dict of fields among {PER_MODULE_FIELDS}.")
            unknown = sorted(set(fields) - set(PER_MODULE_FIELDS))
            if unknown:
                raise ValueError(f"FourierApproxConfig{where}: fields {unknown} cannot be set per module; "
                                 f"allowed: {PER_MODULE_FIELDS}.")
            validate_compression_fields(fields, where)

    def base_fields(self) -> dict[str, Any]:
        """The global per-matrix settings (before overrides)."""
        return {f: getattr(self, f) for f in PER_MODULE_FIELDS}

    def matching_overrides(self, module_name: str) -> list[str]:
        """Override patterns that match `module_name` (`re.search`), in application order."""
        return [p for p in self.overrides if re.search(p, module_name)]

    def settings_for(self, module_name: str) -> dict[str, Any]:
        """The per-matrix settings of `module_name`: globals updated by every matching override."""
        fields = self.base_fields()
        for pattern in self.matching_overrides(module_name):
            fields.update(self.overrides[pattern])
        return fields

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict; `FourierApproxConfig.from_dict(c.to_dict())` equals `c`."""
        out = super().to_dict()
        out["quant_method"] = QUANT_METHOD
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, QuantizationConfigMixin) and other.to_dict() == self.to_dict()


__all__ = ["FourierApproxConfig", "QUANT_METHOD", "DEFAULT_MODULES_TO_NOT_CONVERT", "PER_MODULE_FIELDS",
           "dtype_from_name", "validate_compression_fields"]

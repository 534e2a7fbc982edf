"""Diagonal calibration: squared-error weights for spectrum rows and columns.

The calibrated objective of Algorithm 1 is ``sum_ik row_i * col_k * w_k * |E~_ik|^2``
with ``w_k`` the half-spectrum weights of :mod:`.transform`. For a linear layer
``y = W x`` the output error ``E[|E x|^2]`` is approximated by this with
``col_k = E|rfft(x)_k|^2`` (the mean input power spectrum: exact when inputs are
stationary, i.e. their covariance is circulant) and ``row_i`` = ones or the mean
squared output gradient (diagonal Fisher). FourierSVD uses the square roots as
``D_row`` / ``D_col`` (the paper's RowAverage / ColAverage of ``C``).

Real activations are far from stationary (a few channels carry outliers), so the
spectral column weights move the output error little (README, Calibration).
The spatial ``channel`` weights do: ``channel_j = E[x_j^2]`` (mean input power
per input channel) makes the compressor work on ``W diag(d)`` with
``d = channel^(alpha/2)`` (normalised to geometric mean 1, stored in float16) and
rebuild ``W = W' diag(1/d)``, so error lands where inputs are small (the
activation-aware scaling of AWQ). This is the default calibration collected by
``llava_fa.calibrate``.

The full input second moment ``E[x x^T]`` (``(n, n)``, collected with ``second_moment=True``) is
not a weight of this objective: it feeds error-feedback rounding
(``CompressionSettings.error_feedback``, :mod:`.error_feedback`), which minimises the output error
``tr(E Sigma E^T)`` itself.

This module holds all of calibration: the weights (:class:`Calibration`), collecting per-Linear
statistics with forward/backward hooks (:func:`collect_statistics`, :func:`calibrate`), the file
format (one safetensors file, ``{module}.channel`` / ``.power`` / ``.fisher`` float32 vectors and
optional ``.second_moment`` ``(n, n)`` matrices, stored once per shared input; metadata
``format=llava_fa.calibration``, ``aliases``; :func:`save_statistics`) and reading it once per load
(:class:`CalibrationFile`). Plain torch (+ safetensors); no transformers import.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn

from .transform import Transform, spectrum_columns

logger = logging.getLogger(__name__)

FORMAT = "llava_fa.calibration"
FORMAT_VERSION = "3"
#: Statistics a calibration file can hold; ``"power"`` is collected only on request.
CALIBRATION_STATS: tuple[str, ...] = ("power", "channel", "fisher")
#: Key suffix of the ``(n, n)`` input second moment (collected with ``second_moment=True``).
SECOND_MOMENT = "second_moment"
#: Used when none are named: the spectral ``power`` weights moved the output error by < 2 % on real
#: activations and describe ``x``, not the channel-scaled input ``x / d`` the compressed matrix sees.
DEFAULT_CALIBRATION_STATS: tuple[str, ...] = ("channel", "fisher")

#: Relative floor for weights before taking 1 / sqrt: dead frequencies stay invertible.
WEIGHT_FLOOR = 1e-6


@dataclass
class Calibration:
    """Squared-error weights, all optional and non-negative, and the input second moment.

    ``row``: ``(m,)`` over output rows; ``col``: ``(n_cols,)`` over spectrum columns;
    ``channel``: ``(n,)`` spatial input power per input channel, used through
    ``d = channel^(channel_alpha / 2)`` (``channel_alpha`` in [0, 1]);
    ``second_moment``: ``(n, n)`` ``E[x x^T]`` of the layer input (symmetric PSD), used only by
    error-feedback rounding (``CompressionSettings.error_feedback``).
    """

    row: Optional[torch.Tensor] = None
    col: Optional[torch.Tensor] = None
    channel: Optional[torch.Tensor] = None
    channel_alpha: float = 0.5
    second_moment: Optional[torch.Tensor] = None

    @classmethod
    def from_matrix(cls, matrix: torch.Tensor) -> Calibration:
        """Paper form: ``D_row = RowAverage(C)``, ``D_col = ColAverage(C)`` of a ``(m, n_cols)`` ``C``."""
        c = matrix.to(torch.float32)
        return cls(row=c.mean(dim=1), col=c.mean(dim=0))

    @property
    def has_weights(self) -> bool:
        """Whether any diagonal weight (``row``, ``col``, ``channel``) is set."""
        return any(v is not None for v in (self.row, self.col, self.channel))

    def validate(self, rows: int, cols: int, in_features: int) -> None:
        """Raise ``ValueError`` if a weight vector or the second moment has the wrong shape or bad values."""
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
        if self.second_moment is not None:
            check_second_moment(self.second_moment, in_features)


#: Relative asymmetry ``max|S - S^T| / max diag(S)`` a second moment may have (float32 accumulation noise).
SYMMETRY_TOLERANCE = 1e-3


def check_second_moment(sigma: Any, in_features: int, where: str = "calibration.second_moment") -> None:
    """``ValueError`` unless `sigma` is a real finite ``(n, n)`` symmetric matrix with a non-negative diagonal.

    Symmetric up to :data:`SYMMETRY_TOLERANCE` of the largest diagonal entry; PSD is checked only through
    the diagonal (a full eigen-decomposition would cost more than the rounding it feeds).
    """
    n = in_features
    if not isinstance(sigma, torch.Tensor) or tuple(sigma.shape) != (n, n):
        got = tuple(sigma.shape) if isinstance(sigma, torch.Tensor) else type(sigma).__name__
        raise ValueError(f"{where} must be an ({n}, {n}) tensor E[x x^T] of the layer input, got {got}")
    if sigma.is_complex() or not sigma.is_floating_point() or not torch.isfinite(sigma).all():
        raise ValueError(f"{where} must be real, floating point and finite")
    s = sigma.to(torch.float32)
    diag = torch.diagonal(s)
    if (diag < 0).any():
        raise ValueError(f"{where} has negative diagonal entries; it is not a second moment E[x x^T]")
    scale = float(diag.max())
    if scale <= 0:
        raise ValueError(f"{where} is all zeros; collect it on inputs that are not all zero")
    if float((s - s.T).abs().max()) > SYMMETRY_TOLERANCE * scale:
        raise ValueError(f"{where} is not symmetric (max |S - S^T| > {SYMMETRY_TOLERANCE} * max diag); "
                         f"pass E[x x^T], e.g. llava_fa.fourier.input_second_moment(x)")


def power_to_columns(power: torch.Tensor, n: int, transform: Transform) -> torch.Tensor:
    """Full rfft power ``(n//2+1,)`` -> weights in `transform`'s column layout ``(n_cols,)``.

    In the packed even-``n`` ``"rfft"`` layout column 0 holds DC and Nyquist together and gets
    the mean of their powers.
    """
    cols = spectrum_columns(n, transform)
    columns = power[:cols].clone()
    if transform == "rfft" and n % 2 == 0:
        columns[0] = (power[0] + power[n // 2]) / 2
    return columns


def input_power_spectrum(inputs: torch.Tensor, transform: Transform) -> torch.Tensor:
    """Mean power spectrum ``E|rfft(x)_k|^2`` (float32, ``(n_cols,)``) of inputs ``(..., n)``."""
    x = inputs.reshape(-1, inputs.shape[-1]).to(torch.float32)
    power = torch.fft.rfft(x, dim=-1, norm="ortho").abs().square().mean(dim=0)
    return power_to_columns(power, x.shape[-1], transform)


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


# ----- collecting statistics ----------------------------------------------------------------


class _RunningMean:
    """Running mean of row vectors (float64 accumulation, on the CPU)."""

    def __init__(self) -> None:
        self.total: Optional[torch.Tensor] = None
        self.count = 0

    def add(self, rows: torch.Tensor) -> None:
        rows = rows.detach().reshape(-1, rows.shape[-1]).to(torch.float64)
        total = rows.sum(dim=0).cpu()
        self.total = total if self.total is None else self.total + total
        self.count += rows.shape[0]

    def mean(self) -> torch.Tensor:
        assert self.total is not None
        return (self.total / max(self.count, 1)).to(torch.float32)


def _run(model: nn.Module, batch: Any) -> Any:
    if isinstance(batch, dict):
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    return model(batch)


class _SecondMoments:
    """Running ``E[x x^T]`` (float32 ``(n, n)``, summed on the CPU) per hooked Linear input.

    A module whose input is the very tensor object the previous hooked module read (q/k/v of one
    attention block, gate/up of one MLP) shares that module's accumulator instead of summing a copy;
    the sharing is decided at a module's first call and checked on every later one (a module whose
    calls stop matching is dropped with a warning rather than given a wrong moment).
    """

    def __init__(self, max_features: Optional[int]) -> None:
        self.max_features = max_features
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.owner: dict[str, str] = {}  # module -> module whose accumulator it uses
        self.rows: dict[str, int] = {}  # rows each module has seen
        self.broken: set[str] = set()
        self.skipped: set[str] = set()
        self._last: Optional[tuple[torch.Tensor, str]] = None  # (last input object, accumulator owner)

    def add(self, name: str, x: torch.Tensor) -> None:
        n = x.shape[-1]
        if self.max_features is not None and n > self.max_features:
            self.skipped.add(name)
            self._last = None
            return
        same = self._last is not None and self._last[0] is x
        if name not in self.owner:
            self.owner[name] = self._last[1] if same and self._last is not None else name
        owner = self.owner[name]
        rows = x.numel() // n
        if owner == name:
            flat = x.detach().reshape(-1, n).to(torch.float32)
            product = (flat.T @ flat).cpu()
            self.sums[name] = product if name not in self.sums else self.sums[name].add_(product)
            self.counts[name] = self.counts.get(name, 0) + rows
        elif not (same and self._last is not None and self._last[1] == owner):
            self.broken.add(name)
        self.rows[name] = self.rows.get(name, 0) + rows
        self._last = (x, owner)

    def means(self) -> dict[str, torch.Tensor]:
        """``{module: (n, n) float32}``; modules that share an input map to the same tensor object."""
        self._last = None
        out = {name: total / max(self.counts[name], 1) for name, total in self.sums.items()}
        dropped = []
        for name, owner in self.owner.items():
            if owner == name:
                continue
            if name in self.broken or self.rows[name] != self.counts.get(owner):
                dropped.append(name)
            else:
                out[name] = out[owner]
        if dropped:
            logger.warning(f"calibrate: the inputs of {dropped[:3]} ({len(dropped)} module(s)) were shared with "
                           f"another module in some calls only; their second moment is not stored.")
        if self.skipped:
            logger.warning(f"calibrate: no second moment for {len(self.skipped)} module(s) with more than "
                           f"second_moment_max_features={self.max_features} inputs (e.g. {sorted(self.skipped)[:3]}); "
                           f"error feedback falls back to plain rounding there.")
        return out


def _hook_linears(
    linears: dict[str, nn.Module], power: bool, fisher: bool, moments: Optional[_SecondMoments] = None
) -> tuple[dict[str, dict[str, _RunningMean]], list[Any]]:
    """Register the statistic hooks: ``({stat: {module: mean}}, handles)``; `moments` collects ``E[x x^T]``."""
    means: dict[str, dict[str, _RunningMean]] = {"channel": {n: _RunningMean() for n in linears}}
    if power:
        means["power"] = {n: _RunningMean() for n in linears}
    if fisher:
        means["fisher"] = {n: _RunningMean() for n in linears}
    handles = []
    for name, module in linears.items():
        def forward_hook(mod: nn.Module, args: Any, out: Any, name: str = name) -> None:
            if moments is not None:
                moments.add(name, args[0])
            x = args[0].detach().to(torch.float32)
            means["channel"][name].add(x.square())
            if power:
                means["power"][name].add(torch.fft.rfft(x, dim=-1, norm="ortho").abs().square())
        handles.append(module.register_forward_hook(forward_hook))
        if fisher:
            def backward_hook(mod: nn.Module, grad_input: Any, grad_output: Any, name: str = name) -> None:
                means["fisher"][name].add(grad_output[0].detach().to(torch.float32).square())
            handles.append(module.register_full_backward_hook(backward_hook))
    return means, handles


def _feed(model: nn.Module, batches: Iterable[Any], fisher: bool) -> int:
    """Run every batch (with a backward pass of ``.loss`` for `fisher`); return how many ran."""
    count = 0
    for batch in batches:
        count += 1
        if not fisher:
            with torch.no_grad():
                _run(model, batch)
            continue
        loss = getattr(_run(model, batch), "loss", None)
        if loss is None:
            raise ValueError("calibrate(fisher=True): the model output has no `.loss`; pass batches with `labels` "
                             "or use fisher=False.")
        model.zero_grad(set_to_none=True)
        loss.backward()
    return count


#: Default of ``second_moment_max_features``: inputs wider than this get no second moment (its file
#: size grows as n^2; e.g. Qwen2.5-7B's down_proj input n = 18944 would cost 1.4 GB per layer).
DEFAULT_SECOND_MOMENT_MAX_FEATURES = 8192


def collect_statistics(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    fisher: bool = False,
    power: bool = False,
    second_moment: bool = False,
    second_moment_max_features: Optional[int] = DEFAULT_SECOND_MOMENT_MAX_FEATURES,
    modules: Optional[list[str]] = None,
) -> dict[str, torch.Tensor]:
    """Per-Linear statistics ``{"<module>.channel": (in,), "<module>.power": (in//2+1,), "<module>.fisher": (out,),
    "<module>.second_moment": (in, in)}``.

    float32 on the CPU, running means over all input rows: ``channel`` = E[x_j^2] (always),
    ``power`` = E|rfft(x, norm="ortho")_k|^2 (with `power=True`), ``fisher`` = mean squared output
    gradient per output feature (with `fisher=True`; needs outputs with a ``.loss``),
    ``second_moment`` = E[x x^T] (with `second_moment=True`; what error feedback needs).
    `batches`: dicts (``model(**batch)``), tuples (``model(*batch)``) or tensors (``model(batch)``).
    `modules`: restrict to these Linear names (default: every `nn.Linear`).

    Second moments cost ``in^2 * 4`` bytes each, in memory while collecting and in the file (e.g. 51 MB
    for an input of 3584 features, 1.4 GB for 18944). Modules that read the same input tensor object
    one after the other (q/k/v; gate/up) get the *same* tensor in the returned dict, summed once
    (:func:`save_statistics` stores it once). Inputs wider than `second_moment_max_features` (``None``:
    no limit) get none; the quantizer rounds those modules without error feedback.
    """
    if not isinstance(second_moment, bool):
        raise TypeError(f"calibrate: second_moment must be True or False, got {second_moment!r}")
    limit = second_moment_max_features
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"calibrate: second_moment_max_features must be None or a positive integer, got {limit!r}")
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and (modules is None or n in modules)}
    if not linears:
        raise ValueError(f"calibrate: {type(model).__name__} has no nn.Linear module to calibrate"
                         + (f" among {modules}" if modules else "") + ".")
    moments = _SecondMoments(limit) if second_moment else None
    means, handles = _hook_linears(linears, power, fisher, moments)
    was_training = model.training
    model.eval()
    try:
        n_batches = _feed(model, batches, fisher)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
        if fisher:
            model.zero_grad(set_to_none=True)
    if n_batches == 0:
        raise ValueError("calibrate: `batches` is empty; pass at least one batch of representative inputs.")
    stats = {f"{name}.{stat}": mean.mean() for stat, per_module in means.items()
             for name, mean in per_module.items() if mean.count}
    if moments is not None:
        stats.update({f"{name}.{SECOND_MOMENT}": sigma for name, sigma in moments.means().items()})
    return stats


def save_statistics(stats: dict[str, torch.Tensor], path: Union[str, os.PathLike]) -> Path:
    """Write `stats` to `path` (safetensors) atomically: temporary file in the same folder, then rename.

    Entries that are the same tensor (object or memory) as an earlier one are stored once; the file's
    metadata ``aliases`` (JSON ``{key: stored key}``) records them and :class:`CalibrationFile` resolves them.
    """
    from safetensors.torch import save_file

    stored: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[Any, ...], str] = {}
    for key, value in stats.items():
        ident = (value.data_ptr(), tuple(value.shape), tuple(value.stride()), value.dtype, value.device)
        if value.numel() and ident in seen:
            aliases[key] = seen[ident]
            continue
        seen[ident] = key
        stored[key] = value.contiguous()
    metadata = {"format": FORMAT, "version": FORMAT_VERSION}
    if aliases:
        metadata["aliases"] = json.dumps(aliases, sort_keys=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(stored, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def calibrate(
    model: nn.Module,
    batches: Iterable[Any],
    path: Optional[Union[str, os.PathLike]] = None,
    *,
    fisher: bool = False,
    power: bool = False,
    second_moment: bool = False,
    second_moment_max_features: Optional[int] = DEFAULT_SECOND_MOMENT_MAX_FEATURES,
    modules: Optional[list[str]] = None,
) -> dict[str, torch.Tensor]:
    """Collect per-Linear statistics (see :func:`collect_statistics`) and save them to `path` if given.

    Pass `path` as ``FourierApproxConfig(calibration=path)`` to make the compression calibration-aware;
    `second_moment=True` (file size: ``in^2 * 4`` bytes per distinct Linear input no wider than
    `second_moment_max_features`) is what ``FourierApproxConfig(error_feedback=True)`` needs.
    """
    stats = collect_statistics(model, batches, fisher=fisher, power=power, second_moment=second_moment,
                               second_moment_max_features=second_moment_max_features, modules=modules)
    if path is not None:
        save_statistics(stats, path)
    return stats


# ----- reading a statistics file ------------------------------------------------------------


class CalibrationFile:
    """A statistics file read once: the vectors in memory, its SHA-256, lookups per module.

    Second moments (``(n, n)``, large) stay on disk until :meth:`for_module` asks for one; entries the
    file stores once for several modules (metadata ``aliases``) are resolved. Raises `FileNotFoundError`
    for a missing file and `ValueError` for one that is not a readable statistics file written by
    :func:`save_statistics`.
    """

    def __init__(self, path: Union[str, os.PathLike], *, where: str = "calibration"):
        from safetensors import safe_open

        self.path, self.where = str(path), where
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"{where}: no statistics file at {self.path!r}; write one with "
                                    f"llava_fa.calibrate(model, batches, path) or set calibration=None.")
        suffix = "." + SECOND_MOMENT
        try:
            with safe_open(self.path, framework="pt") as handle:
                metadata = handle.metadata() or {}
                keys = list(handle.keys())
                self.tensors = {k: handle.get_tensor(k).to(torch.float32) for k in keys if not k.endswith(suffix)}
        except Exception as exc:  # safetensors raises its own error type for corrupt headers
            raise ValueError(f"{where}: {self.path!r} is not a readable safetensors file ({exc}); re-run "
                             f"llava_fa.calibrate to rewrite it.") from None
        if metadata.get("format") != FORMAT:
            raise ValueError(f"{where}: {self.path!r} was not written by llava_fa.calibrate "
                             f"(metadata format != {FORMAT!r}).")
        #: module -> key of its stored second moment (read on demand)
        self.moment_keys = {k[: -len(suffix)]: k for k in keys if k.endswith(suffix)}
        for alias, target in self._aliases(metadata, keys).items():
            if alias.endswith(suffix):
                self.moment_keys[alias[: -len(suffix)]] = target
            else:
                self.tensors[alias] = self.tensors[target]
        self.sha256 = file_sha256(self.path)
        self.modules = {key.rsplit(".", 1)[0] for key in self.tensors} | set(self.moment_keys)

    def _aliases(self, metadata: dict[str, str], keys: list[str]) -> dict[str, str]:
        try:
            aliases = json.loads(metadata.get("aliases", "{}"))
        except json.JSONDecodeError:
            aliases = None
        if not isinstance(aliases, dict) or not all(isinstance(a, str) and t in keys for a, t in aliases.items()):
            raise ValueError(f"{self.where}: {self.path!r} has a corrupt 'aliases' entry in its metadata; re-run "
                             f"llava_fa.calibrate to rewrite it.")
        return aliases

    def warn_missing(self, module_names: Iterable[str]) -> list[str]:
        """Log a warning naming the modules without statistics (compressed uncalibrated); return them."""
        missing = [n for n in module_names if n not in self.modules]
        if missing:
            logger.warning(f"{self.where}: {self.path!r} has no statistics for {len(missing)} module(s) "
                           f"(e.g. {missing[:3]}); they are compressed without calibration.")
        return missing

    def has_second_moment(self, name: str) -> bool:
        """Whether the file holds ``E[x x^T]`` for module `name`."""
        return name in self.moment_keys

    def second_moment(self, name: str, in_features: int) -> Optional[torch.Tensor]:
        """Float32 ``(in, in)`` second moment of module `name`'s input (read from disk now), or None."""
        from safetensors import safe_open

        key = self.moment_keys.get(name)
        if key is None:
            return None
        with safe_open(self.path, framework="pt") as handle:
            sigma = handle.get_tensor(key).to(torch.float32)
        if tuple(sigma.shape) != (in_features, in_features):
            raise ValueError(f"{self.where}: {self.path!r} holds a {tuple(sigma.shape)} second moment for {name}, "
                             f"whose weight has {in_features} inputs; the statistics were collected on another "
                             f"model: re-run llava_fa.calibrate on this one.")
        return sigma

    def for_module(
        self,
        name: str,
        shape: tuple[int, int],
        transform: Transform,
        stats: Iterable[str] = DEFAULT_CALIBRATION_STATS,
        channel_alpha: float = 0.5,
        second_moment: bool = False,
    ) -> Optional[Calibration]:
        """The core `Calibration` of module `name` (weight `shape` ``(out, in)``) from the `stats` chosen, or None.

        ``"power"`` -> spectral column weights, ``"channel"`` -> spatial channel scaling (exponent
        `channel_alpha`), ``"fisher"`` -> row weights; `second_moment` also reads ``E[x x^T]`` (when the
        file has it). `ValueError` if a tensor has the wrong shape.
        """
        out_features, in_features = int(shape[0]), int(shape[1])
        expected = {"power": in_features // 2 + 1, "channel": in_features, "fisher": out_features}
        found: dict[str, torch.Tensor] = {}
        for stat in stats:
            tensor = self.tensors.get(f"{name}.{stat}")
            if tensor is None:
                continue
            if tensor.shape != (expected[stat],):
                raise ValueError(f"{self.where}: {self.path!r} holds a {stat} vector of length {tensor.numel()} for "
                                 f"{name}, whose weight {tuple(shape)} needs {expected[stat]}; the statistics were "
                                 f"collected on another model: re-run llava_fa.calibrate on this one.")
            found[stat] = tensor
        sigma = self.second_moment(name, in_features) if second_moment else None
        if not found and sigma is None:
            return None
        power = found.get("power")
        return Calibration(row=found.get("fisher"), channel=found.get("channel"), channel_alpha=channel_alpha,
                           col=None if power is None else power_to_columns(power, in_features, transform),
                           second_moment=sigma)


def file_sha256(path: Union[str, os.PathLike]) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

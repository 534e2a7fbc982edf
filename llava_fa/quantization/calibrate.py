"""Diagonal calibration (the poster's "optional diagonal calibration") for FourierApproxConfig.

`calibrate(model, batches, path)` runs `model` on `batches` with forward hooks on every
`nn.Linear` and accumulates, as running means over all input rows,

* ``{module}.power``: the input power spectrum ``E|rfft(x, norm="ortho")_k|^2``, float32
  ``(in_features // 2 + 1,)`` (full rfft layout, whatever the transform used later);
* ``{module}.channel``: the spatial input power per channel ``E[x_j^2]``, float32 ``(in_features,)``
  (activation-aware channel scaling of the core, ``Calibration.channel``);
* ``{module}.fisher`` (``fisher=True``): the mean squared output gradient per output feature,
  float32 ``(out_features,)`` (diagonal Fisher of the rows), from ``model(**batch).loss.backward()``.

It saves them to one safetensors file (written to a temporary name, then renamed, so a failure
never leaves a half-written file). `FourierApproxConfig(calibration=path)` then weights each
matrix's error by them (`calibration_for`), i.e. minimises the layer's expected output error.

This file is shipped as Hub remote code (flat imports only).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn

from ..fourier.calibration import Calibration
from ..fourier.transform import spectrum_columns

FORMAT = "llava_fa.calibration"
FORMAT_VERSION = "1"


class _RunningMean:
    """Running mean of row vectors (float64 accumulation)."""

    def __init__(self) -> None:
        self.total: Optional[torch.Tensor] = None
        self.count = 0

    def add(self, rows: torch.Tensor) -> None:
        rows = rows.detach().reshape(-1, rows.shape[-1]).to(torch.float64)
        s = rows.sum(dim=0).cpu()
        self.total = s if self.total is None else self.total + s
        self.count += rows.shape[0]

    def mean(self) -> torch.Tensor:
        assert self.total is not None
        return (self.total / max(self.count, 1)).to(torch.float32)


def _forward(model: nn.Module, batch: Any) -> Any:
    if isinstance(batch, dict):
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    return model(batch)


def collect_statistics(
    model: nn.Module, batches: Iterable[Any], *, fisher: bool = False, modules: Optional[list[str]] = None
) -> dict[str, torch.Tensor]:
    """Per-Linear statistics ``{"<module>.power": (n//2+1,), "<module>.fisher": (out,)}`` (float32, CPU).

    `batches`: dicts (``model(**batch)``), tuples (``model(*batch)``) or tensors (``model(batch)``).
    `fisher=True` needs outputs with a ``.loss`` (e.g. batches with ``labels``). `modules`: restrict to
    these Linear names (default: every `nn.Linear`).
    """
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and (modules is None or n in modules)}
    if not linears:
        raise ValueError(f"calibrate: {type(model).__name__} has no nn.Linear module to calibrate"
                         + (f" among {modules}" if modules else "") + ".")
    power = {n: _RunningMean() for n in linears}
    channel = {n: _RunningMean() for n in linears}
    grads = {n: _RunningMean() for n in linears} if fisher else {}
    handles = []
    for name, module in linears.items():
        def fwd_hook(mod, args, out, name=name):
            x = args[0].detach().to(torch.float32)
            power[name].add(torch.fft.rfft(x, dim=-1, norm="ortho").abs().square())
            channel[name].add(x.square())
        handles.append(module.register_forward_hook(fwd_hook))
        if fisher:
            def bwd_hook(mod, grad_input, grad_output, name=name):
                grads[name].add(grad_output[0].detach().to(torch.float32).square())
            handles.append(module.register_full_backward_hook(bwd_hook))
    was_training = model.training
    model.eval()
    n_batches = 0
    try:
        for batch in batches:
            n_batches += 1
            if fisher:
                out = _forward(model, batch)
                loss = getattr(out, "loss", None)
                if loss is None:
                    raise ValueError("calibrate(fisher=True): the model output has no `.loss`; pass batches with "
                                     "`labels` or use fisher=False.")
                model.zero_grad(set_to_none=True)
                loss.backward()
            else:
                with torch.no_grad():
                    _forward(model, batch)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
        if fisher:
            model.zero_grad(set_to_none=True)
    if n_batches == 0:
        raise ValueError("calibrate: `batches` is empty; pass at least one batch of representative inputs.")
    stats: dict[str, torch.Tensor] = {}
    for name in linears:
        if power[name].count:
            stats[f"{name}.power"] = power[name].mean()
            stats[f"{name}.channel"] = channel[name].mean()
        if fisher and grads[name].count:
            stats[f"{name}.fisher"] = grads[name].mean()
    return stats


def save_statistics(stats: dict[str, torch.Tensor], path: Union[str, os.PathLike]) -> Path:
    """Write `stats` to `path` (safetensors) atomically: temporary file in the same folder, then rename."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in stats.items()}, tmp,
                  metadata={"format": FORMAT, "version": FORMAT_VERSION})
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
    modules: Optional[list[str]] = None,
) -> dict[str, torch.Tensor]:
    """Collect per-Linear input power spectra (and `fisher` output-gradient power) and save them to `path`.

    Returns the statistics (see :func:`collect_statistics`); pass `path` as
    `FourierApproxConfig(calibration=path)` to make the compression calibration-aware.
    """
    stats = collect_statistics(model, batches, fisher=fisher, modules=modules)
    if path is not None:
        save_statistics(stats, path)
    return stats


def _open(path: str):
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise FileNotFoundError(f"FourierApproxConfig.calibration: no statistics file at {path!r}; write one with "
                                f"llava_fa.calibrate(model, batches, path) or set calibration=None.")
    try:
        handle = safe_open(path, framework="pt")
    except Exception as exc:  # safetensors raises its own error type for corrupt headers
        raise ValueError(f"FourierApproxConfig.calibration: {path!r} is not a readable safetensors file ({exc}); "
                         f"re-run llava_fa.calibrate to rewrite it.") from None
    if (handle.metadata() or {}).get("format") != FORMAT:
        raise ValueError(f"FourierApproxConfig.calibration: {path!r} was not written by llava_fa.calibrate "
                         f"(metadata format != {FORMAT!r}).")
    return handle


def check_calibration_file(path: str, module_names: list[str]) -> None:
    """Raise for a missing/corrupt file; warn (naming them) for modules without statistics."""
    from transformers.utils import logging

    with _open(path) as handle:
        keys = set(handle.keys())
    missing = [n for n in module_names if f"{n}.power" not in keys]
    if missing:
        logging.get_logger(__name__).warning(
            f"FourierApproxConfig.calibration: {path!r} has no statistics for {len(missing)} module(s) "
            f"(e.g. {missing[:3]}); they are compressed without calibration.")


def power_to_columns(power: torch.Tensor, n: int, transform: str) -> torch.Tensor:
    """Full rfft power ``(n//2+1,)`` -> the column weights of `transform`'s spectrum layout ``(n_cols,)``."""
    cols = spectrum_columns(n, transform)
    if transform == "rfft" and n % 2 == 0:
        packed = power[:cols].clone()
        packed[0] = (power[0] + power[n // 2]) / 2
        return packed
    return power[:cols].clone()


#: Statistics `calibration_for` can use, and the `Calibration` field each one feeds.
CALIBRATION_STATS: tuple[str, ...] = ("power", "channel", "fisher")


def calibration_for(
    path: Optional[str],
    module_name: str,
    shape: tuple[int, int],
    transform: str,
    stats: tuple[str, ...] = CALIBRATION_STATS,
    channel_alpha: float = 0.5,
) -> Optional[Calibration]:
    """The core `Calibration` of `module_name` (weight `shape` ``(out, in)``) from the file at `path`, or None.

    `stats` selects what is used: ``"power"`` -> spectral column weights, ``"channel"`` -> spatial
    channel scaling (exponent `channel_alpha`), ``"fisher"`` -> row weights.
    """
    if path is None:
        return None
    out_features, in_features = int(shape[0]), int(shape[1])
    with _open(path) as handle:
        keys = set(handle.keys())
        if f"{module_name}.power" not in keys:
            return None
        def read(kind: str) -> Optional[torch.Tensor]:
            key = f"{module_name}.{kind}"
            return handle.get_tensor(key).to(torch.float32) if kind in stats and key in keys else None

        power, channel, fisher = read("power"), read("channel"), read("fisher")
    if power is not None and power.shape != (in_features // 2 + 1,):
        raise ValueError(f"FourierApproxConfig.calibration: {path!r} holds a power spectrum of length {power.numel()} "
                         f"for {module_name}, whose in_features={in_features} needs {in_features // 2 + 1}; the "
                         f"statistics were collected on another model: re-run llava_fa.calibrate on this one.")
    if fisher is not None and fisher.shape != (out_features,):
        raise ValueError(f"FourierApproxConfig.calibration: {path!r} holds a Fisher vector of length {fisher.numel()} "
                         f"for {module_name}, expected out_features={out_features}; re-run llava_fa.calibrate.")
    if channel is not None and channel.shape != (in_features,):
        raise ValueError(f"FourierApproxConfig.calibration: {path!r} holds a channel power of length {channel.numel()} "
                         f"for {module_name}, expected in_features={in_features}; re-run llava_fa.calibrate.")
    if power is None and channel is None and fisher is None:
        return None
    col = None if power is None else power_to_columns(power, in_features, transform)
    return Calibration(row=fisher, col=col, channel=channel, channel_alpha=channel_alpha)


__all__ = ["calibrate", "collect_statistics", "save_statistics", "calibration_for", "check_calibration_file",
           "power_to_columns"]

"""Model surgery and the load-time op behind `FourierApproxHfQuantizer` (transformers 5.x).

* :func:`replace_with_fourier_linear` swaps `nn.Linear` for empty `FourierLinear` modules on
  ``meta`` before the weights load (with a placeholder `weight` when compressing on load).
* :class:`FourierQuantize` receives each dense weight (already on its device-map device, in the
  model dtype), compresses it with `fourier_approximate` on that device and returns the
  stored tensors by full name; the dense tensor is dropped right away, so peak memory is the
  compressed model plus the layer being compressed.
* :func:`dequantize_model` swaps every `FourierLinear` back for an `nn.Linear`.

This file is shipped as Hub remote code (flat imports only).
"""

from __future__ import annotations

import time
from typing import Any, Optional

import torch
from torch import nn
from transformers.core_model_loading import ConversionOps
from transformers.quantizers.quantizers_utils import should_convert_module
from transformers.utils import logging

from ..fourier.approximate import fourier_approximate
from ..fourier.calibration import CalibrationFile
from ..fourier.settings import CompressionSettings
from ..fourier.transform import spectrum_columns
from .fourier_config import FourierApproxConfig, dtype_from_name
from .fourier_linear import FourierLinear, is_fourier_linear
from .host_memory import release_freed_host_memory

logger = logging.get_logger(__name__)

#: Attribute of the model holding the tqdm bar of an on-the-fly compression (ops carry no state).
PROGRESS_ATTR = "_fourier_approx_progress"


def too_small_reason(out_features: int, in_features: int, settings: CompressionSettings) -> Optional[str]:
    """Why a `(out, in)` Linear cannot take `settings` (None when it can)."""
    if in_features < 2 or out_features < 1:
        return f"shape ({out_features}, {in_features}) has no spectrum to compress"
    cols = spectrum_columns(in_features, settings.transform)
    if settings.rank > min(out_features, cols):
        return (f"rank={settings.rank} exceeds the largest rank {min(out_features, cols)} of its "
                f"{out_features} x {cols} spectrum")
    return None


def plan_conversion(
    model: nn.Module, config: FourierApproxConfig, modules_to_not_convert: list[str]
) -> tuple[dict[str, CompressionSettings], dict[str, str]]:
    """Decide which Linear modules become FourierLinear: ``(convert {name: settings}, skipped {name: reason})``.

    Deterministic in (model structure, config), so a pre-quantized reload rebuilds the same modules.
    Warns once for override patterns that match no converted module.
    """
    convert: dict[str, CompressionSettings] = {}
    skipped: dict[str, str] = {}
    used_patterns: set[str] = set()
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or not should_convert_module(name, modules_to_not_convert):
            continue
        settings = config.settings_for(name)
        used_patterns.update(config.matching_overrides(name))
        reason = too_small_reason(module.out_features, module.in_features, settings)
        if reason is not None:
            skipped[name] = reason
            continue
        convert[name] = settings
    unused = [p for p in config.overrides if p not in used_patterns]
    if unused:
        logger.warning(f"FourierApproxConfig.overrides: pattern(s) {unused} match no converted Linear module of "
                       f"{type(model).__name__}; check the module names (model.named_modules()).")
    if skipped:
        listed = "; ".join(f"{n}: {r}" for n, r in list(skipped.items())[:8])
        more = f" (and {len(skipped) - 8} more)" if len(skipped) > 8 else ""
        logger.warning(f"FourierApprox: {len(skipped)} Linear module(s) too small to compress are kept dense: "
                       f"{listed}{more}. Lower `rank` for them with `overrides` to compress them.")
    return convert, skipped


def replace_with_fourier_linear(
    model: nn.Module,
    config: FourierApproxConfig,
    modules_to_not_convert: list[str],
    *,
    pre_quantized: bool,
    dtype: Optional[torch.dtype] = None,
) -> dict[str, CompressionSettings]:
    """Swap the Linear modules chosen by :func:`plan_conversion` for empty FourierLinear ones on meta.

    Returns the converted modules' settings by name. The new modules keep the original bias dtype.
    """
    convert, _ = plan_conversion(model, config, modules_to_not_convert)
    compute_dtype = dtype_from_name(config.compute_dtype)
    for name, settings in convert.items():
        linear = model.get_submodule(name)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        bias_dtype = linear.bias.dtype if linear.bias is not None else (dtype or linear.weight.dtype)
        new = FourierLinear(linear.in_features, linear.out_features, bias=linear.bias is not None, settings=settings,
                            compute_dtype=compute_dtype, device="meta", dtype=bias_dtype, placeholder=not pre_quantized)
        setattr(parent, child, new)
    return convert


class FourierQuantize(ConversionOps):
    """Load-time op: a dense ``Linear.weight`` ``(out, in)`` -> the FourierLinear's stored tensors (full names)."""

    def __init__(self, hf_quantizer: Any):
        self.hf_quantizer = hf_quantizer

    def convert(
        self,
        input_dict: dict[str, Any],
        model: Optional[nn.Module] = None,
        full_layer_name: Optional[str] = None,
        missing_keys: Optional[set] = None,
        **kwargs: Any,
    ) -> dict[str, torch.Tensor]:
        key, value = next(iter(input_dict.items()))
        value = value[0] if isinstance(value, list) else value
        target = full_layer_name if full_layer_name and full_layer_name.endswith(".weight") else key
        module_name = target.rsplit(".", 1)[0]
        module = model.get_submodule(module_name)
        config: FourierApproxConfig = self.hf_quantizer.quantization_config
        calibration_file: Optional[CalibrationFile] = getattr(self.hf_quantizer, "calibration_file", None)
        settings: CompressionSettings = module.settings
        calibration = None if calibration_file is None else calibration_file.for_module(
            module_name, tuple(value.shape), module.transform, config.calibration_stats, float(config.channel_alpha),
            second_moment=settings.error_feedback)
        if settings.error_feedback and (calibration is None or calibration.second_moment is None):
            settings = settings.replace(error_feedback=False)  # no second moment: warned by open_calibration
        start = time.perf_counter()
        approx = fourier_approximate(value, settings, calibration=calibration)
        on_cpu = value.device.type == "cpu"
        del value
        tensors = FourierLinear.tensors_from_approximation(approx)
        if on_cpu:
            release_freed_host_memory()
        module._parameters.pop("weight", None)
        module.compress_seconds = time.perf_counter() - start
        if missing_keys is not None:
            missing_keys.discard(target)
        progress = getattr(model, PROGRESS_ATTR, None)
        if progress is not None:
            progress.update(1)
        return {f"{module_name}.{name}": t for name, t in tensors.items()}


def open_calibration(config: FourierApproxConfig, convert: dict[str, CompressionSettings]) -> Optional[CalibrationFile]:
    """Read the calibration file once, before any weight is read (fails early on a bad file); None without one.

    Modules set to ``error_feedback`` need a second moment in the file: without a file that is a
    `ValueError`; modules the file has none for (inputs wider than ``second_moment_max_features`` when it
    was collected, or a file written without ``second_moment=True``) get a warning and plain rounding, so
    one file serves a model whose widest inputs were left out on purpose.
    """
    feedback = [name for name, settings in convert.items() if settings.error_feedback]
    if config.calibration is None:
        if feedback:
            raise ValueError(f"FourierApproxConfig: error_feedback=True for {len(feedback)} module(s) (e.g. "
                             f"{feedback[:3]}) but calibration=None; write a statistics file with "
                             f"llava_fa.calibrate(model, batches, path, second_moment=True) and pass calibration=path.")
        return None
    calibration = CalibrationFile(config.calibration, where="FourierApproxConfig.calibration")
    calibration.warn_missing(convert)
    without = [name for name in feedback if not calibration.has_second_moment(name)]
    if without:
        logger.warning(f"FourierApproxConfig.calibration: {config.calibration!r} has no second moment for "
                       f"{len(without)} of the {len(feedback)} module(s) set to error_feedback (e.g. {without[:3]}); "
                       f"they are rounded without error feedback. Collect them with llava_fa.calibrate(..., "
                       f"second_moment=True, second_moment_max_features=None or larger).")
    config.calibration_sha256 = calibration.sha256
    return calibration


def check_prequantized_layout(model: nn.Module, checkpoint_files: Optional[list[str]]) -> None:
    """Before a pre-quantized folder's tensors load: each FourierLinear's stored tensors must have the shapes its
    quantization_config gives it (transformers cannot say *why* they differ). `ValueError` naming the tensors.

    Checkpoint keys are matched to module names by their last four dotted parts (e.g.
    ``0.self_attn.k_proj.lowrank_l1``), which sees through the key renaming of LLaVA's saved layout
    without loader internals; a tensor is reported when no key with that tail has the expected shape.
    """
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for path in checkpoint_files or []:
        if not str(path).endswith(".safetensors"):
            continue
        try:
            with safe_open(str(path), framework="pt") as handle:
                shapes.update({k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()})
        except Exception as exc:  # SafetensorError is not importable as a stable class
            raise ValueError(f"FourierApprox: checkpoint file {str(path)!r} is corrupt or truncated ({exc}); re-save "
                             f"or re-download it. Nothing was loaded.") from None
    by_tail: dict[str, list[tuple[int, ...]]] = {}
    for key, shape in shapes.items():
        by_tail.setdefault(_tail(key), []).append(shape)
    problems = []
    for name, module in model.named_modules():
        if not is_fourier_linear(module):
            continue
        for tensor in module.stored_names:
            found = by_tail.get(_tail(f"{name}.{tensor}"), [])
            expected = tuple(getattr(module, tensor).shape)
            if found and expected not in found:
                shown = " or ".join(map(str, sorted(set(found))))
                problems.append(f"{name}.{tensor}: checkpoint {shown} vs expected {expected}")
    if problems:
        raise ValueError(f"FourierApprox: {len(problems)} tensor(s) do not match the model (the quantization_config "
                         f"in config.json (rank, bits, group_size, transform, overrides) does not match the saved "
                         f"tensors; load the folder with the config it was saved with). Nothing was loaded. First "
                         f"ones: " + "; ".join(problems[:5]))


def _tail(key: str) -> str:
    return ".".join(key.split(".")[-4:])


def unloaded_modules(model: nn.Module) -> list[str]:
    """FourierLinear modules whose placeholder weight was never filled (the checkpoint lacked it)."""
    return [n for n, m in model.named_modules() if is_fourier_linear(m) and "weight" in m._parameters]


def dequantize_model(model: nn.Module, dtype: Optional[torch.dtype] = None) -> nn.Module:
    """Replace every FourierLinear of `model` (in place) by the `nn.Linear` it approximates; returns `model`."""
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    for name, module in list(model.named_modules()):
        if not is_fourier_linear(module):
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, module.dequantize(dtype))
    return model


__all__ = ["FourierQuantize", "replace_with_fourier_linear", "plan_conversion", "dequantize_model",
           "too_small_reason", "unloaded_modules", "open_calibration", "check_prequantized_layout", "PROGRESS_ATTR"]

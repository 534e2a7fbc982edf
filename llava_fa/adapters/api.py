"""Public API of the Fourier-factor adapters: build, load and export them with peft.

* `get_fourier_peft_model(model, parts=("language_model",), **lora_kwargs)`: a `peft.PeftModel` whose
  adapters are trainable copies of the complex factors of the model's FourierLinear modules.
* `load_fourier_adapter(model, path, is_trainable=False)`: load a folder written by
  ``PeftModel.save_pretrained`` (registers the custom layer first: peft does not save the registration).
* `export_real_lora(peft_model, out_dir)`: the same adapter as a standard real LoRA (rank 2r per layer)
  for a dense model rebuilt from the codes (`dequantize_codes_only`).
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Literal, Optional, Union

import torch
from peft import LoraConfig, PeftConfig, PeftModel, get_peft_model, get_peft_model_state_dict
from peft.utils import ModulesToSaveWrapper
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from ..fourier.transform import from_spectrum
from .layer import FourierLoraLayer, base_factors, real_lowrank
from .registration import (
    KNOWN_PARTS,
    check_parts,
    in_parts,
    is_fourier_module,
    register_fourier_layers,
    under_any,
    unused_vision_modules,
)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
#: LoraConfig fields that `fourier_lora_config` sets from the model (passing them is an error).
_DERIVED_FIELDS = ("target_modules", "r", "rank_pattern", "target_parameters")


def _pattern(name: str) -> str:
    """A peft rank/alpha pattern that matches module `name` exactly."""
    return re.escape(name)


def fourier_lora_config(model: nn.Module, parts: Optional[Iterable[str]] = ("language_model",),
                        **lora_kwargs: Any) -> LoraConfig:
    """A registered `LoraConfig` targeting `model`'s FourierLinear modules in `parts`, by explicit name.

    Args:
        model: a model holding FourierLinear modules (compressed on load or loaded compressed).
        parts: model parts selected by name component (``"language_model"``, ``"vision_tower"``,
            ``"multi_modal_projector"``, or any module name component); ``None``: every FourierLinear.
        lora_kwargs: passed to `LoraConfig` (e.g. ``lora_dropout``, ``modules_to_save``, ``lora_alpha``,
            ``task_type``). ``r``/``rank_pattern`` come from the modules' ranks; ``lora_alpha`` defaults
            to the rank (scaling 1, the exact copy).

    Rank-0 modules have no factors and are left out with a warning; vision-tower layers whose output the
    model never reads (after ``vision_feature_layer``) are left out too (they would get no gradient).
    """
    parts = check_parts(parts)
    given = [k for k in _DERIVED_FIELDS if k in lora_kwargs]
    if given:
        raise ValueError(f"fourier_lora_config sets {given} from the model's FourierLinear modules (r = their rank); "
                         f"select modules with `parts=` instead.")
    if lora_kwargs.get("target_modules") == "all-linear":
        raise ValueError("'all-linear' matches nn.Linear only; FourierLinear targets are found by `parts=`.")
    found = [(name, m) for name, m in model.named_modules() if is_fourier_module(m)]
    if not found:
        raise ValueError(f"{type(model).__name__} has no FourierLinear module; load it with "
                         f"quantization_config=FourierApproxConfig(...) or from a compressed folder first.")
    selected = [(name, m) for name, m in found if in_parts(name, parts)]
    if not selected:
        raise ValueError(f"parts={parts} selects none of the {len(found)} FourierLinear modules (e.g. {found[0][0]!r}); "
                         f"use part names such as {KNOWN_PARTS} or parts=None for all.")
    unused = unused_vision_modules(model)
    rank0 = [name for name, m in selected if int(m.rank) <= 0]
    if rank0:
        warnings.warn(f"{len(rank0)} FourierLinear module(s) have rank 0 (no factors to train) and get no adapter: "
                      f"{rank0[:4]}{' ...' if len(rank0) > 4 else ''}", UserWarning, stacklevel=2)
    targets = {name: int(m.rank) for name, m in selected if int(m.rank) > 0 and not under_any(name, unused)}
    if not targets:
        raise ValueError(f"parts={parts}: every selected FourierLinear has rank 0 or is never used by the model; "
                         f"nothing to train.")
    rank = Counter(targets.values()).most_common(1)[0][0]
    others = {name: r for name, r in targets.items() if r != rank}
    rank_pattern = {_pattern(name): r for name, r in others.items()}
    kwargs = dict(lora_kwargs)
    if "lora_alpha" not in kwargs:
        kwargs["lora_alpha"] = rank
        kwargs["alpha_pattern"] = {**rank_pattern, **kwargs.get("alpha_pattern", {})}
    config = LoraConfig(target_modules=sorted(targets), r=rank, rank_pattern=rank_pattern, **kwargs)
    return register_fourier_layers(config, model)


def get_fourier_peft_model(model: nn.Module, parts: Optional[Iterable[str]] = ("language_model",), *,
                           adapter_name: str = "default", **lora_kwargs: Any) -> PeftModel:
    """Wrap `model` in a `PeftModel` whose adapters are copies of its Fourier factors (see `fourier_lora_config`).

    Step 0 reproduces the compressed model exactly; only the adapters (and ``modules_to_save``) are trainable;
    ``peft_model.save_pretrained(dir)`` writes ``adapter_config.json`` + ``adapter_model.safetensors`` (float32
    factors); ``merge_and_unload()`` returns the model with FourierLinear modules holding the trained factors.
    """
    if isinstance(model, PeftModel):
        raise TypeError("get_fourier_peft_model needs the base model, not a PeftModel; use "
                        "peft_model.add_adapter(name, fourier_lora_config(peft_model.get_base_model())) for a second adapter.")
    if not isinstance(model, nn.Module):
        raise TypeError(f"get_fourier_peft_model needs a torch model, got {type(model).__name__}.")
    config = fourier_lora_config(model, parts, **lora_kwargs)
    return get_peft_model(model, config, adapter_name=adapter_name)


def _adapter_keys(path: Path) -> list[str]:
    weights = path / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise ValueError(f"{str(path)!r} holds no {ADAPTER_WEIGHTS}; give a folder written by PeftModel.save_pretrained.")
    with safe_open(str(weights), framework="pt") as handle:
        return list(handle.keys())


def load_fourier_adapter(model: nn.Module, path: Union[str, os.PathLike], is_trainable: bool = False, *,
                         adapter_name: str = "default") -> PeftModel:
    """Load a Fourier-factor adapter folder onto `model` (the compressed base it was trained on).

    Raises ValueError for folders that are not Fourier adapters (e.g. a real LoRA from `export_real_lora`,
    which loads with plain peft onto a dense model) and when ranks do not match the model's FourierLinears.
    """
    if isinstance(model, PeftModel):
        raise TypeError("load_fourier_adapter needs the base model; for a second adapter on a PeftModel register "
                        "its config (register_fourier_layers) and call peft_model.load_adapter.")
    path = Path(path)
    if not (path / ADAPTER_CONFIG).is_file():
        raise ValueError(f"{str(path)!r} holds no {ADAPTER_CONFIG}; give a folder written by PeftModel.save_pretrained.")
    keys = _adapter_keys(path)
    if not any(".fourier_l1" in k for k in keys):
        raise ValueError(f"{str(path)!r} is not a Fourier-factor adapter (no `fourier_l1` tensors); a standard LoRA "
                         f"folder loads with peft.PeftModel.from_pretrained onto a dense model.")
    config = PeftConfig.from_pretrained(str(path))
    if not isinstance(config, LoraConfig):
        raise ValueError(f"{str(path)!r} holds a {type(config).__name__}, not a LoraConfig.")
    register_fourier_layers(config, model)
    return PeftModel.from_pretrained(model, str(path), adapter_name=adapter_name, is_trainable=is_trainable,
                                     config=config)


def dequantize_codes_only(model: nn.Module, dtype: Optional[torch.dtype] = None) -> nn.Module:
    """Replace every FourierLinear of `model` (in place) by an `nn.Linear` holding only its quantized part
    ``from_spectrum(Q~) diag(1/d)`` (no low-rank factors) + bias: the base `export_real_lora` adapters apply to.

    `dtype`: weight dtype (default: the bias dtype, else float32). Returns `model`.
    """
    for name, module in list(model.named_modules()):
        if not is_fourier_module(module):
            continue
        weight = from_spectrum(module.polar_codes().dequantize(), module.in_features, module.transform)
        weight = weight / module.input_scale.float().unsqueeze(0)
        wdtype = dtype or (module.bias.dtype if module.bias is not None else torch.float32)
        linear = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None,
                           device=module.codes.device, dtype=wdtype)
        with torch.no_grad():
            linear.weight.copy_(weight)
            if module.bias is not None:
                linear.bias.copy_(module.bias)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, linear)
    return model


def _replace_into(folder: Path, tmp: Path, filename: str) -> None:
    os.replace(tmp / filename, folder / filename)


def export_real_lora(peft_model: PeftModel, out_dir: Union[str, os.PathLike], *,
                     relative_to: Literal["codes", "compressed"] = "codes",
                     adapter_name: Optional[str] = None) -> Path:
    """Write the Fourier adapter as a standard peft LoRA folder (real factors, float32, scaling 1).

    Per layer the adapter's low-rank part ``from_spectrum(L1 L2) diag(1/d)`` is written exactly as a real
    rank-2r pair (``lora_B (m, 2r) @ lora_A (2r, n)``):

    * ``relative_to="codes"`` (default): rank 2r; the base is the dense model of the codes alone,
      `dequantize_codes_only(compressed_model)`.
    * ``relative_to="compressed"``: rank 4r (adapter minus the base's own factors); the base is the dense
      compressed model, `llava_fa.quantization.dequantize_model(compressed_model)`.

    ``modules_to_save`` weights are copied as they are. The folder loads with
    ``peft.PeftModel.from_pretrained(dense_model, out_dir)`` (no llava_fa needed) and reproduces the peft
    model's outputs to float32 rounding. Files are written atomically. Returns the folder.
    """
    if not isinstance(peft_model, PeftModel):
        raise TypeError(f"export_real_lora needs a PeftModel from get_fourier_peft_model, got {type(peft_model).__name__}.")
    if relative_to not in ("codes", "compressed"):
        raise ValueError(f"relative_to={relative_to!r}: use 'codes' or 'compressed'.")
    adapter = adapter_name or peft_model.active_adapter
    if adapter not in peft_model.peft_config:
        raise ValueError(f"adapter {adapter!r} not found; the model has {list(peft_model.peft_config)}.")
    base_model = peft_model.get_base_model()
    for name, module in base_model.named_modules():
        if isinstance(module, ModulesToSaveWrapper) and any(is_fourier_module(m) for m in module.modules()):
            raise ValueError(f"export_real_lora: modules_to_save {name!r} holds FourierLinear modules, which a dense "
                             f"model cannot load; keep that module dense or train it as adapter targets (`parts=`).")
    tensors: dict[str, torch.Tensor] = {}
    ranks: dict[str, int] = {}
    for name, layer in base_model.named_modules():
        if not isinstance(layer, FourierLoraLayer) or adapter not in layer.fourier_l1:
            continue
        if layer.merged:
            raise ValueError(f"{name}: adapters are merged; call peft_model.unmerge_adapter() before export_real_lora.")
        base = layer.get_base_layer()
        a, b = real_lowrank(base, *layer.adapter_factors(adapter))
        if relative_to == "compressed":
            a0, b0 = real_lowrank(base, *base_factors(base))
            a, b = torch.cat([a, -a0], dim=1), torch.cat([b, b0], dim=0)
        tensors[f"base_model.model.{name}.lora_A.weight"] = b.contiguous().cpu()
        tensors[f"base_model.model.{name}.lora_B.weight"] = a.contiguous().cpu()
        ranks[name] = int(a.shape[1])
    if not ranks:
        raise ValueError(f"adapter {adapter!r} has no Fourier-factor layers to export.")
    state = get_peft_model_state_dict(peft_model, adapter_name=adapter)
    extra = {k: v.detach().contiguous().cpu() for k, v in state.items() if ".fourier_l" not in k}
    tensors.update(extra)
    source = peft_model.peft_config[adapter]
    rank = Counter(ranks.values()).most_common(1)[0][0]
    pattern = {_pattern(n): r for n, r in ranks.items() if r != rank}
    config = LoraConfig(r=rank, lora_alpha=rank, rank_pattern=pattern, alpha_pattern=dict(pattern),
                        target_modules=sorted(ranks), modules_to_save=source.modules_to_save,
                        task_type=source.task_type, base_model_name_or_path=source.base_model_name_or_path,
                        inference_mode=True)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as tmp_name:
        tmp = Path(tmp_name)
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        config.save_pretrained(str(tmp))
        _replace_into(out, tmp, ADAPTER_WEIGHTS)
        _replace_into(out, tmp, ADAPTER_CONFIG)
    return out


__all__ = ["dequantize_codes_only", "export_real_lora", "fourier_lora_config", "get_fourier_peft_model",
           "load_fourier_adapter"]

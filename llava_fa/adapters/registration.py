"""Find the FourierLinear modules of a model and register `FourierLoraLayer` for their classes with peft.

Remote code can import a second copy of `FourierLinear` (``transformers_modules....fourier_linear``), so
classes are found by the ``is_fourier_linear`` marker, never by ``isinstance`` against this package's class.
peft does not serialise the registration (``LoraConfig._custom_modules``): every config that builds or
loads a Fourier adapter must be registered again (`load_fourier_adapter` does it).
"""

from __future__ import annotations

from typing import Iterable, Optional

from peft import LoraConfig
from torch import nn

from .layer import FourierLoraLayer

#: Model parts (first-level names under the LLaVA model) that `parts=` may select.
KNOWN_PARTS: tuple[str, ...] = ("language_model", "vision_tower", "multi_modal_projector")


def is_fourier_module(module: nn.Module) -> bool:
    """True for a FourierLinear of any copy of its class (``is_fourier_linear`` marker)."""
    return getattr(module, "is_fourier_linear", False) is True


def fourier_linear_classes(model: nn.Module) -> list[type]:
    """The distinct FourierLinear classes present in `model` (usually one; two when remote code loaded a copy)."""
    classes: list[type] = []
    for module in model.modules():
        if is_fourier_module(module) and type(module) not in classes:
            classes.append(type(module))
    return classes


def register_fourier_layers(config: LoraConfig, model: nn.Module) -> LoraConfig:
    """Register `FourierLoraLayer` in `config` for every FourierLinear class of `model`; returns `config`."""
    if not isinstance(config, LoraConfig):
        raise TypeError(f"register_fourier_layers needs a peft LoraConfig, got {type(config).__name__}.")
    classes = fourier_linear_classes(model)
    if not classes:
        raise ValueError(f"{type(model).__name__} has no FourierLinear module; load it with "
                         f"quantization_config=FourierApproxConfig(...) or from a compressed folder first.")
    config._register_custom_module({cls: FourierLoraLayer for cls in classes})
    return config


def in_parts(name: str, parts: Optional[Iterable[str]]) -> bool:
    """True if module `name` lies in one of `parts` (a dotted component equal to the part name); None: all."""
    if parts is None:
        return True
    components = name.split(".")
    return any(part in components for part in parts)


def check_parts(parts: Optional[Iterable[str]]) -> Optional[tuple[str, ...]]:
    """Validate `parts` (None or an iterable of part names); returns a tuple or None."""
    if parts is None:
        return None
    if isinstance(parts, str):
        raise TypeError(f"parts must be a tuple of part names such as {KNOWN_PARTS}, not the string {parts!r} "
                        f"(write parts=({parts!r},)).")
    parts = tuple(parts)
    if not parts or not all(isinstance(p, str) and p for p in parts):
        raise ValueError(f"parts={parts!r}: give one or more part names such as {KNOWN_PARTS}, or None for all.")
    return parts


__all__ = ["KNOWN_PARTS", "check_parts", "fourier_linear_classes", "in_parts", "is_fourier_module",
           "register_fourier_layers"]


def unused_vision_modules(model: nn.Module) -> list[str]:
    """Names of vision-tower modules whose output never reaches a LLaVA model's loss.

    LLaVA feeds the projector with hidden state ``config.vision_feature_layer`` (-2 by default) of the
    vision tower, so the encoder layers after it and the tower's ``post_layernorm`` get no gradient
    (DDP reports them as unused parameters). Returns ``[]`` for models without a vision tower or
    ``vision_feature_layer``.
    """
    config = getattr(model, "config", None)
    feature = getattr(config, "vision_feature_layer", None)
    vision_config = getattr(config, "vision_config", None)
    n_layers = getattr(vision_config, "num_hidden_layers", None)
    if feature is None or n_layers is None:
        return []
    features = [feature] if isinstance(feature, int) else list(feature)
    used = max(f if f >= 0 else n_layers + 1 + f for f in features)  # hidden state h = output of layer h-1
    tower = next((name for name, _ in model.named_modules() if name.split(".")[-1] == "vision_tower"), None)
    if tower is None:
        return []
    unused: list[str] = []
    for name, module in model.named_modules():
        if not name.startswith(tower + "."):
            continue
        if isinstance(module, nn.ModuleList) and name.endswith("encoder.layers"):
            unused.extend(f"{name}.{i}" for i in range(used, len(module)))
        elif name.split(".")[-1] == "post_layernorm":
            unused.append(name)
    return unused


def under_any(name: str, prefixes: Iterable[str]) -> bool:
    """True if module/parameter `name` equals or lies under one of `prefixes` (dot boundaries)."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


__all__ += ["under_any", "unused_vision_modules"]

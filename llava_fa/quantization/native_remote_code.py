"""Remote code for quantized models of *native* transformers classes (Qwen2, CLIP, ...).

A LLaVA-FA folder ships its own configuration file. A quantized `Qwen2ForCausalLM` has none, so
elsewhere `quant_method="fourier_approx"` would be unknown. After loading,
:func:`ship_with_remote_code` gives the model config a subclass of its class (same name) whose
`save_pretrained` also writes the quantizer shim (`llava_fa.shipping.write_quantizer_shim`) and
points `auto_map["AutoConfig"]` at it. With `trust_remote_code=True` transformers imports the
shim (registering the quantizer) and, as its auto mappings go by config class *name*, still picks
the native model class.

The subclass pickles as its native class (re-applying the subclass on load), so `pickle`,
`copy.deepcopy` and `torch.save(model)` work.

This file is shipped as Hub remote code (flat imports only).
"""

from __future__ import annotations

import os
from typing import Any

from ..shipping import point_config_at_shim, write_quantizer_shim

_SUBCLASSES: dict[type, type] = {}


def ship_with_remote_code(config: Any) -> None:
    """Make `config.save_pretrained` ship the remote code that loads the quantized folder (in place).

    No-op for configs that ship their own code (LLaVA-FA) or were already given the subclass. A config
    loaded through a shim (remote code) gets it too, so a re-saved folder ships the shim again.
    """
    cls = type(config)
    if getattr(cls, "_auto_class", None) is not None or isinstance(config, _ShipsFourierConfig):
        return
    if cls not in _SUBCLASSES:
        _SUBCLASSES[cls] = type(cls.__name__, (_ShipsFourierConfig, cls),
                                {"__module__": cls.__module__, "__qualname__": cls.__qualname__})
    config.__class__ = _SUBCLASSES[cls]


def _restore(native_cls: type, state: dict[str, Any]) -> Any:
    """Unpickle: a `native_cls` config with `state`, given the shipping subclass again."""
    config = native_cls.__new__(native_cls)
    config.__dict__.update(state)
    ship_with_remote_code(config)
    return config


class _ShipsFourierConfig:
    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        out = super().save_pretrained(save_directory, *args, **kwargs)
        write_quantizer_shim(save_directory, self)
        point_config_at_shim(save_directory, self)
        return out

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        native = type(self).__mro__[2]
        return _restore, (native, dict(self.__dict__))


__all__ = ["ship_with_remote_code"]

"""Remote code for quantized models of *native* transformers classes (Qwen2, CLIP, ...).

A LLaVA-FA folder ships its own configuration file, which registers the quantizer. A quantized
`Qwen2ForCausalLM` has no such file, so elsewhere `quant_method="fourier_approx"` would be unknown.
After loading, :func:`ship_with_remote_code` swaps the model config's class for a subclass of the
*same name* whose `save_pretrained` also writes, next to `config.json`:

* the flat package modules (``write_remote_code``) and
* ``configuration_fourier_approx.py``: registers the quantizer, then defines a subclass of the
  original config class with the same name,

and sets ``auto_map = {"AutoConfig": "configuration_fourier_approx.<ConfigName>"}``. With
``trust_remote_code=True`` transformers imports that file (registering the quantizer) and, as its
auto mappings go by config class *name*, still picks the native model class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..modeling.remote_code import write_remote_code

SHIM_MODULE = "configuration_fourier_approx"

_SHIM_SOURCE = '''"""Written by llava-fa: importing this file registers quant_method="fourier_approx" with transformers."""

from transformers import {name} as _NativeConfig

from .fourier_quantizer import register_fourier_approx

register_fourier_approx()


class {name}(_NativeConfig):
    """The native config class, shipped so that loading this folder registers the quantizer first."""
'''


def ship_with_remote_code(config: Any) -> None:
    """Make `config.save_pretrained` ship the remote code that loads the quantized folder (in place).

    No-op for configs that already ship their own code (LLaVA-FA) or were already swapped.
    """
    cls = type(config)
    if getattr(cls, "_auto_class", None) is not None or getattr(config, "auto_map", None):
        return  # the config already ships code (LLaVA-FA), or came from a folder that does
    config.__class__ = type(cls.__name__, (_ShipsFourierConfig, cls),
                            {"__module__": cls.__module__, "native_config_name": cls.__name__})


class _ShipsFourierConfig:
    native_config_name: str

    def save_pretrained(self, save_directory, *args: Any, **kwargs: Any):
        name = self.native_config_name
        self.auto_map = {"AutoConfig": f"{SHIM_MODULE}.{name}"}
        out = super().save_pretrained(save_directory, *args, **kwargs)
        write_remote_code(save_directory)
        shim = Path(save_directory) / f"{SHIM_MODULE}.py"
        tmp = shim.with_name(f".{shim.name}.tmp")
        tmp.write_text(_SHIM_SOURCE.format(name=name), encoding="utf-8")
        tmp.replace(shim)
        return out


__all__ = ["SHIM_MODULE", "ship_with_remote_code"]

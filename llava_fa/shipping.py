"""Ship the package's code as Hub remote code: one flat folder of `.py` files, only what a folder needs.

Hub remote code cannot hold sub-packages, and `transformers.dynamic_module_utils` only follows
`from .x import y` imports. `write_remote_code(folder, entries)` writes the *import closure* of
the entry modules (e.g. ``llava_fa.modeling.configuration_llava_fa``) flat into `folder`, with
package imports rewritten to flat ones (`llava_fa.fourier.polar_quant` and `..fourier.polar_quant`
both become `.polar_quant`). Files whose content is already there are not rewritten, so the several
save hooks of one `save_pretrained` write each file once.

Who ships what:
* LLaVA-FA config / model / processor (`ShipsRemoteCode`): their own module's closure;
* a quantized folder (`write_quantizer_shim`): `configuration_fourier_approx.py`, which registers
  `quant_method="fourier_approx"` and then provides the config class, plus the quantizer's closure.
  A LLaVA-FA folder's shim re-exports `LlavaFAConfig`; a native class's shim (Qwen2, CLIP) defines a
  subclass of the same name, so transformers' auto mappings (by config class name) still pick the
  native model class.

Rules for shipped modules: import other package modules by *module* (never a package `__init__`,
never `import llava_fa...`); flat names (the last dotted component) must be unique among the
modules one folder ships; no line of a shipped file, docstrings included, may start with a relative
from-import of a module that is not shipped (transformers scans the text line by line); modules
under `llava_fa/modeling/` import other sub-packages absolutely (`from llava_fa.x.y import z`),
because transformers' own `custom_object_save` cannot follow `from ..x` imports.

This file is itself shipped; loaded from a remote-code folder (flat mode) it finds the modules
next to itself, so a model loaded through remote code re-saves a folder that loads the same way.
"""

from __future__ import annotations

import ast
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_PACKAGE = "llava_fa"
_IN_PACKAGE = __name__.startswith(_PACKAGE + ".")
_HERE = Path(__file__).resolve().parent  # the package root in-package, the flat folder otherwise
_FROM_HEAD = re.compile(r"^(?P<indent>[ \t]*)from[ \t]+[\w.]+[ \t]+import\b")
_TRANSFORMERS_RELATIVE = re.compile(r"^\s*from\s+\.(\S+)\s+import", re.MULTILINE)

#: Flat module written by `write_quantizer_shim`.
SHIM_MODULE = "configuration_fourier_approx"
#: The module whose import registers the quantizer (and pulls in the layer and the core).
QUANTIZER_MODULE = f"{_PACKAGE}.quantization.fourier_quantizer"
SHIPPING_MODULE = f"{_PACKAGE}.shipping"


def flat_name(dotted_name: str) -> str:
    """The file stem a shipped module gets in the flat folder ("llava_fa.fourier.polar_quant" -> "polar_quant")."""
    return dotted_name.rsplit(".", 1)[-1]


def _source_index() -> dict[str, list[Path]]:
    """Flat name -> candidate source files (in-package: every module of the package; flat mode: siblings)."""
    files = _HERE.rglob("*.py") if _IN_PACKAGE else _HERE.glob("*.py")
    index: dict[str, list[Path]] = {}
    for path in files:
        if path.name != "__init__.py":
            index.setdefault(path.stem, []).append(path)
    return index


def _package_imports(source: str, origin: str) -> list[tuple[ast.ImportFrom, str]]:
    """The package imports of `source` as ``(node, flat target)``; `ValueError` for unshippable forms."""
    found = []
    for node in ast.walk(ast.parse(source, filename=origin)):
        if isinstance(node, ast.Import):
            if any(a.name == _PACKAGE or a.name.startswith(_PACKAGE + ".") for a in node.names):
                raise ValueError(f"{origin}:{node.lineno}: `import llava_fa...` cannot be shipped as remote code; "
                                 f"use `from llava_fa.<pkg>.<module> import name`.")
            continue
        if not isinstance(node, ast.ImportFrom):
            continue
        module = node.module or ""
        if node.level == 0 and module != _PACKAGE and not module.startswith(_PACKAGE + "."):
            continue  # an installed library
        if not module or module == _PACKAGE:
            raise ValueError(f"{origin}:{node.lineno}: `from {'.' * node.level}{module} import ...` imports a package; "
                             f"remote code is flat, so import the defining module.")
        found.append((node, module.rsplit(".", 1)[-1]))
    return found


def _closure(entries: Iterable[str]) -> dict[str, Path]:
    """Flat name -> source file of every module the `entries` (dotted or flat names) import, transitively."""
    index = _source_index()
    todo = [flat_name(e) for e in entries]
    chosen: dict[str, Path] = {}
    while todo:
        name = todo.pop()
        if name in chosen:
            continue
        paths = index.get(name, [])
        if len(paths) != 1:
            problem = "has no source file" if not paths else f"is ambiguous ({sorted(map(str, paths))})"
            raise ValueError(f"Shipped module {name!r} {problem}; flat names of shipped modules must be unique.")
        chosen[name] = paths[0]
        todo.extend(target for _, target in _package_imports(paths[0].read_text(encoding="utf-8"), name))
    return chosen


def flatten_source(source: str, origin: str, flat_names: set[str]) -> str:
    """Rewrite `source`'s package imports (found with `ast`, so docstrings are untouched) to flat
    `from .name import ...` ones. `ValueError` naming `origin` for a package import or an unshipped target."""
    lines = source.splitlines(keepends=True)
    for node, target in _package_imports(source, origin):
        if target not in flat_names:
            raise ValueError(f"{origin}:{node.lineno}: imports `{'.' * node.level}{node.module}`, whose flat module "
                             f"`{target}.py` is not shipped.")
        i = node.lineno - 1
        new_line, n = _FROM_HEAD.subn(rf"\g<indent>from .{target} import", lines[i], count=1)
        if n != 1:
            raise ValueError(f"{origin}:{node.lineno}: cannot rewrite the import on this line: {lines[i]!r}; "
                             f"write it as one `from X import ...` statement starting the line.")
        lines[i] = new_line
    text = "".join(lines)
    for relative in _TRANSFORMERS_RELATIVE.findall(text):
        if relative not in flat_names:
            raise ValueError(f"{origin}: a line starting with `from .{relative} import` (maybe in a docstring) makes "
                             f"transformers look for `{relative}.py`, which is not shipped; reword it.")
    return text


def _write_if_changed(path: Path, text: str) -> bool:
    """Atomically write `text` to `path` unless it already holds exactly that; True if written."""
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)  # a reader never sees half a module
    return True


def write_remote_code(folder: str | os.PathLike, entries: Iterable[str]) -> list[Path]:
    """Write the import closure of `entries` (dotted module names) flat into `folder`; return the paths.

    Raises `ValueError` on ambiguous flat names or unshippable imports (nothing is written then).
    """
    modules = _closure([*entries, SHIPPING_MODULE])
    names = set(modules)
    texts = {name: flatten_source(path.read_text(encoding="utf-8"), name, names) for name, path in modules.items()}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        _write_if_changed(folder / f"{name}.py", text)
    return [folder / f"{name}.py" for name in sorted(texts)]


# Templates are built from quoted lines: a line of this file starting with a relative from-import
# would make transformers look for that module next to this one.
_SHIM_HEADER = '"""Written by llava-fa: importing this file registers quant_method="fourier_approx" with transformers."""\n\n'
_SHIM_NATIVE = (
    _SHIM_HEADER
    + "from transformers import {name} as _NativeConfig\n\n"
    + "from .fourier_quantizer import register_fourier_approx\n\n"
    + "register_fourier_approx()\n\n\n"
    + "class {name}(_NativeConfig):\n"
    + '    """The native config class, shipped so that loading this folder registers the quantizer first."""\n'
)
_SHIM_OWN = (
    _SHIM_HEADER
    + "from .fourier_quantizer import register_fourier_approx\n"
    + "from .{module} import {name}\n\n"
    + "register_fourier_approx()\n\n"
    + '__all__ = ["{name}"]\n'
)


def is_fourier_quantized(config: Any) -> bool:
    """True if `config` carries a `fourier_approx` quantization config (dict or object)."""
    quant = getattr(config, "quantization_config", None)
    method = quant.get("quant_method") if isinstance(quant, dict) else getattr(quant, "quant_method", None)
    return str(getattr(method, "value", method)) == "fourier_approx"


def shim_auto_map(config: Any) -> dict[str, str]:
    """`config.auto_map` with AutoConfig pointing at the quantizer shim (call before the config is written)."""
    auto_map = dict(getattr(config, "auto_map", None) or {})
    auto_map["AutoConfig"] = f"{SHIM_MODULE}.{type(config).__name__}"
    return auto_map


def write_quantizer_shim(folder: str | os.PathLike, config: Any) -> list[Path]:
    """Write `configuration_fourier_approx.py` and the quantizer's closure for a quantized `config`'s folder."""
    name = type(config).__name__
    own = getattr(type(config), "_auto_class", None) is not None  # the class ships its own module (LLaVA-FA)
    module = flat_name(type(config).__module__)
    text = _SHIM_OWN.format(module=module, name=name) if own else _SHIM_NATIVE.format(name=name)
    entries = [QUANTIZER_MODULE] + ([module] if own else [])
    written = write_remote_code(folder, entries)
    _write_if_changed(Path(folder) / f"{SHIM_MODULE}.py", text)
    return [*written, Path(folder) / f"{SHIM_MODULE}.py"]


class ShipsRemoteCode:
    """Mixin for config / model / processor classes: once registered for an Auto class, `save_pretrained`
    also writes the flat remote-code files of the class's module (and the quantizer shim for a
    quantized config) next to what transformers saved."""

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        out = super().save_pretrained(save_directory, *args, **kwargs)
        if getattr(self, "_auto_class", None) is None:
            return out
        write_remote_code(save_directory, [type(self).__module__])
        if is_fourier_quantized(self) and (Path(save_directory) / "config.json").is_file():
            write_quantizer_shim(save_directory, self)
            point_config_at_shim(save_directory, self)
        return out


def point_config_at_shim(folder: str | os.PathLike, config: Any) -> None:
    """Rewrite `folder/config.json` (atomically) so that its AutoConfig entry is the quantizer shim."""
    path = Path(folder) / "config.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["auto_map"] = shim_auto_map(config)
    config.auto_map = data["auto_map"]
    _write_if_changed(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


__all__ = ["SHIM_MODULE", "ShipsRemoteCode", "flat_name", "flatten_source", "is_fourier_quantized",
           "point_config_at_shim", "shim_auto_map", "write_quantizer_shim", "write_remote_code"]

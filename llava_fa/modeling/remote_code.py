"""Ship the package's code as Hub remote code: one flat folder of `.py` files.

Hub remote code cannot hold sub-packages, and `transformers.dynamic_module_utils` only follows
`from .x import y` imports. `SHIPPED_MODULES` lists every module a saved folder needs (the
modeling trio plus, later, `llava_fa.quantization.*` and `llava_fa.fourier.*`). `write_remote_code`
copies each one flat into the save folder and rewrites its package imports to flat ones
(`llava_fa.fourier.polar` and `..fourier.polar` both become `.polar`; `.configuration_llava_fa`
stays as it is).

Rules for shipped modules: import other shipped modules by *module* (never a package
`__init__`, never `import llava_fa...`); flat names (the last dotted component) must be unique;
no line of a shipped file, docstrings included, may start with a relative from-import of a
module that is not shipped (transformers scans the text line by line);
modules under `llava_fa/modeling/` import other sub-packages absolutely (`from llava_fa.x.y
import z`), because transformers' own `custom_object_save` cannot follow `from ..x` imports.

To ship a new module: `register_shipped_module("llava_fa.quantization.hf_quantizer")`, or add it
to `SHIPPED_MODULES` below. The save hooks (`LlavaFAConfig`, `LlavaFAForConditionalGeneration`,
`LlavaFAProcessor`.save_pretrained) call `write_remote_code` after transformers has written
`auto_map`.

This file is itself shipped; loaded from a remote-code folder (flat mode) it re-ships the
sibling files it finds next to itself.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

SHIPPED_MODULES: list[str] = [
    "llava_fa.modeling.remote_code",
    "llava_fa.modeling.configuration_llava_fa",
    "llava_fa.modeling.modeling_llava_fa",
    "llava_fa.modeling.processing_llava_fa",
    # Fourier core + quantization backend (issue #4): the shipped config registers the quantizer.
    "llava_fa.fourier.transform",
    "llava_fa.fourier.packing",
    "llava_fa.fourier.polar_quant",
    "llava_fa.fourier.svd",
    "llava_fa.fourier.calibration",
    "llava_fa.fourier.approximate",
    "llava_fa.quantization.fourier_config",
    "llava_fa.quantization.fourier_linear",
    "llava_fa.quantization.calibrate",
    "llava_fa.quantization.fourier_integration",
    "llava_fa.quantization.native_remote_code",
    "llava_fa.quantization.fourier_quantizer",
]

_PACKAGE = "llava_fa"
_IN_PACKAGE = __name__.startswith(_PACKAGE + ".")
_FROM_HEAD = re.compile(r"^(?P<indent>[ \t]*)from[ \t]+[\w.]+[ \t]+import\b")


def register_shipped_module(dotted_name: str) -> None:
    """Add `dotted_name` (e.g. "llava_fa.fourier.polar") to the modules every save ships. Idempotent."""
    if not dotted_name.startswith(_PACKAGE + "."):
        raise ValueError(f"Only modules of the {_PACKAGE} package can be shipped, got {dotted_name!r}.")
    if dotted_name not in SHIPPED_MODULES:
        SHIPPED_MODULES.append(dotted_name)


def flat_name(dotted_name: str) -> str:
    """The file stem a shipped module gets in the flat folder ("llava_fa.fourier.polar" -> "polar")."""
    return dotted_name.rsplit(".", 1)[-1]


def _source_file(dotted_name: str) -> Path:
    """Where the source of `dotted_name` lies: in the package tree, or next to this file in flat mode."""
    if _IN_PACKAGE:
        root = Path(__file__).resolve().parent.parent  # .../llava_fa
        return root.joinpath(*dotted_name.split(".")[1:]).with_suffix(".py")
    return Path(__file__).resolve().parent / f"{flat_name(dotted_name)}.py"


def flatten_source(source: str, origin: str, flat_names: set[str]) -> str:
    """Rewrite `source`'s package imports (found with `ast`, so docstrings are untouched) to flat
    `from .name import ...` ones.

    Raises `ValueError` naming `origin` when an import targets a package (not a module), uses
    `import llava_fa...`, or targets a module that is not shipped.
    """
    lines = source.splitlines(keepends=True)
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
        dotted = "." * node.level + module
        if not module or module == _PACKAGE:
            raise ValueError(f"{origin}:{node.lineno}: `from {dotted} import ...` imports a package; remote code "
                             f"is flat, so import the defining module (e.g. `from llava_fa.fourier.<module> import`).")
        target = module.rsplit(".", 1)[-1]
        if target not in flat_names:
            raise ValueError(f"{origin}:{node.lineno}: imports `{dotted}`, whose flat module `{target}.py` is not "
                             f"shipped; add it with llava_fa.modeling.remote_code.register_shipped_module(...).")
        i = node.lineno - 1
        new_line, n = _FROM_HEAD.subn(rf"\g<indent>from .{target} import", lines[i], count=1)
        if n != 1:
            raise ValueError(f"{origin}:{node.lineno}: cannot rewrite the import on this line: {lines[i]!r}; "
                             f"write it as one `from X import ...` statement starting the line.")
        lines[i] = new_line
    return "".join(lines)


_TRANSFORMERS_RELATIVE = re.compile(r"^\s*from\s+\.(\S+)\s+import", re.MULTILINE)


def _check_transformers_view(text: str, origin: str, flat_names: set[str]) -> None:
    """Fail now, not at load time, if transformers' line regex would look for a file we do not ship."""
    for target in _TRANSFORMERS_RELATIVE.findall(text):
        if target not in flat_names:
            raise ValueError(f"{origin}: a line starting with `from .{target} import` (maybe in a docstring) "
                             f"makes transformers look for `{target}.py`, which is not shipped; reword it.")


def write_remote_code(folder: str | os.PathLike) -> list[Path]:
    """Write every module of `SHIPPED_MODULES` flat into `folder`, imports rewritten; return the paths.

    In flat mode (running from a remote-code cache) modules absent next to this file are skipped.
    Raises `ValueError` on duplicate flat names or unshippable imports.
    """
    names = [flat_name(m) for m in SHIPPED_MODULES]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ValueError(f"Shipped modules must have unique file names in the flat remote-code folder; "
                         f"duplicates: {sorted(duplicates)} in {SHIPPED_MODULES}.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for dotted in SHIPPED_MODULES:
        src = _source_file(dotted)
        if not src.is_file():
            if _IN_PACKAGE:
                raise FileNotFoundError(f"Shipped module {dotted} has no source file at {src}.")
            continue
        text = flatten_source(src.read_text(encoding="utf-8"), dotted, set(names))
        _check_transformers_view(text, dotted, set(names))
        dest = folder / f"{flat_name(dotted)}.py"
        tmp = dest.with_name(f".{dest.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, dest)  # atomic: a reader never sees half a module
        written.append(dest)
    return written


class ShipsRemoteCode:
    """Mixin for config / model / processor classes: once registered for an Auto class,
    `save_pretrained` also writes the flat remote-code files next to what transformers saved."""

    def save_pretrained(self, save_directory, *args, **kwargs):
        out = super().save_pretrained(save_directory, *args, **kwargs)
        if getattr(self, "_auto_class", None) is not None:
            write_remote_code(save_directory)
        return out


__all__ = ["SHIPPED_MODULES", "ShipsRemoteCode", "register_shipped_module", "write_remote_code", "flatten_source", "flat_name"]

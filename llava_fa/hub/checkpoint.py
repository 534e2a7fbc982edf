"""Checkpoint folders for the CLI and the card: find, check, load, and write them atomically.

* :func:`resolve_checkpoint` turns a local folder or a Hub id into a local folder, checking that it
  holds a transformers checkpoint (``config.json`` + weights) and raising :class:`CheckpointError`
  (a `ValueError`) with a one-line reason otherwise.
* :func:`quant_method` reads ``config.json``'s ``quantization_config.quant_method`` (``None`` if dense).
* :func:`model_class_for` picks the model class of a folder (``architectures[0]`` when transformers
  or llava_fa defines it, else the first Auto class whose mapping knows the config).
* :func:`load_checkpoint` = the two above + ``from_pretrained``.
* :func:`atomic_output_dir` yields a temporary folder next to the output and renames it into place
  on success (removing it on failure), so a failed run leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
#: Files `compress` never copies from the source folder: weights, indexes, checkpoint state, and code (the
#: remote code of the output is written fresh by `save_pretrained`, never copied from an older folder).
NOT_COPIED_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".index.json", ".msgpack", ".h5", ".py")


class CheckpointError(ValueError):
    """A folder/model id that cannot be used for the requested step; `str()` is the one-line reason."""


def is_hub_id(name: str) -> bool:
    """`"org/name"` or `"name"` (no path separators beyond one slash, not an existing path)."""
    parts = name.split("/")
    return not os.path.exists(name) and 1 <= len(parts) <= 2 and all(p and p not in (".", "..") for p in parts) \
        and not name.startswith(("~", "/"))


def resolve_checkpoint(model: str | os.PathLike, *, revision: Optional[str] = None) -> Path:
    """Local folder of `model` (a folder, or a Hub id downloaded with `snapshot_download`).

    Raises `CheckpointError` for a missing folder, an unreachable Hub id, or a folder without
    ``config.json`` or weights.
    """
    text = os.fspath(model)
    path = Path(text).expanduser()
    if not path.exists():
        if not is_hub_id(text):
            raise CheckpointError(f"{text}: no such folder.")
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

        try:
            path = Path(snapshot_download(text, revision=revision))
        except (LocalEntryNotFoundError, OfflineModeIsEnabled, HfHubHTTPError, OSError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"{text}: no such folder, and it could not be fetched from the Hub ({first}).") from None
    if not path.is_dir():
        raise CheckpointError(f"{text}: not a folder (pass the checkpoint folder, not a file).")
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{text}: not a checkpoint folder (no config.json).")
    if not any((path / f).is_file() for f in WEIGHT_FILES) and not list(path.glob("*.safetensors")):
        raise CheckpointError(f"{text}: not a checkpoint folder (config.json but no model.safetensors / "
                              f"pytorch_model.bin weights).")
    return path


def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    """`config.json` of `folder` as a dict (raises `CheckpointError` if it is not valid JSON)."""
    path = Path(folder) / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable config.json ({exc}).") from None


def quant_method(folder: str | os.PathLike) -> Optional[str]:
    """`quantization_config.quant_method` of the folder's config (or of its text/vision sub-configs), or None."""
    config = read_config(folder)
    for sub in (config, config.get("text_config") or {}, config.get("vision_config") or {}):
        qc = sub.get("quantization_config") if isinstance(sub, dict) else None
        if isinstance(qc, dict):
            return str(qc.get("quant_method", "unknown"))
    return None


def model_class_for(folder: str | os.PathLike, *, trust_remote_code: bool = False) -> type:
    """The class to load `folder` with: `architectures[0]` from transformers or llava_fa, else an Auto class."""
    import transformers

    import llava_fa.modeling as fa_modeling  # registers the llava_fa Auto classes
    import llava_fa.quantization  # noqa: F401  registers quant_method="fourier_approx"

    arch = (read_config(folder).get("architectures") or [None])[0]
    for namespace in (fa_modeling, transformers):
        cls = getattr(namespace, arch, None) if arch else None
        if isinstance(cls, type) and hasattr(cls, "from_pretrained"):
            return cls
    config = transformers.AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    for auto in (transformers.AutoModelForImageTextToText, transformers.AutoModelForCausalLM, transformers.AutoModel):
        if type(config) in auto._model_mapping or getattr(config, "auto_map", {}).get(auto.__name__):
            return auto
    raise CheckpointError(f"{folder}: no model class for architectures={arch!r} (model_type "
                          f"{getattr(config, 'model_type', None)!r}); pass --trust-remote-code if it ships its own code.")


def load_checkpoint(folder: str | os.PathLike, *, trust_remote_code: bool = False, **kwargs: Any):
    """`from_pretrained(folder, **kwargs)` with the class of :func:`model_class_for`, in eval mode."""
    cls = model_class_for(folder, trust_remote_code=trust_remote_code)
    if trust_remote_code:
        kwargs["trust_remote_code"] = True
    return cls.from_pretrained(folder, **kwargs).eval()


def save_processor(src: str | os.PathLike, dest: str | os.PathLike, *, trust_remote_code: bool = False) -> Optional[str]:
    """Re-save the processor (else the tokenizer) of `src` into `dest` with its own `save_pretrained`, so its
    files and remote code are current; return the class name saved, or None when `src` has neither."""
    from transformers import AutoProcessor, AutoTokenizer

    for auto in (AutoProcessor, AutoTokenizer):
        try:
            obj = auto.from_pretrained(src, trust_remote_code=trust_remote_code)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if auto is AutoProcessor and not hasattr(obj, "save_pretrained"):
            continue
        obj.save_pretrained(dest)
        return type(obj).__name__
    return None


def copy_side_files(src: str | os.PathLike, dest: str | os.PathLike) -> list[str]:
    """Copy the top-level files of `src` that `dest` lacks (tokenizer, processor, chat template, ...).

    Weights, indexes, code and ``README.md`` are never copied (the card is written for the new folder).
    Returns the copied names.
    """
    src, dest = Path(src), Path(dest)
    copied = []
    for item in sorted(src.iterdir()):
        if not item.is_file() or item.name.startswith(".") or item.name == "README.md":
            continue
        if item.name.endswith(NOT_COPIED_SUFFIXES) or (dest / item.name).exists():
            continue
        shutil.copy2(item, dest / item.name)
        copied.append(item.name)
    return copied


def check_output_dir(output: str | os.PathLike, overwrite: bool) -> Path:
    """`output` as a Path; raise `CheckpointError` if it exists and is not an empty folder (unless `overwrite`)."""
    out = Path(output).expanduser()
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"{out}: exists and is not a folder; choose another OUTPUT.")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise CheckpointError(f"{out}: exists and is not empty; choose another OUTPUT or pass --overwrite.")
    return out


@contextlib.contextmanager
def atomic_output_dir(output: str | os.PathLike) -> Iterator[Path]:
    """Yield a new temporary folder next to `output`; on success it replaces `output`, on error it is removed.

    An existing `output` (checked beforehand with :func:`check_output_dir`) is moved aside first and
    deleted only once the new folder is in place.
    """
    out = Path(output).expanduser().absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the output gets the usual permissions
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / "previous")
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old / "previous", out)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


__all__ = ["CheckpointError", "atomic_output_dir", "check_output_dir", "copy_side_files", "is_hub_id", "save_processor",
           "load_checkpoint", "model_class_for", "quant_method", "read_config", "resolve_checkpoint"]

"""Read a task's local data in the formats the Hub distributes.

Accepted under a task's folder (``data_dir/<task folder>``), or as the path itself:

* a Hub snapshot or any folder of parquet files (``huggingface-cli download lmms-lab/POPE
  --repo-type dataset --local-dir data/pope``): files are picked by the task's config (a folder
  named like it, e.g. ``ScienceQA-IMG/``) and split (file names ``<split>-00000-of-00001.parquet``);
* a ``datasets`` ``save_to_disk`` folder (a ``Dataset``, or a ``DatasetDict`` holding the split);
* a single ``.parquet`` file, or ``.jsonl`` / ``.json`` records (``image``: a path relative to the
  file, or ``{"bytes": ..., "path": ...}``).

Fields keep their Hub names (POPE: ``question_id, question, answer, image, category``; see
``tasks.py``). Images are decoded lazily, one batch at a time, to RGB ``PIL.Image``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .tasks import TaskSpec

__all__ = ["TaskData", "load_task_data", "find_task_data", "to_pil"]

_IMAGE_COLUMN = "image"


@dataclass
class TaskData:
    """A task's rows: ``records[i]`` (all fields except the image) and ``image(i)`` (RGB PIL image)."""

    records: list[dict[str, Any]]
    source: str
    _image: Callable[[int], Any] = field(repr=False)

    def __len__(self) -> int:
        return len(self.records)

    def image(self, index: int):
        """The RGB ``PIL.Image`` of row ``index``."""
        return to_pil(self._image(index))


def to_pil(value: Any, base_dir: Path | None = None):
    """Decode an image cell (PIL image, ``{"bytes", "path"}``, raw bytes or a file path) to RGB PIL."""
    from PIL import Image

    if isinstance(value, Image.Image):
        image = value
    elif isinstance(value, dict) and value.get("bytes"):
        image = Image.open(io.BytesIO(value["bytes"]))
    elif isinstance(value, dict) and value.get("path"):
        return to_pil(value["path"], base_dir)
    elif isinstance(value, (bytes, bytearray)):
        image = Image.open(io.BytesIO(value))
    elif isinstance(value, (str, os.PathLike)):
        path = Path(value)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        image = Image.open(path)
    else:
        raise TypeError(f"Cannot read an image from a {type(value).__name__}; expected a PIL image, "
                        f"{{'bytes': ..., 'path': ...}}, bytes or a path.")
    return image.convert("RGB")


def find_task_data(spec: TaskSpec, data_dir: str | os.PathLike) -> Path:
    """``data_dir/<spec.folder>`` (or ``data_dir/<spec.name>``), else ``FileNotFoundError`` naming both."""
    data_dir = Path(data_dir)
    for name in dict.fromkeys((spec.name, spec.folder)):
        candidate = data_dir / name
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"No data for task {spec.name!r}: expected {data_dir / spec.folder} (Hub files of "
                            f"{spec.hub_repo or spec.folder}: parquet, save_to_disk folder or JSONL).")


def _is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _load_saved(path: Path, split: str):
    import datasets

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if split in loaded:
            return loaded[split]
        if len(loaded) == 1:
            return next(iter(loaded.values()))
        raise ValueError(f"{path} holds splits {list(loaded)} but not {split!r}.")
    return loaded


def _pick_files(path: Path, config: str | None, split: str, strict: bool = False) -> list[Path]:
    files = [f for f in sorted(path.rglob("*.parquet")) if not any(p.startswith(".") for p in f.relative_to(path).parts)]
    if not files:
        files = [f for pattern in ("*.jsonl", "*.json") for f in sorted(path.rglob(pattern))
                 if not any(p.startswith(".") for p in f.relative_to(path).parts)]
    if not files:
        raise FileNotFoundError(f"No parquet, JSONL or save_to_disk data under {path}.")
    if config is not None:
        in_config = [f for f in files if config in f.relative_to(path).parts[:-1]]
        if strict and not in_config:
            raise FileNotFoundError(f"No data of config {config!r} under {path} (expected {path / config}/).")
        files = in_config or files
    in_split = [f for f in files if f.name.startswith((f"{split}-", f"{split}.")) or split in f.relative_to(path).parts[:-1]]
    files = in_split or files
    parents = sorted({str(f.parent.relative_to(path)) for f in files})
    if len(parents) > 1:
        raise ValueError(f"{path} holds data in several folders {parents}; point at one of them "
                         f"(wanted config {config!r}, split {split!r}).")
    return files


def _load_table(path: Path, config: str | None, split: str, strict: bool = False):
    """A ``datasets.Dataset`` from a save_to_disk folder, parquet file(s) or JSON(L) file(s) at ``path``."""
    import datasets

    if path.is_dir():
        if config is not None and (path / config).is_dir() and _is_saved_dataset(path / config):
            return _load_saved(path / config, split)
        if _is_saved_dataset(path):
            return _load_saved(path, split)
        files = _pick_files(path, config, split, strict)
    elif path.suffix in (".parquet", ".jsonl", ".json"):
        files = [path]
    else:
        raise ValueError(f"Cannot read {path}: expected a folder, .parquet, .jsonl or .json.")
    builder = "parquet" if files[0].suffix == ".parquet" else "json"
    table = datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train")
    if builder == "json" and _IMAGE_COLUMN in table.column_names:
        base = files[0].parent
        table = table.cast_column(_IMAGE_COLUMN, datasets.Image(decode=False))
        table = table.map(lambda cell: {_IMAGE_COLUMN: _absolute(cell, base)}, input_columns=_IMAGE_COLUMN)
    return table


def _absolute(cell: dict[str, Any], base: Path) -> dict[str, Any]:
    if not cell.get("bytes") and cell.get("path") and not os.path.isabs(cell["path"]):
        return {"bytes": None, "path": str(base / cell["path"])}
    return cell


def load_task_data(spec: TaskSpec, path: str | os.PathLike, limit: int | None = None) -> TaskData:
    """Load ``spec``'s rows from ``path`` (see the module docstring), keep ``category`` rows, cut to ``limit``.

    Raises ``FileNotFoundError`` if ``path`` is missing, ``ValueError`` if its rows lack the image or
    the task's fields, ``TypeError`` / ``ValueError`` for a bad ``limit``.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
        raise TypeError(f"limit must be an int or None, got {type(limit).__name__}.")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}.")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No data for task {spec.name!r}: {path} does not exist.")
    table = _load_table(path, spec.config, spec.split)
    if spec.category is not None:
        if "category" not in table.column_names:
            raise ValueError(f"Task {spec.name!r} keeps category {spec.category!r} but {path} has no 'category' field.")
        keep = [i for i, c in enumerate(table["category"]) if c == spec.category]
        if not keep:
            raise ValueError(f"No rows of category {spec.category!r} in {path} (task {spec.name!r}).")
        table = table.select(keep)
    if limit is not None and limit < len(table):
        table = table.select(range(limit))
    columns = [c for c in table.column_names if c != _IMAGE_COLUMN]
    records = table.select_columns(columns).to_list()
    if not records:
        raise ValueError(f"No rows for task {spec.name!r} in {path}.")

    if _IMAGE_COLUMN in table.column_names:
        def image(i: int, table=table):
            return table[i][_IMAGE_COLUMN]
    elif spec.images_config is not None and spec.image_key in columns:
        if not path.is_dir():
            raise ValueError(f"Rows of task {spec.name!r} in {path} have no 'image' field; give the folder that also "
                             f"holds {spec.images_config!r}.")
        images = _load_table(path, spec.images_config, spec.split, strict=True)
        if _IMAGE_COLUMN not in images.column_names or "id" not in images.column_names:
            raise ValueError(f"Image table of task {spec.name!r} under {path} needs 'id' and 'image' fields.")
        row_of = {str(v): i for i, v in enumerate(images["id"])}
        missing = [r[spec.image_key] for r in records if str(r[spec.image_key]) not in row_of]
        if missing:
            raise ValueError(f"{len(missing)} {spec.image_key} value(s) of task {spec.name!r} have no image "
                             f"in {spec.images_config!r} (first: {missing[0]!r}).")

        def image(i: int, images=images):
            return images[row_of[str(records[i][spec.image_key])]][_IMAGE_COLUMN]
    else:
        raise ValueError(f"Rows of task {spec.name!r} in {path} have no 'image' field (fields: {columns}).")
    return TaskData(records=records, source=str(path), _image=image)

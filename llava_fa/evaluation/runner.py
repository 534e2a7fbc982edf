"""Run a benchmark task end to end: data -> prompts -> batched greedy answers -> scores -> results JSON.

``evaluate(model, processor, task, data)`` works on a loaded model; ``evaluate_path(model_path,
tasks, data_dir)`` loads a saved folder (``trust_remote_code=True``) and runs several tasks.
The result dictionary (also the JSON written by ``evaluate_path(..., output=...)``)::

    {"model": str, "task": str, "split": str, "n_samples": int, "metric": str, "value": float,
     "scores": {...scorer output...}, "generation": {"max_new_tokens", "batch_size", "do_sample"},
     "data": str, "llava_fa_version": str, "transformers_version": str,
     "predictions": [{"id", "prediction"}, ...]}
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .data import find_task_data, load_task_data
from .generation import generate_answers
from .io import write_json_atomic
from .tasks import TASKS, get_task

__all__ = ["evaluate", "evaluate_path", "load_model_and_processor"]


def _version() -> str:
    from llava_fa import __version__

    return __version__


def _model_name(model: Any) -> str:
    return str(getattr(model, "name_or_path", "") or getattr(getattr(model, "config", None), "_name_or_path", "")
               or type(model).__name__)


def evaluate(
    model: Any,
    processor: Any,
    task: str,
    data: str | os.PathLike,
    *,
    limit: int | None = None,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score ``model`` on ``task`` (a key of ``TASKS``) with the data at ``data``.

    ``data``: the task's folder or file, or a data_dir holding ``<task folder>/`` (as ``evaluate_path``).

    Greedy decoding, ``batch_size`` prompts at a time with left padding; ``limit`` keeps the first
    rows only; ``max_new_tokens`` defaults to the task's (16). Returns the result dict described in
    the module docstring. Raises ``ValueError`` for an unknown task, ``FileNotFoundError`` for
    missing data.
    """
    spec = get_task(task)
    if any(Path(data, name).is_dir() for name in (spec.name, spec.folder)):  # the data_dir of several tasks
        data = find_task_data(spec, data)
    dataset = load_task_data(spec, data, limit=limit)
    n_new = spec.max_new_tokens if max_new_tokens is None else max_new_tokens
    prompts = [spec.prompt(r) for r in dataset.records]
    images = _LazyImages(dataset)
    started = time.perf_counter()
    predictions = generate_answers(model, processor, prompts, images, max_new_tokens=n_new,
                                   batch_size=batch_size, progress=progress, description=spec.name)
    seconds = time.perf_counter() - started
    scores = spec.scorer(dataset.records, predictions)
    import transformers

    ids = [r.get(spec.id_field, i) if spec.id_field else i for i, r in enumerate(dataset.records)]
    return {
        "model": _model_name(model),
        "task": spec.name,
        "split": spec.split,
        "n_samples": len(predictions),
        "metric": spec.main_metric,
        "value": scores[spec.main_metric],
        "scores": scores,
        "generation": {"max_new_tokens": n_new, "batch_size": batch_size, "do_sample": False,
                       "seconds": round(seconds, 3)},
        "data": dataset.source,
        "llava_fa_version": _version(),
        "transformers_version": transformers.__version__,
        "predictions": [{"id": _jsonable(i), "prediction": p} for i, p in zip(ids, predictions)],
    }


class _LazyImages(Sequence):
    """Images of a ``TaskData``, decoded when a batch asks for them (slices return lists)."""

    def __init__(self, dataset):
        self._dataset = dataset

    def __len__(self) -> int:
        return len(self._dataset)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self._dataset.image(i) for i in range(*index.indices(len(self)))]
        return self._dataset.image(index)


def _jsonable(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


def load_model_and_processor(model_path: str | os.PathLike, device: str | None = None, dtype: Any = "auto"):
    """Load a saved LLaVA-FA (dense or compressed) folder or Hub id with ``trust_remote_code=True``.

    ``device``: e.g. "cuda", "cpu", "auto" (accelerate's device map); default CUDA when available.
    Returns ``(model in eval mode, processor)``.
    """
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForImageTextToText.from_pretrained(str(model_path), trust_remote_code=True, dtype=dtype,
                                                        device_map=device)
    processor = AutoProcessor.from_pretrained(str(model_path), trust_remote_code=True)
    return model.eval(), processor


def evaluate_path(
    model_path: str | os.PathLike,
    tasks: Sequence[str],
    data_dir: str | os.PathLike,
    *,
    limit: int | None = None,
    batch_size: int = 8,
    output: str | os.PathLike | None = None,
    device: str | None = None,
    max_new_tokens: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Load ``model_path`` and run each of ``tasks`` on ``data_dir/<task folder>``.

    Every task name and data folder is checked before the model loads (``ValueError`` for an
    unknown task, ``FileNotFoundError`` naming the folder expected). Returns
    ``{"model", "llava_fa_version", "results": {task: evaluate(...) result}}`` and writes it to
    ``output`` (JSON, atomically, rewritten after each task) when given.
    """
    if isinstance(tasks, str):
        tasks = [t for t in tasks.split(",") if t.strip()]
    if not tasks:
        raise ValueError(f"No tasks given; choose from {', '.join(TASKS)}.")
    specs = [get_task(t) for t in tasks]
    paths = {spec.name: find_task_data(spec, data_dir) for spec in specs}
    model, processor = load_model_and_processor(model_path, device=device)
    summary: dict[str, Any] = {"model": str(model_path), "llava_fa_version": _version(), "results": {}}
    for spec in specs:
        result = evaluate(model, processor, spec.name, paths[spec.name], limit=limit, batch_size=batch_size,
                          max_new_tokens=max_new_tokens, progress=progress)
        result["model"] = str(model_path)
        summary["results"][spec.name] = result
        if output is not None:  # after every task: a failure later keeps the finished tasks
            write_json_atomic(output, summary)
    return summary

"""Evaluation of LLaVA-FA models: benchmark scorers, a batched runner and fidelity to the dense parent.

* ``TASKS`` / :class:`TaskSpec`: the benchmarks (POPE and its 3 categories, MME, GQA, TextVQA,
  VizWiz, ScienceQA-IMG) with LLaVA-1.5's prompts and the official scoring rules.
* :func:`evaluate` (a loaded model) and :func:`evaluate_path` (a saved folder, several tasks,
  results JSON): greedy, batched with left padding, ``limit`` for a quick look.
* :func:`fidelity` / :func:`fidelity_path`: token agreement and mean KL against the dense parent.
* Scorers and normalisation (:mod:`.scorers`, :mod:`.normalize`) are plain Python.
* :func:`eval_results` / :func:`results_markdown`: model-card ``model-index`` entries and tables.
* :func:`write_synthetic_task`: small Hub-format fixtures with generated images (demos, tests).
* :mod:`.lmms_eval_plugin`: the ``llava_fa`` model for lmms-eval (optional extra; import it
  explicitly, this package never imports lmms-eval).

Names are imported lazily, so ``import llava_fa.evaluation`` loads neither torch nor datasets.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "TASKS": ".tasks",
    "TaskSpec": ".tasks",
    "get_task": ".tasks",
    "evaluate": ".runner",
    "evaluate_path": ".runner",
    "load_model_and_processor": ".runner",
    "fidelity": ".agreement",
    "fidelity_path": ".agreement",
    "default_prompts": ".agreement",
    "load_task_data": ".data",
    "TaskData": ".data",
    "generate_answers": ".generation",
    "score_pope": ".scorers",
    "score_mme": ".scorers",
    "score_gqa": ".scorers",
    "score_vqa": ".scorers",
    "score_scienceqa": ".scorers",
    "vqa_accuracy": ".scorers",
    "normalize_vqa_answer": ".normalize",
    "parse_pope_answer": ".normalize",
    "parse_mme_answer": ".normalize",
    "normalize_gqa_answer": ".normalize",
    "parse_option_letter": ".normalize",
    "write_json_atomic": ".io",
    "eval_results": ".reporting",
    "results_markdown": ".reporting",
    "summary_rows": ".reporting",
    "write_synthetic_task": ".synthetic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'llava_fa.evaluation' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

"""Turn ``evaluate_path`` results into model-card material: ``EvalResult`` entries and a markdown table.

``summary`` is the dict ``evaluate_path`` returns (or its JSON file, loaded):
``{"model", "llava_fa_version", "results": {task: result}}``; a single ``evaluate`` result is
accepted too. Values are reported as stored: fractions in [0, 1] for accuracy-type metrics,
points for MME.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .tasks import get_task

__all__ = ["REPORTED_METRICS", "eval_results", "results_markdown", "summary_rows"]

#: per task, the metrics a card reports (the task's headline metric first)
REPORTED_METRICS: dict[str, tuple[str, ...]] = {
    "pope": ("f1", "accuracy", "precision", "recall", "yes_ratio"),
    "mme": ("perception_score", "cognition_score"),
}


def _results(summary: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    if not isinstance(summary, Mapping):
        raise TypeError(f"summary must be a dict from evaluate_path / evaluate, got {type(summary).__name__}.")
    if "results" in summary:
        return dict(summary["results"])
    if "task" in summary and "scores" in summary:
        return {summary["task"]: summary}
    raise ValueError("summary has neither 'results' (evaluate_path) nor 'task' + 'scores' (evaluate).")


def summary_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per (task, reported metric): ``task, metric, value, n_samples, split, hub_repo, config``."""
    rows = []
    for task, result in _results(summary).items():
        spec = get_task(task)
        metrics = REPORTED_METRICS.get(spec.folder if spec.folder == "pope" else spec.name, (spec.main_metric,))
        for metric in metrics:
            if metric in result["scores"]:
                rows.append({"task": spec.name, "metric": metric, "value": float(result["scores"][metric]),
                             "n_samples": int(result["n_samples"]), "split": spec.split, "hub_repo": spec.hub_repo,
                             "config": spec.config})
    return rows


def eval_results(summary: Mapping[str, Any], source_name: str | None = None, source_url: str | None = None) -> list:
    """``huggingface_hub.EvalResult`` entries (the card's ``model-index``) for every reported metric.

    ``source_name`` / ``source_url`` (given together, as huggingface_hub requires) name where the
    numbers come from.
    """
    from huggingface_hub import EvalResult

    return [EvalResult(task_type="image-text-to-text", dataset_type=row["hub_repo"], dataset_name=row["task"],
                       dataset_config=row["config"], dataset_split=row["split"], metric_type=row["metric"],
                       metric_value=round(row["value"], 4), source_name=source_name, source_url=source_url)
            for row in summary_rows(summary)]


def results_markdown(summary: Mapping[str, Any], reference: Mapping[str, Any] | None = None) -> str:
    """A markdown table ``| task | metric | value | samples |``; with ``reference`` (the dense parent's
    summary) adds its value and the recovery ``value / reference`` in %."""
    ref = {(r["task"], r["metric"]): r["value"] for r in summary_rows(reference)} if reference is not None else {}
    head = "| task | metric | value | samples |" + (" dense | recovery |" if reference is not None else "")
    rule = "|---|---|---:|---:|" + ("---:|---:|" if reference is not None else "")
    lines = [head, rule]
    for row in summary_rows(summary):
        line = f"| {row['task']} | {row['metric']} | {row['value']:.4g} | {row['n_samples']} |"
        if reference is not None:
            dense = ref.get((row["task"], row["metric"]))
            recovery = f"{100 * row['value'] / dense:.1f} %" if dense else "n/a"
            line += f" {dense:.4g} | {recovery} |" if dense is not None else " n/a | n/a |"
        lines.append(line)
    return "\n".join(lines) + "\n"

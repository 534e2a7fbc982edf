"""Model-card material from evaluation results: rows, EvalResult entries, markdown tables."""

from __future__ import annotations

import pytest

from llava_fa.evaluation.reporting import eval_results, results_markdown, summary_rows


def _summary(f1=0.8, perception=1200.0):
    return {"model": "m", "llava_fa_version": "0.1.0", "results": {
        "pope_random": {"task": "pope_random", "n_samples": 10, "scores": {
            "f1": f1, "accuracy": 0.75, "precision": 0.7, "recall": 0.9, "yes_ratio": 0.6, "per_category": {}}},
        "mme": {"task": "mme", "n_samples": 20, "scores": {"perception_score": perception, "cognition_score": 300.0}},
        "gqa": {"task": "gqa", "n_samples": 5, "scores": {"accuracy": 0.4, "n": 5}},
    }}


def test_rows_and_eval_results():
    rows = summary_rows(_summary())
    assert [(r["task"], r["metric"]) for r in rows] == [
        ("pope_random", "f1"), ("pope_random", "accuracy"), ("pope_random", "precision"), ("pope_random", "recall"),
        ("pope_random", "yes_ratio"), ("mme", "perception_score"), ("mme", "cognition_score"), ("gqa", "accuracy")]
    entries = eval_results(_summary())
    first = entries[0]
    assert (first.dataset_type, first.dataset_name, first.dataset_split, first.metric_type, first.metric_value) == (
        "lmms-lab/POPE", "pope_random", "test", "f1", 0.8)
    gqa = entries[-1]
    assert gqa.dataset_config == "testdev_balanced_instructions" and gqa.task_type == "image-text-to-text"
    single = {"task": "gqa", "n_samples": 5, "scores": {"accuracy": 0.4}}
    assert summary_rows(single)[0]["value"] == 0.4
    with pytest.raises(ValueError, match="neither 'results'"):
        summary_rows({"x": 1})
    with pytest.raises(TypeError, match="summary must be a dict"):
        summary_rows([1])


def test_markdown_with_recovery():
    table = results_markdown(_summary(f1=0.72, perception=1140.0), reference=_summary())
    lines = table.strip().splitlines()
    assert lines[0] == "| task | metric | value | samples | dense | recovery |"
    assert "| pope_random | f1 | 0.72 | 10 | 0.8 | 90.0 % |" in lines
    assert "| mme | perception_score | 1140 | 20 | 1200 | 95.0 % |" in lines
    assert results_markdown(_summary()).splitlines()[0] == "| task | metric | value | samples |"

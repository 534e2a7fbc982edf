"""Benchmark scorers: ``scorer(records, predictions) -> dict`` on records in the Hub's field layout.

``records`` are the dataset rows (mappings; images are not read), ``predictions`` the model's
decoded answers in the same order. Accuracy-type values are fractions in [0, 1]; MME scores are
in the benchmark's points (per category up to 200, perception up to 2000, cognition up to 800).

Where lmms-eval 0.7.3 scores differently, these scorers follow LLaVA / the official scripts:

* POPE: every answer is parsed with LLaVA's rule (``"No."`` is *no*; lmms-eval's exact match
  drops it as a non-answer), ``yes_ratio`` is the share of *predicted* yes (lmms-eval counts the
  ground truth, 0.5 on balanced POPE), and metrics are computed per category, then averaged.
* GQA: LLaVA's normalisation (strip, trailing ".", lowercase) then exact match (lmms-eval removes
  all punctuation).
* MME: the official parsing; lmms-eval also reads a bare "y" / "n" as yes / no.
* TextVQA / VizWiz: the same VQA accuracy as lmms-eval (checked against it where it is installed).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from .normalize import (
    normalize_gqa_answer,
    normalize_vqa_answer,
    parse_mme_answer,
    parse_option_letter,
    parse_pope_answer,
)

__all__ = [
    "MME_PERCEPTION",
    "MME_COGNITION",
    "score_pope",
    "score_mme",
    "score_gqa",
    "score_vqa",
    "score_scienceqa",
    "vqa_accuracy",
]

MME_PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark",
                  "artwork", "OCR")
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")


def _check(records: Sequence[Mapping[str, Any]], predictions: Sequence[str], fields: Sequence[str]) -> None:
    if len(records) != len(predictions):
        raise ValueError(f"{len(records)} records but {len(predictions)} predictions; they must pair up.")
    if not records:
        raise ValueError("No records to score (empty data or --limit 0).")
    for p in predictions:
        if not isinstance(p, str):
            raise TypeError(f"predictions must be str, got {type(p).__name__}.")
    missing = [f for f in fields if f not in records[0]]
    if missing:
        raise ValueError(f"Records lack field(s) {missing} (have {sorted(records[0])}); "
                         f"use the Hub's record format.")


def _binary_metrics(preds: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """Accuracy, precision, recall, F1 (positive class "yes") and the predicted-yes ratio."""
    tp = sum(p == "yes" and t == "yes" for p, t in zip(preds, labels))
    fp = sum(p == "yes" and t == "no" for p, t in zip(preds, labels))
    tn = sum(p == "no" and t == "no" for p, t in zip(preds, labels))
    fn = sum(p == "no" and t == "yes" for p, t in zip(preds, labels))
    n = len(preds)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": (tp + tn) / n, "precision": precision, "recall": recall, "f1": f1,
            "yes_ratio": sum(p == "yes" for p in preds) / n, "n": n, "tp": tp, "fp": fp, "tn": tn, "fn": fn}


def score_pope(records: Sequence[Mapping[str, Any]], predictions: Sequence[str]) -> dict[str, Any]:
    """POPE as LLaVA scores it: per ``category`` (adversarial / popular / random), then the mean.

    Fields: ``answer`` ("yes"/"no"), ``category`` (optional: one category "all" without it).
    Returns ``accuracy, precision, recall, f1, yes_ratio`` (means over categories), ``n`` and
    ``per_category[c]`` with the same metrics plus the confusion counts ``tp, fp, tn, fn``.
    Precision (recall) is 0 when nothing is predicted (labelled) yes.
    """
    _check(records, predictions, ["answer"])
    groups: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for record, pred in zip(records, predictions):
        label = str(record["answer"]).strip().lower()
        if label not in ("yes", "no"):
            raise ValueError(f"POPE answer must be 'yes' or 'no', got {record['answer']!r}.")
        preds, labels = groups[str(record.get("category") or "all")]
        preds.append(parse_pope_answer(pred))
        labels.append(label)
    per_category = {c: _binary_metrics(p, t) for c, (p, t) in sorted(groups.items())}
    keys = ("accuracy", "precision", "recall", "f1", "yes_ratio")
    mean = {k: sum(m[k] for m in per_category.values()) / len(per_category) for k in keys}
    return {**mean, "n": len(predictions), "per_category": per_category}


def score_mme(records: Sequence[Mapping[str, Any]], predictions: Sequence[str]) -> dict[str, Any]:
    """MME's official scores: per category ``acc`` + ``acc_plus`` (both in %), summed per part.

    Fields: ``question_id`` (the image; shared by its two questions), ``answer`` ("Yes"/"No"),
    ``category``. ``acc`` = % of questions right (an answer parsed as "other" is wrong),
    ``acc_plus`` = % of images whose questions are all right, ``score = acc + acc_plus``.
    ``perception_score`` / ``cognition_score`` sum the categories present of each part; images
    with other than 2 questions (e.g. cut by ``--limit``) are counted in ``incomplete_images``.
    """
    _check(records, predictions, ["question_id", "answer", "category"])
    part_of = {c.lower(): "perception" for c in MME_PERCEPTION} | {c.lower(): "cognition" for c in MME_COGNITION}
    by_category: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for record, pred in zip(records, predictions):
        category = str(record["category"])
        if category.lower() not in part_of:
            raise ValueError(f"Unknown MME category {category!r}; expected one of "
                             f"{list(MME_PERCEPTION + MME_COGNITION)}.")
        right = parse_mme_answer(pred) == str(record["answer"]).strip().lower()
        by_category[category][str(record["question_id"])].append(right)
    per_category: dict[str, dict[str, float]] = {}
    totals = {"perception": 0.0, "cognition": 0.0}
    incomplete = 0
    for category, images in sorted(by_category.items()):
        answers = [r for rights in images.values() for r in rights]
        acc = 100.0 * sum(answers) / len(answers)
        acc_plus = 100.0 * sum(all(rights) for rights in images.values()) / len(images)
        incomplete += sum(len(rights) != 2 for rights in images.values())
        per_category[category] = {"acc": acc, "acc_plus": acc_plus, "score": acc + acc_plus,
                                  "n": len(answers), "images": len(images)}
        totals[part_of[category.lower()]] += acc + acc_plus
    return {"perception_score": totals["perception"], "cognition_score": totals["cognition"],
            "total_score": totals["perception"] + totals["cognition"], "n": len(predictions),
            "incomplete_images": incomplete, "per_category": per_category}


def score_gqa(records: Sequence[Mapping[str, Any]], predictions: Sequence[str]) -> dict[str, Any]:
    """GQA exact match after LLaVA's normalisation (strip, trailing ".", lowercase) of both sides."""
    _check(records, predictions, ["answer"])
    right = [normalize_gqa_answer(p) == normalize_gqa_answer(str(r["answer"])) for r, p in zip(records, predictions)]
    return {"accuracy": sum(right) / len(right), "n": len(right)}


def _answer_text(answer: Any) -> str:
    # VizWiz's original annotation stores {"answer": ..., "answer_confidence": ...}; the Hub copies strings.
    return str(answer["answer"]) if isinstance(answer, Mapping) else str(answer)


def vqa_accuracy(prediction: str, answers: Sequence[Any]) -> float:
    """VQA accuracy of one prediction: mean over leave-one-out subsets of min(1, matches / 3).

    Prediction and human answers are normalised with :func:`normalize_vqa_answer` first.
    """
    if len(answers) < 2:
        raise ValueError(f"VQA accuracy needs the human answers (10 on TextVQA/VizWiz), got {len(answers)}.")
    pred = normalize_vqa_answer(prediction)
    gts = [normalize_vqa_answer(_answer_text(a)) for a in answers]
    return sum(min(1.0, sum(g == pred for j, g in enumerate(gts) if j != i) / 3) for i in range(len(gts))) / len(gts)


def score_vqa(records: Sequence[Mapping[str, Any]], predictions: Sequence[str]) -> dict[str, Any]:
    """TextVQA / VizWiz: mean :func:`vqa_accuracy` over the records' ``answers`` (10 per question)."""
    _check(records, predictions, ["answers"])
    scores = [vqa_accuracy(p, r["answers"]) for r, p in zip(records, predictions)]
    return {"accuracy": sum(scores) / len(scores), "n": len(scores)}


def score_scienceqa(records: Sequence[Mapping[str, Any]], predictions: Sequence[str]) -> dict[str, Any]:
    """ScienceQA: the parsed option letter (LLaVA's rule) equals ``answer`` (the index into ``choices``).

    Returns ``accuracy``, ``n`` and ``unparsed`` (answers with no option letter; counted wrong).
    """
    _check(records, predictions, ["choices", "answer"])
    parsed = [parse_option_letter(p, len(r["choices"])) for r, p in zip(records, predictions)]
    right = [idx == int(r["answer"]) for r, idx in zip(records, parsed)]
    return {"accuracy": sum(right) / len(right), "n": len(right), "unparsed": sum(i < 0 for i in parsed)}

"""Shapes-VQA: a seeded, generated visual-question task for proving that training works, on the CPU.

Each image (white background, `image_size` px square) shows `count` (1-4) identical shapes
(`circle`, `square`, `triangle`) of one colour (`red`, `green`, `blue`, `yellow`), lined up in
one band of the image: `left` / `right` (a column in that half) or `top` / `bottom` (a row).
Each record asks one question, LLaVA-1.5 short-answer style::

    <image>
    What color are the shapes?
    Answer the question using a single word or phrase.        -> "red"

Question types and answers: `color` (4 words), `shape` (3), `count` ("1"-"4"), `position`
(4). Within each split the four question types are equally frequent and, within each type,
every attribute (so also the answer) is balanced up to a remainder of one; the other
attributes are balanced independently. Sizes and positions are jittered, so images differ.

`build_shapes_vqa` writes `out_dir/{train,validation,test}.json` (LLaVA format, readable by
`load_llava_dataset`) + `out_dir/images/<split>/<i>.png` + `out_dir/shapes_vqa.json` (build
parameters and class balance) and returns the splits as a `DatasetDict`. Files depend only on
the seed and parameters (each split has its own random stream, so e.g. `n_train` does not change
the test split).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import string
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from datasets import DatasetDict

from .data import load_llava_dataset

FORMAT_VERSION = 2
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30), "green": (30, 160, 50), "blue": (30, 70, 220), "yellow": (235, 195, 20),
}
SHAPES = ("circle", "square", "triangle")
COUNTS = (1, 2, 3, 4)
POSITIONS = ("left", "right", "top", "bottom")
QUESTION_TYPES = ("color", "shape", "count", "position")
QUESTIONS = {
    "color": "What color are the shapes?",
    "shape": "What shape are the objects?",
    "count": "How many shapes are there?",
    "position": "Where are the shapes?",
}
ANSWER_HINT = "Answer the question using a single word or phrase."
SPLITS = ("train", "validation", "test")
MANIFEST = "shapes_vqa.json"
_SUPERSAMPLE = 4  # draw at 4x and downsample: anti-aliased, still deterministic


def answer_vocabulary() -> dict[str, list[str]]:
    """Question type -> its possible answers (all lowercase single words)."""
    return {"color": list(COLORS), "shape": list(SHAPES), "count": [str(c) for c in COUNTS],
            "position": list(POSITIONS)}


def draw_shapes(color: str, shape: str, count: int, position: str, image_size: int,
                rng: np.random.Generator) -> Any:
    """Render one RGB PIL image (`image_size` square) of `count` `shape`s of `color` in band `position`.

    Shapes have side/diameter ~ image_size/5 (+-10 %) and are jittered within their slot so
    they never overlap or leave the band (the half of the image named by `position`).
    """
    from PIL import Image, ImageDraw

    if color not in COLORS or shape not in SHAPES or count not in COUNTS or position not in POSITIONS:
        raise ValueError(f"unknown attributes color={color!r} shape={shape!r} count={count!r} "
                         f"position={position!r}.")
    big = image_size * _SUPERSAMPLE
    canvas = Image.new("RGB", (big, big), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    size = big / 5 * rng.uniform(0.9, 1.1)
    slot = big / count                                 # along the band
    along_room = max(slot - size, 0.0) / 2 * 0.8       # jitter that keeps neighbours apart
    across_room = (big / 2 - size) / 2 * 0.5           # jitter that keeps the shape in its half
    across = big / 4 if position in ("left", "top") else 3 * big / 4
    for i in range(count):
        a = slot * (i + 0.5) + rng.uniform(-along_room, along_room)
        b = across + rng.uniform(-across_room, across_room)
        cx, cy = (b, a) if position in ("left", "right") else (a, b)
        h = size / 2
        box = [cx - h, cy - h, cx + h, cy + h]
        fill = COLORS[color]
        if shape == "circle":
            draw.ellipse(box, fill=fill)
        elif shape == "square":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(cx, cy - h), (cx + h, cy + h), (cx - h, cy + h)], fill=fill)
    return canvas.resize((image_size, image_size), Image.Resampling.LANCZOS)


def _balanced(values: Sequence[Any], n: int, rng: np.random.Generator) -> list[Any]:
    """`n` draws of `values`, each value n//len or n//len+1 times, in random order."""
    order = rng.permutation(len(values))  # which values get the remainder is random too
    pool = [values[int(order[i % len(values)])] for i in range(n)]
    return [pool[int(i)] for i in rng.permutation(n)]


def generate_split_specs(n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Attributes + question type for `n` records: question types balanced, and within each type
    every attribute balanced (so the answers are too); records in random order."""
    types = _balanced(QUESTION_TYPES, n, rng)
    specs: list[dict[str, Any]] = [{} for _ in range(n)]
    for qtype in QUESTION_TYPES:
        idx = [i for i, t in enumerate(types) if t == qtype]
        columns = {"color": _balanced(list(COLORS), len(idx), rng), "shape": _balanced(SHAPES, len(idx), rng),
                   "count": _balanced(COUNTS, len(idx), rng), "position": _balanced(POSITIONS, len(idx), rng)}
        for j, i in enumerate(idx):
            spec = {k: v[j] for k, v in columns.items()}
            spec["count"] = int(spec["count"])
            spec["question_type"] = qtype
            spec["answer"] = str(spec[qtype])
            specs[i] = spec
    return specs


def _write_json_atomic(path: Path, data: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}.")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")


def build_shapes_vqa(
    out_dir: str | os.PathLike,
    *,
    n_train: int,
    n_val: int,
    n_test: int,
    seed: int = 0,
    image_size: int = 64,
    train_questions_per_image: int = 1,
    overwrite: bool = False,
) -> DatasetDict:
    """Generate Shapes-VQA into `out_dir` (see module docstring) and load it back.

    Returns a `DatasetDict` with splits "train", "validation", "test"; each has the columns of
    `load_llava_dataset` (`id`, `images`, `conversations`) plus `question_type` and `answer` (of
    the record's last question, the one `build_generation_batch` leaves for the model to answer).

    `train_questions_per_image` (1-4): training records ask that many different questions about
    their image, as a multi-turn conversation (more supervision per image, like LLaVA's
    instruction data); the last question is the balanced one, the others are drawn at random
    from the remaining types. Validation and test records always ask one question.

    If `out_dir` already holds a build with the same parameters it is loaded, not regenerated.
    A non-empty `out_dir` holding anything else raises `FileExistsError` unless `overwrite=True`.
    The build is written to a temporary sibling folder and renamed into place, so `out_dir` is
    never half-written.
    """
    if not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"out_dir must be a str or os.PathLike, got {type(out_dir).__name__}.")
    for name, value, minimum in (("n_train", n_train, 1), ("n_val", n_val, 0), ("n_test", n_test, 0),
                                 ("seed", seed, 0), ("image_size", image_size, 16),
                                 ("train_questions_per_image", train_questions_per_image, 1)):
        _check_int(name, value, minimum)
    if train_questions_per_image > len(QUESTION_TYPES):
        raise ValueError(f"train_questions_per_image must be <= {len(QUESTION_TYPES)} (one per question type), "
                         f"got {train_questions_per_image}.")
    out_dir = Path(out_dir)
    params = {"format_version": FORMAT_VERSION, "seed": int(seed), "image_size": int(image_size),
              "n": {"train": int(n_train), "validation": int(n_val), "test": int(n_test)},
              "train_questions_per_image": int(train_questions_per_image)}
    manifest_path = out_dir / MANIFEST
    if out_dir.exists():
        existing = None
        if manifest_path.is_file():
            try:
                existing = json.loads(manifest_path.read_text(encoding="utf-8")).get("params")
            except json.JSONDecodeError:
                existing = None
        if existing == params:
            return load_shapes_vqa(out_dir)
        if any(out_dir.iterdir()) and not overwrite:
            raise FileExistsError(f"{out_dir} is not empty and holds no Shapes-VQA build with these parameters; "
                                  f"pass overwrite=True to replace it, or choose another out_dir.")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        balance = {}
        for split_index, split in enumerate(SPLITS):
            rng = np.random.default_rng(np.random.SeedSequence([int(seed), split_index]))
            specs = generate_split_specs(params["n"][split], rng)
            (tmp / "images" / split).mkdir(parents=True)
            records = []
            k = int(train_questions_per_image) if split == "train" else 1
            for i, spec in enumerate(specs):
                rel = f"images/{split}/{i:05d}.png"
                image = draw_shapes(spec["color"], spec["shape"], spec["count"], spec["position"], image_size, rng)
                image.save(tmp / rel, format="PNG")
                others = [t for t in QUESTION_TYPES if t != spec["question_type"]]
                types = [others[int(j)] for j in rng.permutation(len(others))[: k - 1]] if k > 1 else []
                types.append(spec["question_type"])
                conversations = []
                for t, qtype in enumerate(types):
                    prefix = "<image>\n" if t == 0 else ""
                    conversations += [{"from": "human", "value": f"{prefix}{QUESTIONS[qtype]}\n{ANSWER_HINT}"},
                                      {"from": "gpt", "value": str(spec[qtype])}]
                records.append({"id": f"{split}-{i:05d}", "image": rel, "conversations": conversations,
                                "question_types": types, **spec})
            _write_json_atomic(tmp / f"{split}.json", records)
            balance[split] = _balance_of(records)
        _write_json_atomic(tmp / MANIFEST, {"params": params, "class_balance": balance,
                                            "answers": answer_vocabulary()})
        if out_dir.exists():
            trash = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old-"))
            os.replace(out_dir, trash / "old")
            os.replace(tmp, out_dir)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return load_shapes_vqa(out_dir)


def load_shapes_vqa(out_dir: str | os.PathLike) -> DatasetDict:
    """Load a Shapes-VQA build (`build_shapes_vqa`'s folder) as a `DatasetDict` (splits with records)."""
    out_dir = Path(out_dir)
    splits = {}
    for split in SPLITS:
        path = out_dir / f"{split}.json"
        records = json.loads(path.read_text(encoding="utf-8"))
        if not records:
            continue
        ds = load_llava_dataset(path, out_dir)
        ds = ds.add_column("question_type", [r["question_type"] for r in records])
        ds = ds.add_column("answer", [r["answer"] for r in records])
        splits[split] = ds
    return DatasetDict(splits)


def image_attributes(out_dir: str | os.PathLike, split: str) -> dict[str, list[str]]:
    """What each image of `split` shows, from a `build_shapes_vqa` folder: attribute -> one answer per record.

    Keys are the question types ("color", "shape", "count", "position"); values are lists (record
    order, the order of `load_shapes_vqa(out_dir)[split]`) of answer strings from
    `answer_vocabulary()`. Every attribute of every image is given, whatever its record asks (labels
    for pretraining a vision tower). Raises `ValueError` for an unknown split, `FileNotFoundError`
    when `out_dir` holds no such split.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
    path = Path(out_dir) / f"{split}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; build the task with build_shapes_vqa(out_dir, ...) first.")
    records = json.loads(path.read_text(encoding="utf-8"))
    return {qtype: [str(r[qtype]) for r in records] for qtype in QUESTION_TYPES}


def _balance_of(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Question type -> {answer: count} over every question of `records` (JSON records)."""
    out: dict[str, dict[str, int]] = {t: {} for t in QUESTION_TYPES}
    for r in records:
        for qtype in r.get("question_types", [r["question_type"]]):
            answer = str(r[qtype])
            out[qtype][answer] = out[qtype].get(answer, 0) + 1
    return {t: dict(sorted(c.items())) for t, c in out.items()}


def class_balance(dataset: Any) -> dict[str, dict[str, int]]:
    """Question type -> {answer: number of records} over the records' last (evaluated) questions
    (rows with `question_type` and `answer`; the manifest's `class_balance` counts every question)."""
    out: dict[str, dict[str, int]] = {t: {} for t in QUESTION_TYPES}
    for qtype, answer in zip(dataset["question_type"], dataset["answer"]):
        out[qtype][answer] = out[qtype].get(answer, 0) + 1
    return {t: dict(sorted(c.items())) for t, c in out.items()}


_ARTICLES = {"a", "an", "the"}
_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"])}
_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize_answer(text: str) -> str:
    """VQA-style normalisation: lowercase, punctuation -> space, drop articles (a, an, the), number
    words zero-ten -> digits, collapse whitespace. "The Red." -> "red", "Two" -> "2"."""
    if not isinstance(text, str):
        raise TypeError(f"answers must be strings, got {type(text).__name__}.")
    words = _PUNCT.sub(" ", text.lower()).split()
    return " ".join(_NUMBER_WORDS.get(w, w) for w in words if w not in _ARTICLES)


def exact_match_accuracy(predictions: Sequence[str], answers: Sequence[str]) -> float:
    """Fraction (0-1) of predictions equal to their answer after `normalize_answer`.

    Raises `ValueError` if the lengths differ or are zero, `TypeError` for non-string items.
    """
    predictions, answers = list(predictions), list(answers)
    if len(predictions) != len(answers):
        raise ValueError(f"got {len(predictions)} predictions for {len(answers)} answers.")
    if not answers:
        raise ValueError("exact_match_accuracy needs at least one answer.")
    hits = sum(normalize_answer(p) == normalize_answer(a) for p, a in zip(predictions, answers))
    return hits / len(answers)


__all__ = [
    "ANSWER_HINT",
    "COLORS",
    "COUNTS",
    "POSITIONS",
    "QUESTIONS",
    "QUESTION_TYPES",
    "SHAPES",
    "answer_vocabulary",
    "build_shapes_vqa",
    "class_balance",
    "draw_shapes",
    "exact_match_accuracy",
    "generate_split_specs",
    "image_attributes",
    "load_shapes_vqa",
    "normalize_answer",
]

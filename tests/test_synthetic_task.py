"""Shapes-VQA: files + splits, readable by load_llava_dataset, deterministic per seed, balanced, answers match
the pictures, reuse/overwrite rules, exact-match metric, and a collated forward pass on the tiny model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from llava_fa.training import LlavaCollator, load_llava_dataset
from llava_fa.training.synthetic_task import (
    COLORS,
    build_shapes_vqa,
    class_balance,
    exact_match_accuracy,
    image_attributes,
    normalize_answer,
)

SIZES = dict(n_train=48, n_val=12, n_test=12)


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("svqa") / "shapes"
    return out, build_shapes_vqa(out, seed=0, **SIZES)


def test_splits_files_and_llava_format(built):
    out, dd = built
    assert list(dd) == ["train", "validation", "test"]
    assert [len(dd[s]) for s in dd] == [48, 12, 12]
    assert dd["train"].column_names == ["id", "images", "conversations", "question_type", "answer"]
    assert len({i for s in dd for i in dd[s]["id"]}) == 72  # ids unique across splits
    assert len(list((out / "images").rglob("*.png"))) == 72
    row = dd["test"][0]
    assert row["conversations"][0]["value"].startswith("<image>\n")
    assert row["conversations"][0]["value"].endswith("\nAnswer the question using a single word or phrase.")
    assert row["conversations"][1] == {"from": "gpt", "value": row["answer"]}
    assert Image.open(row["images"][0]).size == (64, 64)
    # the JSON on disk reads back with the generic loader
    again = load_llava_dataset(out / "validation.json", out)
    assert again["conversations"] == dd["validation"]["conversations"] and again["images"] == dd["validation"]["images"]
    manifest = json.loads((out / "shapes_vqa.json").read_text())
    assert manifest["class_balance"]["train"] == class_balance(dd["train"])


def test_classes_are_balanced(built):
    _, dd = built
    balance = class_balance(dd["train"])  # 48 records: 12 per question type
    assert balance == {
        "color": {"blue": 3, "green": 3, "red": 3, "yellow": 3},
        "shape": {"circle": 4, "square": 4, "triangle": 4},
        "count": {"1": 3, "2": 3, "3": 3, "4": 3},
        "position": {"bottom": 3, "left": 3, "right": 3, "top": 3},
    }


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a boolean mask, as arrays of (y, x)."""
    seen = np.zeros_like(mask, dtype=bool)
    comps = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        stack, pts = [(y0, x0)], []
        seen[y0, x0] = True
        while stack:
            y, x = stack.pop()
            pts.append((y, x))
            for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                v, u = y + dy, x + dx
                if 0 <= v < mask.shape[0] and 0 <= u < mask.shape[1] and mask[v, u] and not seen[v, u]:
                    seen[v, u] = True
                    stack.append((v, u))
        comps.append(np.array(pts))
    return comps


def test_answers_match_the_pictures(built):
    out, _ = built
    for split in ("train", "test"):
        for rec in json.loads((out / f"{split}.json").read_text()):
            img = np.asarray(Image.open(out / rec["image"]).convert("RGB")).astype(int)
            ink = (255 - img).sum(-1) > 150  # clearly coloured pixels
            comps = [c for c in _components(ink) if len(c) > 10]
            assert len(comps) == rec["count"], rec["id"]
            mean_colour = img[ink].mean(0)
            nearest = min(COLORS, key=lambda c: np.abs(mean_colour - np.array(COLORS[c])).sum())
            assert nearest == rec["color"], rec["id"]
            cy, cx = np.argwhere(ink).mean(0)
            side = {"left": cx < 32, "right": cx > 32, "top": cy < 32, "bottom": cy > 32}
            assert side[rec["position"]], rec["id"]
            fill = np.mean([len(c) / ((np.ptp(c[:, 0]) + 1) * (np.ptp(c[:, 1]) + 1)) for c in comps])
            shape = "square" if fill > 0.88 else "circle" if fill > 0.65 else "triangle"
            assert shape == rec["shape"], (rec["id"], fill)
            assert rec["answer"] == str(rec[rec["question_type"]])


def test_same_seed_same_files_other_seed_differs(tmp_path, built):
    out0, dd0 = built
    again = build_shapes_vqa(tmp_path / "again", seed=0, **SIZES)
    assert _digest(tmp_path / "again") == _digest(out0)
    assert again["train"]["answer"] == dd0["train"]["answer"]
    other = build_shapes_vqa(tmp_path / "other", seed=1, **SIZES)
    assert other["train"]["answer"] != dd0["train"]["answer"]
    assert _digest(tmp_path / "other")["images/train/00000.png"] != _digest(out0)["images/train/00000.png"]
    # the test split does not depend on the training-set size
    bigger = build_shapes_vqa(tmp_path / "bigger", seed=0, n_train=60, n_val=12, n_test=12)
    assert bigger["test"]["conversations"] == dd0["test"]["conversations"]
    assert _digest(tmp_path / "bigger")["test.json"] == _digest(out0)["test.json"]


def test_reuse_overwrite_and_argument_errors(tmp_path):
    out = tmp_path / "d"
    build_shapes_vqa(out, n_train=8, n_val=0, n_test=4, seed=3)
    stamp = (out / "train.json").stat().st_mtime_ns
    dd = build_shapes_vqa(out, n_train=8, n_val=0, n_test=4, seed=3)  # same parameters: loaded, not rewritten
    assert (out / "train.json").stat().st_mtime_ns == stamp and list(dd) == ["train", "test"]
    with pytest.raises(FileExistsError, match="not empty .* pass overwrite=True"):
        build_shapes_vqa(out, n_train=8, n_val=0, n_test=4, seed=4)
    dd = build_shapes_vqa(out, n_train=4, n_val=0, n_test=4, seed=4, overwrite=True)
    assert len(dd["train"]) == 4 and len(list((out / "images" / "train").iterdir())) == 4
    assert [p.name for p in tmp_path.iterdir()] == ["d"]  # no temporary folders left behind
    with pytest.raises(ValueError, match="n_train must be >= 1"):
        build_shapes_vqa(tmp_path / "x", n_train=0, n_val=1, n_test=1)
    with pytest.raises(TypeError, match="image_size must be an int"):
        build_shapes_vqa(tmp_path / "x", n_train=1, n_val=1, n_test=1, image_size=64.0)


def test_exact_match_normalisation():
    assert normalize_answer("The Red.") == "red" and normalize_answer(" Two ") == "2"
    assert normalize_answer("a triangle!") == "triangle"
    assert exact_match_accuracy(["Red.", "two", "circle", "left"], ["red", "2", "square", "Left"]) == 0.75
    with pytest.raises(ValueError, match="got 1 predictions for 2 answers"):
        exact_match_accuracy(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="at least one"):
        exact_match_accuracy([], [])
    with pytest.raises(TypeError, match="answers must be strings"):
        exact_match_accuracy([1], ["1"])


def test_collated_shapes_batch_gives_finite_loss(built, tiny_model_and_processor):
    _, dd = built
    model, processor = tiny_model_and_processor
    batch = LlavaCollator(processor)([dd["train"][i] for i in range(4)])
    assert batch["pixel_values"].shape == (4, 3, 28, 28)
    with torch.no_grad():
        loss = model(**batch).loss
    assert torch.isfinite(loss)
    # only the one-word answer and <|im_end|> are trained on
    for row, labels in zip(range(4), batch["labels"]):
        kept = labels[labels != -100]
        assert processor.tokenizer.decode(kept) == dd["train"][row]["answer"] + "<|im_end|>"


def test_multi_question_training_records(tmp_path, built):
    _, single = built
    dd = build_shapes_vqa(tmp_path / "multi", seed=0, train_questions_per_image=4, **SIZES)
    manifest = json.loads((tmp_path / "multi" / "shapes_vqa.json").read_text())
    records = json.loads((tmp_path / "multi" / "train.json").read_text())
    for rec, row in zip(records, dd["train"]):
        assert sorted(rec["question_types"]) == ["color", "count", "position", "shape"]
        assert rec["question_types"][-1] == row["question_type"] == rec["question_type"]
        turns = row["conversations"]
        assert len(turns) == 8 and turns[0]["value"].startswith("<image>\n")
        assert sum(t["value"].count("<image>") for t in turns) == 1
        assert [t["value"] for t in turns[1::2]] == [str(rec[q]) for q in rec["question_types"]]
    # every question counted: each type asked of all 48 images, attributes balanced
    assert manifest["class_balance"]["train"]["color"] == {"blue": 12, "green": 12, "red": 12, "yellow": 12}
    assert manifest["class_balance"]["train"]["shape"] == {"circle": 16, "square": 16, "triangle": 16}
    # the last (evaluated) questions and the images are those of the single-question build
    assert dd["train"]["answer"] == single["train"]["answer"]
    assert dd["validation"]["conversations"] == single["validation"]["conversations"]
    with pytest.raises(ValueError, match="train_questions_per_image must be <= 4"):
        build_shapes_vqa(tmp_path / "x", n_train=1, n_val=0, n_test=0, train_questions_per_image=5)


def test_image_attributes_label_every_image(built, tmp_path):
    out, dd = built
    for split in ("train", "validation"):
        attrs = image_attributes(out, split)
        records = json.loads((out / f"{split}.json").read_text())
        assert sorted(attrs) == ["color", "count", "position", "shape"]
        assert all(len(v) == len(dd[split]) for v in attrs.values())
        assert attrs["count"][:3] == [str(r["count"]) for r in records[:3]]
        # the answer of each record is the attribute its question asks about
        for i, (qtype, answer) in enumerate(zip(dd[split]["question_type"], dd[split]["answer"])):
            assert attrs[qtype][i] == answer
    with pytest.raises(ValueError, match="split must be one of"):
        image_attributes(out, "dev")
    with pytest.raises(FileNotFoundError, match="build_shapes_vqa"):
        image_attributes(tmp_path / "missing", "train")

"""Reading task data in the formats the Hub distributes: snapshots of parquet files, save_to_disk, JSONL."""

from __future__ import annotations

import io
import json

import datasets
import pytest
from PIL import Image

from llava_fa.evaluation.data import find_task_data, load_task_data, to_pil
from llava_fa.evaluation.synthetic import synthetic_records, write_synthetic_task
from llava_fa.evaluation.tasks import TASKS


def _png(colour, size=(12, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _pope_rows():
    cats = ["adversarial", "adversarial", "popular", "random", "random"]
    return [{"id": str(i), "question_id": str(10 + i), "question": f"Is there a cup {i}?", "answer": ("yes", "no")[i % 2],
             "image_source": f"COCO_{i}", "image": {"bytes": _png((40 * i, 0, 0)), "path": None}, "category": c}
            for i, c in enumerate(cats)]


def _dataset(rows):
    return datasets.Dataset.from_list(rows).cast_column("image", datasets.Image())


def test_hub_snapshot_layout_parquet(tmp_path):
    folder = tmp_path / "pope"
    (folder / "data").mkdir(parents=True)
    _dataset(_pope_rows()).to_parquet(str(folder / "data" / "test-00000-of-00001.parquet"))
    (folder / "README.md").write_text("---\nconfigs: []\n---\n")
    data = load_task_data(TASKS["pope"], folder)
    assert len(data) == 5
    assert data.records[0] == {"id": "0", "question_id": "10", "question": "Is there a cup 0?", "answer": "yes",
                               "image_source": "COCO_0", "category": "adversarial"}
    image = data.image(2)
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (12, 8)
    assert image.getpixel((0, 0)) == (80, 0, 0)

    adversarial = load_task_data(TASKS["pope_adversarial"], folder)
    assert [r["question_id"] for r in adversarial.records] == ["10", "11"]
    assert adversarial.image(1).getpixel((0, 0)) == (40, 0, 0)
    assert [r["question_id"] for r in load_task_data(TASKS["pope_random"], folder, limit=1).records] == ["13"]
    assert len(load_task_data(TASKS["pope"], folder, limit=3)) == 3


def test_single_parquet_file_without_hf_metadata(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = _pope_rows()
    table = pa.Table.from_pylist([{**r, "image": {"bytes": r["image"]["bytes"], "path": "x.png"}} for r in rows])
    pq.write_table(table, tmp_path / "pope.parquet")
    data = load_task_data(TASKS["pope"], tmp_path / "pope.parquet")
    assert len(data) == 5 and data.image(4).getpixel((0, 0)) == (160, 0, 0)


def test_save_to_disk_dataset_dict_and_dataset(tmp_path):
    rows = _pope_rows()
    datasets.DatasetDict({"train": _dataset(rows[:1]), "test": _dataset(rows)}).save_to_disk(str(tmp_path / "dd"))
    assert len(load_task_data(TASKS["pope"], tmp_path / "dd")) == 5  # the task's split, not "train"
    datasets.DatasetDict({"val": _dataset(rows[:2]), "train": _dataset(rows)}).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(ValueError, match=r"splits \['val', 'train'\] but not 'test'"):
        load_task_data(TASKS["pope"], tmp_path / "bad")
    _dataset(rows[:2]).save_to_disk(str(tmp_path / "ds"))
    data = load_task_data(TASKS["pope"], tmp_path / "ds")
    assert len(data) == 2 and data.image(1).getpixel((0, 0)) == (40, 0, 0)


def test_jsonl_with_relative_image_paths(tmp_path):
    folder = tmp_path / "textvqa"
    (folder / "images").mkdir(parents=True)
    lines = []
    for i in range(3):
        Image.new("RGB", (10, 10), (0, 50 * i, 0)).save(folder / "images" / f"{i}.png")
        lines.append(json.dumps({"question_id": i, "question": "what?", "answers": ["a"] * 10,
                                 "ocr_tokens": ["a"], "image": f"images/{i}.png"}))
    (folder / "validation.jsonl").write_text("\n".join(lines) + "\n")
    data = load_task_data(TASKS["textvqa"], folder)
    assert [r["question_id"] for r in data.records] == [0, 1, 2]
    assert data.image(2).getpixel((5, 5)) == (0, 100, 0)


def test_gqa_joins_questions_with_the_image_config(tmp_path):
    folder = write_synthetic_task("gqa", tmp_path / "gqa", n=4)
    assert (folder / "testdev_balanced_instructions" / "testdev-00000-of-00001.parquet").is_file()
    data = load_task_data(TASKS["gqa"], folder)
    expected = synthetic_records("gqa", 4)
    assert [r["imageId"] for r in data.records] == ["n0", "n0", "n1", "n1"]
    assert "image" not in data.records[0]
    assert data.image(3).tobytes() == to_pil(expected[3]["image"]).tobytes()
    # an instruction without its image is an error naming the id
    rows = [{k: v for k, v in r.items() if k != "image"} for r in expected]
    rows[1]["imageId"] = "n9"
    datasets.Dataset.from_list(rows).to_parquet(
        str(folder / "testdev_balanced_instructions" / "testdev-00000-of-00001.parquet"))
    with pytest.raises(ValueError, match="'n9'"):
        load_task_data(TASKS["gqa"], folder)


def test_config_folder_is_chosen_and_ambiguity_is_an_error(tmp_path):
    folder = tmp_path / "sqa"
    for config, n in (("ScienceQA-IMG", 3), ("ScienceQA-FULL", 5)):
        (folder / config).mkdir(parents=True)
        _dataset(synthetic_records("scienceqa_img", n)).to_parquet(str(folder / config / "test-00000-of-00001.parquet"))
    assert len(load_task_data(TASKS["scienceqa_img"], folder)) == 3
    with pytest.raises(ValueError, match="several folders"):
        load_task_data(TASKS["mme"], folder)


def test_missing_and_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"task 'mme'.*{tmp_path / 'mme'}"):
        find_task_data(TASKS["mme"], tmp_path)
    (tmp_path / "pope").mkdir()
    assert find_task_data(TASKS["pope_random"], tmp_path) == tmp_path / "pope"
    with pytest.raises(FileNotFoundError, match="No parquet, JSONL or save_to_disk data"):
        load_task_data(TASKS["pope"], tmp_path / "pope")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_task_data(TASKS["pope"], tmp_path / "nowhere")
    (tmp_path / "x.csv").write_text("a\n1\n")
    with pytest.raises(ValueError, match="expected a folder, .parquet"):
        load_task_data(TASKS["pope"], tmp_path / "x.csv")
    write_synthetic_task("pope", tmp_path / "pope", n=3)
    with pytest.raises(ValueError, match="limit must be >= 1"):
        load_task_data(TASKS["pope"], tmp_path / "pope", limit=0)
    with pytest.raises(TypeError, match="limit must be an int"):
        load_task_data(TASKS["pope"], tmp_path / "pope", limit="3")
    no_image = tmp_path / "noimg.jsonl"
    no_image.write_text(json.dumps({"question_id": 1, "question": "q", "answer": "yes"}) + "\n")
    with pytest.raises(ValueError, match="no 'image' field"):
        load_task_data(TASKS["pope"], no_image)
    with pytest.raises(TypeError, match="Cannot read an image from a int"):
        to_pil(3)


@pytest.mark.parametrize("task", ["pope", "mme", "gqa", "textvqa", "vizwiz", "scienceqa_img"])
def test_synthetic_fixtures_load_and_score(task, tmp_path):
    spec = TASKS[task]
    folder = write_synthetic_task(task, tmp_path / spec.folder, n=6)
    data = load_task_data(spec, folder)
    assert len(data) == 6 and data.image(5).mode == "RGB"
    prompts = [spec.prompt(r) for r in data.records]
    assert all(isinstance(p, str) and p for p in prompts)
    scores = spec.scorer(data.records, ["yes"] * 6)
    assert spec.main_metric in scores

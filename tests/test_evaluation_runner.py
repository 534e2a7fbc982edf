"""The runner on the tiny model (random weights): shapes, metadata, determinism, padding, files, errors."""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from llava_fa.evaluation import TASKS, evaluate, evaluate_path, generate_answers  # noqa: E402
from llava_fa.evaluation.data import load_task_data  # noqa: E402
from llava_fa.evaluation.synthetic import write_synthetic_task  # noqa: E402
from llava_fa.testing import build_tiny_llava_fa, save_tiny_llava_fa  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_llava_fa(seed=0)


@pytest.fixture(scope="module")
def pope_dir(tmp_path_factory):
    return write_synthetic_task("pope", tmp_path_factory.mktemp("data") / "pope", n=6)


def test_evaluate_result_record(tiny, pope_dir):
    model, processor = tiny
    result = evaluate(model, processor, "pope", pope_dir, limit=5, batch_size=2, max_new_tokens=4, progress=False)
    import llava_fa

    assert result["task"] == "pope" and result["split"] == "test" and result["n_samples"] == 5
    assert result["metric"] == "f1" and result["value"] == result["scores"]["f1"]
    assert result["llava_fa_version"] == llava_fa.__version__
    assert result["generation"]["max_new_tokens"] == 4 and result["generation"]["batch_size"] == 2
    assert [p["id"] for p in result["predictions"]] == ["0", "1", "2", "3", "4"]
    # the scores are the scorer's verdict on exactly these predictions
    records = load_task_data(TASKS["pope"], pope_dir, limit=5).records
    assert result["scores"] == TASKS["pope"].scorer(records, [p["prediction"] for p in result["predictions"]])
    assert result["scores"]["n"] == 5 and set(result["scores"]["per_category"]) == {"adversarial", "popular", "random"}
    json.dumps(result)  # serialisable as is
    # the parent data_dir works too (data_dir/pope is found)
    again = evaluate(model, processor, "pope", pope_dir.parent, limit=5, batch_size=5, max_new_tokens=4, progress=False)
    assert again["predictions"] == result["predictions"] and again["data"] == str(pope_dir)
    assert processor.tokenizer.padding_side == "left"


def test_greedy_is_deterministic_and_left_padding_is_batch_invariant(tiny, pope_dir):
    model, processor = tiny
    data = load_task_data(TASKS["pope"], pope_dir)
    prompts = [f"{r['question']} {'and more words ' * i}" for i, r in enumerate(data.records[:4])]  # unequal lengths
    images = [data.image(i) for i in range(4)]
    processor.tokenizer.padding_side = "right"  # the runner must pad left whatever the tokenizer says
    one = generate_answers(model, processor, prompts, images, max_new_tokens=4, batch_size=1, progress=False)
    many = generate_answers(model, processor, prompts, images, max_new_tokens=4, batch_size=3, progress=False)
    again = generate_answers(model, processor, prompts, images, max_new_tokens=4, batch_size=3, progress=False)
    assert processor.tokenizer.padding_side == "right"  # restored
    processor.tokenizer.padding_side = "left"
    assert one == many == again
    assert len(one) == 4 and all(isinstance(a, str) for a in one)
    assert len(set(one)) > 1  # the answers do depend on the input
    text_only = generate_answers(model, processor, ["Hello", "What is 2 + 2?"], None, max_new_tokens=3, progress=False)
    assert len(text_only) == 2


def test_generation_argument_errors(tiny):
    model, processor = tiny
    with pytest.raises(ValueError, match="one image per prompt"):
        generate_answers(model, processor, ["a", "b"], [None], progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        generate_answers(model, processor, ["a"], None, batch_size=0, progress=False)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_answers(model, processor, ["a"], None, max_new_tokens=0, progress=False)


def test_evaluate_errors(tiny, tmp_path):
    model, processor = tiny
    with pytest.raises(ValueError, match="Unknown task 'popee'"):
        evaluate(model, processor, "popee", tmp_path)
    with pytest.raises(FileNotFoundError, match="task 'mme'"):
        evaluate(model, processor, "mme", tmp_path / "mme")


def test_evaluate_path_writes_results_json(tmp_path):
    model_dir = save_tiny_llava_fa(tmp_path / "tiny", seed=1)
    data_dir = tmp_path / "data"
    write_synthetic_task("pope", data_dir / "pope", n=6)  # rows 2 and 5 are "random"
    write_synthetic_task("scienceqa_img", data_dir / "scienceqa_img", n=3)
    out = tmp_path / "out" / "results.json"
    summary = evaluate_path(str(model_dir), ["pope_random", "scienceqa_img"], str(data_dir), limit=2, batch_size=2,
                            output=str(out), device="cpu")
    on_disk = json.loads(out.read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert set(on_disk["results"]) == {"pope_random", "scienceqa_img"}
    pope = on_disk["results"]["pope_random"]
    assert pope["model"] == str(model_dir) and pope["n_samples"] == 2 and pope["split"] == "test"
    assert set(pope["scores"]["per_category"]) == {"random"}
    assert on_disk["results"]["scienceqa_img"]["n_samples"] == 2
    assert [p.name for p in out.parent.iterdir()] == ["results.json"]  # no temp file left behind

    # a task failing after another finished leaves the finished one on disk
    write_synthetic_task("gqa", data_dir / "gqa", n=2)
    for f in (data_dir / "gqa" / "testdev_balanced_images").iterdir():
        f.unlink()
    partial = tmp_path / "partial.json"
    with pytest.raises(FileNotFoundError, match="No data of config 'testdev_balanced_images'"):
        evaluate_path(str(model_dir), ["pope_random", "gqa"], str(data_dir), limit=1, output=str(partial), device="cpu")
    assert list(json.loads(partial.read_text())["results"]) == ["pope_random"]


def test_evaluate_path_checks_tasks_and_data_before_loading(tmp_path):
    (tmp_path / "data").mkdir()
    with pytest.raises(ValueError, match="Unknown task 'seed'"):
        evaluate_path(str(tmp_path / "no-model"), ["pope", "seed"], str(tmp_path / "data"))
    with pytest.raises(FileNotFoundError, match=f"task 'gqa': expected {tmp_path / 'data' / 'gqa'}"):
        evaluate_path(str(tmp_path / "no-model"), ["gqa"], str(tmp_path / "data"))
    with pytest.raises(ValueError, match="No tasks given"):
        evaluate_path(str(tmp_path / "no-model"), [], str(tmp_path / "data"))
    assert not (tmp_path / "no-model").exists()


def test_progress_bar_and_its_switches(tiny, capsys):
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    model, processor = tiny
    generate_answers(model, processor, ["Hello"], None, max_new_tokens=2, progress=True, description="pope")
    assert "pope: 100%" in capsys.readouterr().err
    generate_answers(model, processor, ["Hello"], None, max_new_tokens=2, progress=False, description="pope")
    assert "pope" not in capsys.readouterr().err
    disable_progress_bars()  # what HF_HUB_DISABLE_PROGRESS_BARS=1 does
    try:
        generate_answers(model, processor, ["Hello"], None, max_new_tokens=2, progress=True, description="pope")
    finally:
        enable_progress_bars()
    assert "pope" not in capsys.readouterr().err

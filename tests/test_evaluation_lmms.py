"""The lmms-eval model ``llava_fa`` on a local fixture task (runs only where lmms-eval is installed).

lmms-eval is an optional extra; these tests skip without it. The CLI test registers the entry
point exactly as pyproject declares it, through a throw-away ``*.dist-info`` on ``PYTHONPATH``.
"""

from __future__ import annotations

import glob
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
lmms_eval = pytest.importorskip("lmms_eval")

from llava_fa.evaluation import evaluate  # noqa: E402
from llava_fa.evaluation.synthetic import write_synthetic_task  # noqa: E402
from llava_fa.testing import build_tiny_llava_fa, save_tiny_llava_fa  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TASK = "llava_fa_pope_fixture"
# pyproject: [project.entry-points."lmms_eval.models"] llava_fa = "llava_fa.evaluation.lmms_eval_plugin:MANIFEST",
# which an install writes to entry_points.txt as:
ENTRY_POINT = "llava_fa = llava_fa.evaluation.lmms_eval_plugin:MANIFEST"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("lmms")
    model_dir = save_tiny_llava_fa(root / "tiny", seed=0)
    data = write_synthetic_task("pope", root / "data" / "pope", n=6)
    parquet = next((data / "data").glob("test-*.parquet"))
    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / "utils.py").write_text("from lmms_eval.tasks.pope.utils import *  # noqa: F401,F403\n")
    (tasks / f"{TASK}.yaml").write_text(textwrap.dedent(f"""\
        dataset_path: parquet
        dataset_kwargs:
          data_files:
            test: {parquet}
        task: {TASK}
        test_split: test
        output_type: generate_until
        doc_to_visual: !function utils.pope_doc_to_visual
        doc_to_text: !function utils.pope_doc_to_text
        doc_to_target: "answer"
        generation_kwargs:
          max_new_tokens: 6
          temperature: 0
          do_sample: false
        process_results: !function utils.pope_process_results
        metric_list:
          - metric: pope_accuracy
            aggregation: !function utils.pope_aggregate_accuracy
            higher_is_better: true
          - metric: pope_yes_ratio
            aggregation: !function utils.pope_aggregate_yes_ratio
            higher_is_better: true
        lmms_eval_specific_kwargs:
          default:
            pre_prompt: ""
            post_prompt: "\\nAnswer the question using a single word or phrase."
        """))
    return {"root": root, "model": model_dir, "data": data, "tasks": tasks}


def test_simple_evaluate_matches_our_runner(setup):
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    from llava_fa.evaluation.lmms_eval_plugin import LlavaFALmms

    lm = LlavaFALmms(pretrained=str(setup["model"]), device="cpu", batch_size=2)
    out = simple_evaluate(model=lm, tasks=[TASK], task_manager=TaskManager(include_path=str(setup["tasks"])),
                          limit=4, log_samples=True)
    metrics = out["results"][TASK]
    assert 0.0 <= metrics["pope_accuracy,none"] <= 1.0
    assert metrics["pope_yes_ratio,none"] == 0.5  # lmms-eval counts ground-truth yes (2 of 4 here)
    theirs = [s["resps"][0][0].strip() for s in sorted(out["samples"][TASK], key=lambda s: s["doc_id"])]
    model, processor = build_tiny_llava_fa(seed=0)
    ours = evaluate(model, processor, "pope", setup["data"], limit=4, max_new_tokens=6, progress=False)
    assert theirs == [p["prediction"].split("\n\n")[0] for p in ours["predictions"]]  # same prompt, same answers


def test_loglikelihood_and_arguments(setup):
    from lmms_eval.api.instance import Instance

    from llava_fa.evaluation.lmms_eval_plugin import LlavaFALmms

    lm = LlavaFALmms(pretrained=str(setup["model"]), device="cpu")
    lm.task_dict = {"t": {"test": [{"image": None}]}}

    def request(continuation):
        return Instance(request_type="loglikelihood", arguments=("Is there a cat?", continuation, None, 0, "t", "test"),
                        idx=0, metadata={"task": "t", "doc_id": 0, "repeats": 1})

    (one, greedy_one), (two, _) = lm.loglikelihood([request(" yes"), request(" yes no")])
    assert math.isfinite(one) and one < 0.0 and isinstance(greedy_one, bool)
    assert two < one  # one more token can only lower the joint log-probability
    with pytest.raises(TypeError, match="unknown model_args"):
        LlavaFALmms(pretrained=str(setup["model"]), device="cpu", conv_template="x")
    with pytest.raises(NotImplementedError):
        lm.generate_until_multi_round([])


def test_cli_with_entry_point(setup):
    dist = setup["root"] / "ep" / "llava_fa_lmms_fixture-0.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: llava-fa-lmms-fixture\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text(f"[lmms_eval.models]\n{ENTRY_POINT}\n")
    out = setup["root"] / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(dist.parent), str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "lmms_eval", "--model", "llava_fa", "--model_args",
         f"pretrained={setup['model']},device=cpu", "--tasks", TASK, "--include_path", str(setup["tasks"]),
         "--limit", "2", "--output_path", str(out)],
        env=env, capture_output=True, text=True, timeout=600)
    results = glob.glob(str(out / "**" / "*_results.json"), recursive=True)
    # lmms-eval exits 0 even when evaluation fails: the results file is the real check
    assert proc.returncode == 0 and results, proc.stderr[-3000:]
    assert "pope_accuracy,none" in json.loads(Path(results[0]).read_text())["results"][TASK]


VQA_STRINGS = ["Two dogs.", "The Left-Hand", "It's", "dont", "3.5", "yes!", "10,000", "a  cat\n", "None", "coca-cola, inc",
               "R&B", "an apple; a pear", "whats up?", "Youre (right)", "1,2 and 3", "e.g. that", "...", "", "50%",
               "don't stop-believing", "ten, eleven", "the 'quoted' one", "a/b", "x_y", "<tag>", "@home", "C++"]


def test_vqa_normalisation_matches_lmms_eval_reference():
    from lmms_eval.tasks._task_utils.vqa_eval_metric import EvalAIAnswerProcessor
    from lmms_eval.tasks.textvqa.utils import textvqa_process_results

    from llava_fa.evaluation.normalize import normalize_vqa_answer
    from llava_fa.evaluation.scorers import vqa_accuracy

    reference = EvalAIAnswerProcessor()
    assert [normalize_vqa_answer(s) for s in VQA_STRINGS] == [reference(s) for s in VQA_STRINGS]
    answers = ["two", "2", "2", "Two.", "3", "three", "the 3", "4", "coca-cola", "coca cola"]
    for prediction in ["2", "Three", "4", "coca cola", "five"]:
        theirs = textvqa_process_results({"question_id": 0, "answers": list(answers)}, [prediction])["exact_match"]
        assert vqa_accuracy(prediction, answers) == pytest.approx(theirs)


def test_mme_parsing_differs_from_lmms_eval_only_on_single_letters():
    from lmms_eval.tasks.mme.utils import parse_pred_ans

    from llava_fa.evaluation.normalize import parse_mme_answer

    same = ["Yes", "No.", "yes, it is", "nope", "none", "maybe", "The answer is no", "NO", "Yes."]
    assert [parse_mme_answer(s) for s in same] == [parse_pred_ans(s) for s in same]
    # the official MME script has no single-letter rule; lmms-eval reads "y"/"n" as yes/no
    assert (parse_mme_answer("y"), parse_pred_ans("y")) == ("other", "yes")

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

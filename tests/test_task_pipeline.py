"""The Shapes-VQA task pipeline of benchmarks/finetune.py at toy size: train, compress, recover, baseline, report.

Checks real values, not the benchmark's figures: accuracies are floats in [0, 1], the compressed folder
holds FourierLinear modules, recovery moved only the adapter factors (codes bit-identical), the
baseline has the matched LoRA budget, and the results JSON/markdown hold every key.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "finetune.py"
ROWS = ("dense", "fourier_r0", "fourier_r2", "fourier_r2+recovery", "rtn4_g128", "rtn4_g128+lora")


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("finetune_benchmark", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _saved(model) -> str:
    import tempfile

    folder = tempfile.mkdtemp(prefix="llava_fa_counted_")
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    bench = _load_benchmark()
    work = tmp_path_factory.mktemp("task")
    keep: dict = {}
    size = bench.SIZES["ci"]
    assert size.rank == 2
    results = bench.run_task(size, work, keep=keep, log=lambda _: None)
    return bench, results, keep, work


def test_task_tokenizer_holds_the_answers_as_single_tokens():
    bench = _load_benchmark()
    from llava_fa.training.synthetic_task import answer_vocabulary

    tokenizer = bench.build_task_tokenizer(bench.task_texts())
    for answers in answer_vocabulary().values():
        for answer in answers:
            assert len(tokenizer.encode(answer, add_special_tokens=False)) == 1, answer
    assert tokenizer.convert_tokens_to_ids("<image>") == 3 and tokenizer.pad_token_id == 0


def test_rows_are_real_accuracies_and_bits(run):
    _, results, _, _ = run
    rows = results["rows"]
    assert set(rows) == set(ROWS)
    for key in ROWS:
        acc = rows[key]["accuracy"]
        assert isinstance(acc, float) and 0.0 <= acc <= 1.0, (key, acc)
        assert rows[key]["n"] == results["size"]["n_test"]
        assert set(rows[key]["by_type"]) <= {"color", "shape", "count", "position"}
        kl = rows[key]["kl_to_dense"]
        assert math.isfinite(kl) and kl >= -1e-6, (key, kl)
    assert 0.0 <= rows["dense"]["validation"]["accuracy"] <= 1.0
    # a record's accuracy is the mean over its question types, weighted by how many of each
    for key in ROWS:
        assert min(rows[key]["by_type"].values()) <= rows[key]["accuracy"] <= max(rows[key]["by_type"].values())
    assert 4.1 <= rows["fourier_r0"]["bits_per_weight"] < 4.75  # 3+5 bits per complex pair + scales, levels
    assert rows["fourier_r2"]["bits_per_weight"] > rows["fourier_r0"]["bits_per_weight"]
    assert rows["rtn4_g128"]["bits_per_weight"] == 4.25
    assert rows["rtn4_g128"]["kl_to_dense"] > 0 and rows["dense"]["kl_to_dense"] == 0.0
    for stage in ("stage1", "stage2"):
        assert results[stage]["steps"] >= 1 and math.isfinite(results[stage]["final_loss"])
    pre = results["vision_pretrain"]
    assert pre["epochs"] == results["size"]["vision_pretrain_epochs"] == 1 and math.isfinite(pre["final_loss"])
    for split in ("train_accuracy", "validation_accuracy"):
        assert set(pre[split]) == {"color", "shape", "count", "position"}
        assert all(0.0 <= a <= 1.0 for a in pre[split].values())


def test_bits_and_adapters_are_counted_over_the_same_modules(run):
    bench, results, keep, _ = run
    from llava_fa import compression_report

    comp = results["compared"]["fourier"]
    student = keep["compressed"][2]
    counted = bench.counted_modules(student)
    # the CI model reads the last vision layer (feature layer -1): every compressed module runs
    assert comp["counted_modules"] == comp["adapted_modules"] == comp["quantized_modules"] == len(counted)
    assert comp["excluded_modules"] == []
    assert bench.adapter_modules(keep["recovery"].model) == bench.adapter_modules(keep["baseline"].model) == counted
    report = compression_report(student)
    assert results["rows"]["fourier_r2"]["bits_per_weight"] == pytest.approx(bench.bits_per_weight_over(report, counted))
    # LoRA bits: the baseline's adapters in float16 spread over the same counted weights
    lora = results["rows"]["rtn4_g128+lora"]
    assert lora["bits_per_weight"] == pytest.approx(4.25 + 16 * comp["baseline_trainable_params"] / comp["counted_weights"])
    with pytest.raises(ValueError, match="not in the report"):
        bench.bits_per_weight_over(report, [*counted, "no.such.module"])


def test_counted_modules_leave_out_the_vision_layer_that_never_runs():
    bench = _load_benchmark()
    from dataclasses import replace

    from llava_fa import FourierApproxConfig, LlavaFAForConditionalGeneration

    size = replace(bench.SIZES["ci"], vision_layers=2, vision_feature_layer=-2)
    model, _ = bench.build_task_model(size, bench.build_task_tokenizer(bench.task_texts()))
    converted = LlavaFAForConditionalGeneration.from_pretrained(
        _saved(model), quantization_config=FourierApproxConfig(rank=1, max_iters=1))
    everything = bench.fourier_modules(converted)
    counted = bench.counted_modules(converted)
    left_out = sorted(set(everything) - set(counted))
    assert left_out and all(".encoder.layers.1." in n for n in left_out)  # the last of two vision layers
    assert len(left_out) == 6  # q, k, v, out_proj, fc1, fc2
    assert any(".encoder.layers.0." in n for n in counted)


def test_compressed_folder_holds_fourier_linear_modules(run):
    _, _, keep, _ = run
    from llava_fa import LlavaFAForConditionalGeneration
    from llava_fa.quantization import is_fourier_linear

    folder = keep["compressed_dir"]
    config = json.loads((folder / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "fourier_approx"
    assert config["quantization_config"]["rank"] == 2
    reloaded = LlavaFAForConditionalGeneration.from_pretrained(folder)
    parts = {name.split(".")[1] for name, m in reloaded.named_modules() if is_fourier_linear(m)}
    assert parts == {"vision_tower", "multi_modal_projector", "language_model"}


def test_recovery_moved_only_the_adapter_factors(run):
    _, results, keep, _ = run
    from llava_fa import LlavaFAForConditionalGeneration
    from llava_fa.training.trainer_support import check_frozen_unchanged, frozen_state

    before = LlavaFAForConditionalGeneration.from_pretrained(keep["compressed_dir"])
    recovery = keep["recovery"]
    peft_model = recovery.model
    assert recovery.steps == results["size"]["recovery_steps"]
    assert recovery.trained_parameters and all(".fourier_l" in n for n in recovery.trained_parameters)
    check_frozen_unchanged(frozen_state(before), peft_model)  # codes, scales, levels, tables: bit-identical
    base_state = before.state_dict()
    moved = 0
    for name, tensor in peft_model.get_base_model().state_dict().items():
        if ".fourier_l" in name:
            continue
        key = name.replace(".base_layer", "")
        assert torch.equal(tensor, base_state[key]), f"{key} changed during recovery"
    for name, param in peft_model.named_parameters():
        if ".fourier_l" in name:
            moved += int(param.requires_grad)
    assert moved == len(recovery.trained_parameters)
    # the adapters moved away from the factors they were copied from (the base layer keeps the originals)
    from llava_fa.adapters import FourierLoraLayer
    from llava_fa.adapters.layer import base_factors

    layers = [m for m in peft_model.modules() if isinstance(m, FourierLoraLayer)]
    assert layers
    assert any(not torch.equal(m.fourier_l1["default"], base_factors(m.base_layer)[0]) for m in layers)


def test_baseline_matches_the_budget_and_results_are_written(run, tmp_path):
    bench, results, keep, _ = run
    assert set(results["compared"]) == {"fourier"}  # the CI size runs the 4-bit setting only
    comp = results["compared"]["fourier"]
    assert comp["ours"] == "fourier_r2+recovery" and comp["baseline"] == "rtn4_g128+lora"
    ours, base = comp["ours_trainable_params"], comp["baseline_trainable_params"]
    assert ours > 0 and base > 0
    assert abs(base - ours) / ours < 0.5  # the closest whole LoRA rank
    assert results["rows"]["rtn4_g128+lora"]["lora_rank"] >= 1
    for key in ("ours_step_time_s", "baseline_step_time_s", "ours_peak_rss_mib", "baseline_peak_rss_mib"):
        assert comp[key] > 0, key
    table = bench.write_results(results, tmp_path / "finetune_ci", "python benchmarks/finetune.py --size ci")
    data = json.loads((tmp_path / "finetune_ci.json").read_text())
    assert set(data["rows"]) == set(ROWS)
    for key in ("size", "model", "stage1", "stage2", "compared", "command", "total_seconds", "cpu_count"):
        assert key in data, key
    md = (tmp_path / "finetune_ci.md").read_text()
    assert md == table and "| model | bits/weight | test accuracy | color / shape / count / position |" in md
    assert "QLoRA-style" in md and "Vision tower pretrained 1 epochs on the attributes of 48 images" in md
    assert md.count("\n| ") == 1 + len(ROWS)  # header + one line per row
    assert "KL to dense" in md

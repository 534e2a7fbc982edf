"""Training stages (llava_fa.training.stages): what each stage trains, its optimizer groups, its loss."""

from __future__ import annotations

import math
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from llava_fa.training.stages import (  # noqa: E402
    STAGE_DEFAULTS,
    distillation_loss,
    recover,
    train_alignment,
    train_instruction,
)

FAST = {"per_device_train_batch_size": 4, "global_batch_size": 4, "logging_steps": 1, "seed": 0}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from llava_fa.training.synthetic_task import build_shapes_vqa

    return build_shapes_vqa(tmp_path_factory.mktemp("shapes") / "data", n_train=8, n_val=0, n_test=0, seed=0,
                            image_size=28)["train"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """(dense folder, compressed folder) of the tiny model, seed 0; compressed once (rank 2, one round)."""
    from llava_fa import FourierApproxConfig, LlavaFAForConditionalGeneration
    from llava_fa.testing import save_tiny_llava_fa

    root = tmp_path_factory.mktemp("stages")
    dense = save_tiny_llava_fa(root / "dense", seed=0)
    model = LlavaFAForConditionalGeneration.from_pretrained(dense, quantization_config=FourierApproxConfig(
        rank=2, max_iters=1))
    model.save_pretrained(root / "compressed")
    return dense, root / "compressed"


def _compressed(folders):
    from llava_fa import LlavaFAForConditionalGeneration

    return LlavaFAForConditionalGeneration.from_pretrained(folders[1])


def _snapshot(model):
    return {n: t.detach().clone() for n, t in list(model.named_parameters()) + list(model.named_buffers())}


def test_alignment_trains_the_projector_only(shapes, tmp_path):
    from llava_fa.testing import build_tiny_llava_fa

    model, processor = build_tiny_llava_fa(seed=0)
    before = _snapshot(model)
    result = train_alignment(model, processor, shapes, output_dir=tmp_path, max_steps=2, save=True, **FAST)
    assert result.stage == "alignment" and result.steps == 2
    assert result.trained_parameters and all("multi_modal_projector" in n for n in result.trained_parameters)
    assert result.trainable_params == sum(p.numel() for n, p in model.named_parameters() if "multi_modal_projector" in n)
    assert math.isfinite(result.final_loss) and result.final_loss > 0
    assert result.step_time_s > 0 and result.peak_rss_mib > 0
    after = _snapshot(model)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed, "the projector did not move"
    assert changed <= {n for n in before if "multi_modal_projector" in n}, f"frozen tensors changed: {changed}"
    # LLaVA-1.5 stage-1 optimizer: lr 1e-3, no weight decay
    assert {g["lr"] for g in result.optimizer_groups} == {STAGE_DEFAULTS["alignment"]["learning_rate"]}
    assert all(g["weight_decay"] == 0.0 for g in result.optimizer_groups)
    from safetensors.torch import load_file

    saved = load_file(result.saved[0])
    assert set(saved) == {"multi_modal_projector.linear_1.weight", "multi_modal_projector.linear_1.bias",
                          "multi_modal_projector.linear_2.weight", "multi_modal_projector.linear_2.bias"}
    assert torch.equal(saved["multi_modal_projector.linear_2.weight"], model.model.multi_modal_projector.linear_2.weight)


def test_instruction_dense_lora_has_two_learning_rate_groups(shapes, tmp_path):
    from peft import PeftModel

    from llava_fa.testing import build_tiny_llava_fa

    model, processor = build_tiny_llava_fa(seed=0)
    vision_before = {n: p.detach().clone() for n, p in model.model.vision_tower.named_parameters()}
    result = train_instruction(model, processor, shapes, output_dir=tmp_path, max_steps=1, **FAST)
    assert isinstance(result.model, PeftModel)
    groups = {g["name"]: g for g in result.optimizer_groups}
    assert set(groups) == {"adapters", "projector"}
    assert groups["adapters"]["lr"] == 2e-4 and groups["projector"]["lr"] == 2e-5
    assert groups["adapters"]["params"] and all("lora_" in n and "language_model" in n
                                                for n in groups["adapters"]["params"])
    assert groups["projector"]["params"] and all("multi_modal_projector" in n and "modules_to_save" in n
                                                 for n in groups["projector"]["params"])
    assert set(result.trained_parameters) == set(groups["adapters"]["params"]) | set(groups["projector"]["params"])
    for n, p in model.model.vision_tower.named_parameters():
        assert torch.equal(p, vision_before[n]), n


def test_instruction_full_and_overrides(shapes, tmp_path):
    from llava_fa.testing import build_tiny_llava_fa

    model, processor = build_tiny_llava_fa(seed=0)
    result = train_instruction(model, processor, shapes, output_dir=tmp_path, adapters=False, max_steps=1,
                               learning_rate=1e-3, projector_learning_rate=5e-4, **FAST)
    assert result.model is model
    groups = {g["name"]: g for g in result.optimizer_groups}
    assert groups["adapters"]["lr"] == 1e-3 and groups["projector"]["lr"] == 5e-4
    assert any("lm_head" in n for n in groups["adapters"]["params"])
    assert not any("vision_tower" in n for n in result.trained_parameters)


def test_instruction_compressed_uses_fourier_adapters(shapes, folders, tmp_path):
    from llava_fa.adapters import FourierLoraLayer
    from llava_fa.testing import build_tiny_processor
    from llava_fa.training.trainer_support import frozen_state

    model = _compressed(folders)
    frozen = frozen_state(model)
    result = train_instruction(model, build_tiny_processor(), shapes, output_dir=tmp_path, max_steps=1, **FAST)
    assert any(isinstance(m, FourierLoraLayer) for m in result.model.modules())
    groups = {g["name"]: g for g in result.optimizer_groups}
    assert groups["adapters"]["params"] and all(".fourier_l" in n and "language_model" in n
                                                for n in groups["adapters"]["params"])
    # the (compressed) projector trains as a modules_to_save copy: its factors and biases, codes untouched
    assert groups["projector"]["params"] and all("modules_to_save" in n for n in groups["projector"]["params"])
    after = frozen_state(result.model)
    for name, value in frozen.items():
        key = name.replace("multi_modal_projector.", "multi_modal_projector.modules_to_save.default.")
        assert torch.equal(after.get(name, after.get(key)), value), name


def test_distillation_loss_hand_computed():
    # one sequence of 3 positions, vocabulary 2; only position 0 predicts a label (labels[1] != -100)
    student = torch.tensor([[[0.0, 0.0], [5.0, -5.0], [1.0, 2.0]]])
    teacher = torch.tensor([[[math.log(3.0), 0.0], [0.0, 0.0], [9.0, 9.0]]])
    labels = torch.tensor([[-100, 1, -100]])
    p = torch.tensor([0.75, 0.25])  # softmax(teacher[0, 0])
    expected = float((p * (p.log() - torch.tensor([0.5, 0.5]).log())).sum())
    assert distillation_loss(student, teacher, labels).item() == pytest.approx(expected, abs=1e-6)
    # temperature 2: softmax(logits / 2), times 4
    p2 = torch.softmax(teacher[0, 0] / 2, -1)
    expected2 = 4 * float((p2 * (p2.log() - torch.tensor([0.5, 0.5]).log())).sum())
    assert distillation_loss(student, teacher, labels, temperature=2.0).item() == pytest.approx(expected2, abs=1e-6)
    assert distillation_loss(teacher, teacher, labels).item() == pytest.approx(0.0, abs=1e-7)
    assert distillation_loss(student, teacher, torch.full((1, 3), -100)).item() == 0.0
    with pytest.raises(ValueError, match="same shape"):
        distillation_loss(student, teacher[:, :2], labels)
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss(student, teacher, labels, temperature=0.0)


def test_recover_with_teacher_minimises_the_kl(shapes, folders, tmp_path):
    from llava_fa.testing import build_tiny_processor
    from llava_fa.training import LlavaCollator

    processor = build_tiny_processor()
    from llava_fa.testing import build_tiny_llava_fa

    teacher, _ = build_tiny_llava_fa(seed=1)  # another model: a KL far from 0
    student = _compressed(folders).eval()
    records = [shapes[i] for i in range(4)]
    batch = LlavaCollator(processor)(records)
    with torch.no_grad():
        expected = distillation_loss(student(**batch).logits, teacher(**batch).logits, batch["labels"]).item()
        ce = student(**batch).loss.item()
    data = shapes.select(range(4))
    result = recover(student, processor, data, output_dir=tmp_path, teacher=teacher, max_steps=1,
                     learning_rate=1e-3, **FAST)
    first = [h["loss"] for h in result.log_history if "loss" in h][0]
    assert expected > 1e-3 and abs(expected - ce) > 1.0
    assert first == pytest.approx(expected, rel=1e-3)  # the KL to the teacher, not the cross-entropy
    assert result.trained_parameters and all(".fourier_l" in n for n in result.trained_parameters)


def test_recover_on_labels_and_bad_input(shapes, folders, tmp_path):
    from llava_fa.testing import build_tiny_llava_fa, build_tiny_processor

    processor = build_tiny_processor()
    student = _compressed(folders)
    result = recover(student, processor, shapes, output_dir=tmp_path, parts=("language_model",), max_steps=1, **FAST)
    assert all("language_model" in n for n in result.trained_parameters)
    dense, _ = build_tiny_llava_fa(seed=0)
    with pytest.raises(ValueError, match="no FourierLinear"):
        recover(dense, processor, shapes, output_dir=tmp_path, max_steps=1)
    with pytest.raises(ValueError, match="unknown training override"):
        train_alignment(dense, processor, shapes, output_dir=tmp_path, learning_rat=1e-3)
    with pytest.raises(TypeError, match="train_data"):
        train_alignment(dense, processor, 3, output_dir=tmp_path)
    with pytest.raises(ValueError, match="empty"):
        train_alignment(dense, processor, shapes.select([]), output_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown part"):
        train_instruction(dense, processor, shapes, parts=("decoder",))
    with pytest.raises(TypeError, match="nn.Module"):
        train_alignment("model", processor, shapes)


def _train_cli():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "train.py"
    spec = importlib.util.spec_from_file_location("train_cli", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_help_and_clear_errors(tmp_path, capsys):
    cli = _train_cli()
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "stage1" in out and "recover" in out and "examples:" in out
    with pytest.raises(SystemExit) as info:
        cli.main(["stage1", "--model", str(tmp_path), "--data", str(tmp_path / "missing.json"),
                  "--output-dir", str(tmp_path / "out")])
    assert "missing.json" in str(info.value.code) and "not a file" in str(info.value.code)
    with pytest.raises(SystemExit) as info:
        cli.main(["stage2", "--model", "m", "--data", "d", "--output-dir", "o", "--max-steps", "0"])
    assert info.value.code == 2
    assert "positive integer" in capsys.readouterr().err


def test_cli_stage1_end_to_end(shapes, tmp_path):
    import json as _json

    from llava_fa.testing import save_tiny_llava_fa

    cli = _train_cli()
    model_dir = save_tiny_llava_fa(tmp_path / "tiny", seed=0)
    records = [{"id": r["id"], "image": r["images"][0], "conversations": r["conversations"]} for r in shapes]
    (tmp_path / "train.json").write_text(_json.dumps(records))
    assert cli.main(["stage1", "--model", str(model_dir), "--data", str(tmp_path / "train.json"),
                     "--output-dir", str(tmp_path / "out"), "--max-steps", "1", "--batch-size", "4"]) == 0
    summary = _json.loads((tmp_path / "out" / "train_result.json").read_text())
    assert summary["stage"] == "alignment" and summary["steps"] == 1
    assert (tmp_path / "out" / "mm_projector.safetensors").is_file()
    assert (tmp_path / "out" / "model" / "config.json").is_file()


def test_cli_recover_compresses_on_load_and_saves_adapter(shapes, tmp_path):
    import json as _json

    from llava_fa import LlavaFAForConditionalGeneration
    from llava_fa.quantization import is_fourier_linear
    from llava_fa.testing import save_tiny_llava_fa

    cli = _train_cli()
    model_dir = save_tiny_llava_fa(tmp_path / "tiny", seed=0)
    records = [{"id": r["id"], "image": r["images"][0], "conversations": r["conversations"]} for r in shapes]
    (tmp_path / "train.json").write_text(_json.dumps(records))
    out = tmp_path / "rec"
    assert cli.main(["recover", "--model", str(model_dir), "--compress-rank", "2", "--teacher", str(model_dir),
                     "--data", str(tmp_path / "train.json"), "--output-dir", str(out), "--max-steps", "1",
                     "--batch-size", "4", "--parts", "language_model"]) == 0
    summary = _json.loads((out / "train_result.json").read_text())
    assert summary["stage"] == "recovery" and summary["steps"] == 1 and summary["trainable_params"] > 0
    assert (out / "adapter" / "adapter_config.json").is_file()
    merged = LlavaFAForConditionalGeneration.from_pretrained(out / "model")
    assert any(is_fourier_linear(m) for m in merged.modules())

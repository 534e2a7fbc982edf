"""transformers.Trainer on compressed models: bare and peft training, frozen codes, exact resume, checks."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from safetensors import safe_open

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fourier_train_child import (  # noqa: E402
    RepeatedBatch,
    load_compressed,
    shared_compressed_folder,
    tiny_inputs,
)
from transformers import Trainer  # noqa: E402

from llava_fa.adapters import get_fourier_peft_model  # noqa: E402
from llava_fa.training.trainer_support import (  # noqa: E402
    FourierTrainer,
    FrozenCodesCallback,
    check_frozen_unchanged,
    fourier_training_arguments,
    freeze_unused_vision_layers,
    frozen_state,
    local_device_map,
    train_factors_only,
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return shared_compressed_folder(tmp_path_factory)


def _args(out, steps, **kw):
    base = dict(max_steps=steps, per_device_train_batch_size=2, learning_rate=1e-2, logging_steps=1, report_to="none",
                use_cpu=True, seed=0, disable_tqdm=True, save_strategy="no", dataloader_num_workers=0)
    base.update(kw)
    return fourier_training_arguments(str(out), **base)


def _losses(trainer):
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def _dataset(model):
    return RepeatedBatch(tiny_inputs(model.config))


def _snapshot(model, predicate):
    return {n: p.detach().clone() for n, p in model.named_parameters() if predicate(n, p)}


def test_plain_trainer_trains_bare_model_factors(folder, tmp_path):
    model = load_compressed(folder)
    n_trainable = train_factors_only(model, parts=None)
    assert n_trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert all(n.endswith(("lowrank_l1", "lowrank_l2", "lora_l1", "lora_l2"))
               for n, p in model.named_parameters() if p.requires_grad)
    frozen_before = _snapshot(model, lambda n, p: not p.requires_grad)
    factors_before = _snapshot(model, lambda n, p: p.requires_grad)
    callback = FrozenCodesCallback()
    trainer = Trainer(model=model, args=_args(tmp_path, 4, gradient_checkpointing=True), train_dataset=_dataset(model),
                      callbacks=[callback])
    trainer.train()
    losses = _losses(trainer)
    assert len(losses) == 4 and losses[-1] < losses[0] - 0.05
    assert callback.before  # the callback saw the frozen tensors (and checked them at the end)
    check_frozen_unchanged(callback.before, model)
    for name, value in frozen_before.items():  # biases, norms, embeddings untouched
        assert torch.equal(dict(model.named_parameters())[name], value), name
    moved = [n for n, v in factors_before.items() if not torch.equal(dict(model.named_parameters())[n], v)]
    assert len(moved) == len(factors_before)


def test_plain_trainer_trains_peft_model(folder, tmp_path):
    model = load_compressed(folder)
    before = frozen_state(model)
    base_params = [(p, p.detach().clone()) for p in model.parameters()]  # by identity: peft rewraps modules
    peft_model = get_fourier_peft_model(model)
    adapters = _snapshot(peft_model, lambda n, p: p.requires_grad)
    trainer = Trainer(model=peft_model, args=_args(tmp_path, 4, activation_checkpointing=True),
                      train_dataset=_dataset(model))
    trainer.train()
    losses = _losses(trainer)
    assert len(losses) == 4 and losses[-1] < losses[0] - 0.05
    check_frozen_unchanged(before, peft_model)
    assert all(torch.equal(p, value) for p, value in base_params)  # base factors, biases, norms untouched
    after = dict(peft_model.named_parameters())
    assert all(not torch.equal(after[n], v) for n, v in adapters.items())


def test_trainer_bf16_mixed_precision_on_cpu(folder, tmp_path):
    """`bf16=True` (what users set on GPUs) runs the forward under CPU autocast here: factors stay float32 and
    train, codes stay bit-identical."""
    model = load_compressed(folder)
    before = frozen_state(model)
    peft_model = get_fourier_peft_model(model)
    adapters = _snapshot(peft_model, lambda n, p: p.requires_grad)
    trainer = Trainer(model=peft_model, args=_args(tmp_path, 3, bf16=True), train_dataset=_dataset(model))
    assert trainer.accelerator.mixed_precision == "bf16"
    trainer.train()
    losses = _losses(trainer)
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    check_frozen_unchanged(before, peft_model)
    after = dict(peft_model.named_parameters())
    assert all(after[n].dtype == torch.float32 and not torch.equal(after[n], v) for n, v in adapters.items())


def test_frozen_check_detects_a_changed_code(folder):
    model = load_compressed(folder)
    before = frozen_state(model)
    assert any(k.endswith(".codes") for k in before) and any(k.endswith(".scales") for k in before)
    module = model.model.language_model.layers[0].mlp.up_proj
    module.codes[0] ^= 1
    with pytest.raises(AssertionError, match="up_proj.codes"):
        check_frozen_unchanged(before, model)


def _resume_pair(folder, tmp_path, make_model, trainer_cls):
    """Train 4 steps in one go, then 2 + resume 2 from checkpoint-2; returns both models and loss lists."""
    full_model = make_model()
    full = trainer_cls(model=full_model, args=_args(tmp_path / "full", 4, save_strategy="steps", save_steps=2),
                       train_dataset=_dataset(load_compressed(folder)))
    full.train()
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(tmp_path / "full" / "checkpoint-2", resumed_dir / "checkpoint-2")
    resumed_model = make_model()
    resumed = trainer_cls(model=resumed_model, args=_args(resumed_dir, 4, save_strategy="steps", save_steps=2),
                          train_dataset=_dataset(load_compressed(folder)))
    resumed.train(resume_from_checkpoint=str(resumed_dir / "checkpoint-2"))
    return full_model, resumed_model, _losses(full), _losses(resumed)


def test_resume_is_exact_for_bare_model(folder, tmp_path):
    def make():
        model = load_compressed(folder)
        train_factors_only(model, parts=None)
        return model

    full, resumed, full_losses, resumed_losses = _resume_pair(folder, tmp_path, make, FourierTrainer)
    checkpoint = tmp_path / "full" / "checkpoint-2" / "model.safetensors"
    with safe_open(str(checkpoint), "pt") as handle:
        factor_keys = [k for k in handle.keys() if k.endswith(("lowrank_l1", "lowrank_l2", "lora_l1", "lora_l2"))]
        assert factor_keys and all(handle.get_slice(k).get_dtype() == "F32" for k in factor_keys)
    assert resumed_losses[-2:] == full_losses[2:]
    trained = {n: p for n, p in full.named_parameters() if p.requires_grad}
    again = dict(resumed.named_parameters())
    assert trained and all(torch.equal(p, again[n]) for n, p in trained.items())
    initial = dict(load_compressed(folder).named_parameters())
    assert not all(torch.equal(p, initial[n]) for n, p in trained.items())


def test_resume_is_exact_for_peft_model(folder, tmp_path):
    full, resumed, full_losses, resumed_losses = _resume_pair(
        folder, tmp_path, lambda: get_fourier_peft_model(load_compressed(folder)), Trainer)
    assert resumed_losses[-2:] == full_losses[2:]
    trained = {n: p for n, p in full.named_parameters() if p.requires_grad}
    again = dict(resumed.named_parameters())
    assert trained and all(torch.equal(p, again[n]) for n, p in trained.items())


def test_resume_rejects_a_mismatched_checkpoint(folder, tmp_path):
    from safetensors.torch import load_file, save_file

    from llava_fa.training.trainer_support import load_full_checkpoint

    model = load_compressed(folder)
    state = load_file(str(folder / "model.safetensors"))
    state.pop(next(k for k in state if k.endswith("codes")))
    (tmp_path / "ckpt").mkdir()
    save_file(state, str(tmp_path / "ckpt" / "model.safetensors"))
    with pytest.raises(ValueError, match="missing key"):
        load_full_checkpoint(model, str(tmp_path / "ckpt"))


def test_arguments_and_column_check(folder, tmp_path):
    from datasets import Dataset

    args = fourier_training_arguments(str(tmp_path), use_cpu=True, report_to="none")
    assert args.remove_unused_columns is False and args.ddp_broadcast_buffers is False
    model = load_compressed(folder)
    train_factors_only(model)
    data = Dataset.from_dict({"conversations": [["hi"]], "image": ["a.png"]})
    bad = fourier_training_arguments(str(tmp_path), use_cpu=True, report_to="none", remove_unused_columns=True)
    with pytest.raises(ValueError, match=r"remove_unused_columns=False.*|conversations"):
        FourierTrainer(model=model, args=bad, train_dataset=data, data_collator=lambda rows: rows)
    plain = _args(tmp_path, 1)
    plain.ddp_broadcast_buffers = None
    FourierTrainer(model=model, args=plain, train_dataset=data, data_collator=lambda rows: rows)
    assert plain.ddp_broadcast_buffers is False
    assert local_device_map() == {"": "cpu"} or torch.cuda.is_available()


def test_unused_vision_layers_and_bad_parts(folder):
    model = load_compressed(folder)
    frozen = freeze_unused_vision_layers(model)
    assert frozen and all("vision_tower.encoder.layers.1." in n or "post_layernorm" in n for n in frozen)
    assert any("post_layernorm" in n for n in frozen)
    assert not any(p.requires_grad for n, p in model.named_parameters() if "vision_tower.encoder.layers.1." in n)
    assert any(p.requires_grad for n, p in model.named_parameters() if "vision_tower.encoder.layers.0." in n)
    with pytest.raises(ValueError, match="nothing would train|selects no"):
        train_factors_only(model, parts=("no_such_part",))
    with pytest.raises(TypeError, match="parts"):
        train_factors_only(model, parts="language_model")

"""Fine-tuning benchmark on the CPU: the Shapes-VQA task, end to end.

    python benchmarks/finetune.py --threads 1      # the full run, writes results/finetune_cpu.{json,md}
    python benchmarks/finetune.py --size ci        # toy size (what tests/test_task_pipeline.py runs)

Steps (every number in the output is measured in this run):

1. Generate Shapes-VQA (`llava_fa.training.synthetic_task.build_shapes_vqa`, seeded), build a
   byte-level BPE tokenizer on the task's texts (every answer word is one token; the special tokens
   of the tiny preset keep their ids) and a small LLaVA-FA from `LlavaFAConfig.from_preset("tiny",
   ...)` with the sizes of `SIZES[size]` (images normalised with white at 0, see `task_image_processor`).
2. Vision pretraining (`pretrain_vision_tower`, when `vision_pretrain_epochs` > 0): the vision tower
   learns the attributes of generated images (`vision_pretrain_images` of them, another seed than the
   task's splits) through one linear head per attribute on the mean of the feature-layer tokens, as
   LLaVA starts from a pretrained CLIP. A tower trained only through the language model's loss never
   became shape-selective (the dense model stayed at chance on shape questions).
3. Stage 1 (`train_alignment`, projector only) and stage 2 (`train_instruction(adapters=False)`: the
   parts of `stage2_parts` + projector, two learning-rate groups; the vision tower stays frozen unless
   listed). Validation and test accuracy (greedy decoding, `exact_match_accuracy`, overall and per
   question type) of the dense model.
4. For each of `BIT_SETTINGS` (ours a+p bits per complex coefficient vs RTN b-bit with group g at
   about the same bits per weight): save the dense model, load it compressed on load with
   `FourierApproxConfig` (rank 0 and rank R; every Linear but `lm_head` and the embeddings), test
   accuracy.
5. `recover` the rank-R model: the Fourier-factor adapters of every compressed module that runs,
   distilled from the dense model (KL on the answer tokens), for a fixed number of steps.
6. Baseline at the same bits and trainable parameters: the dense weights of the same modules
   fake-quantized with RTN (float16 scale + zero per group), peft LoRA on the same modules as ours with
   the rank whose parameter count is closest to ours (QLoRA-style; alpha = r), trained with the same
   loss, steps and batch. Each method's learning rate is picked from its grid (`recovery_lrs`, `baseline_lrs`) by the
   answer-token KL on the validation split; the table reports test accuracy and test KL.

Bits per weight are counted over the compressed modules that run (`counted_modules`: the vision layers
after `vision_feature_layer` are compressed by both methods but never run, so neither counts them):
codes, scales, levels, channel scale and factors as saved for ours; RTN bits + 32 / group plus the
LoRA matrices in float16 for the baseline.

Step time: mean wall time of an optimizer step (first step excluded). Peak memory: the process's
peak RSS (VmHWM, reset at the start of each training run through /proc/self/clear_refs), so it
includes the dense teacher, the data and Python itself; the baseline stores its fake-quantized
weights in float32 (a real 4-bit kernel would store less), ours stores codes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import rtn  # noqa: E402
from results_io import RESULTS, write_atomic  # noqa: E402

#: Bits per weight of RTN 4-bit with group 128 and a float16 scale and zero per group.
RTN_BITS, RTN_GROUP = 4, 128
RTN_BITS_PER_WEIGHT = RTN_BITS + 32 / RTN_GROUP


@dataclass(frozen=True)
class TaskSize:
    """Sizes of one benchmark run (data, model, training budgets)."""

    n_train: int
    n_val: int
    n_test: int
    image_size: int
    patch_size: int
    vision_hidden: int
    vision_layers: int
    vision_feature_layer: int
    text_hidden: int
    text_layers: int
    stage1_steps: int
    stage2_epochs: float
    stage2_lr: float
    batch_size: int
    rank: int
    recovery_steps: int
    recovery_lrs: tuple[float, ...]
    eval_batch: int = 64
    compress_iters: int = 5
    ci_bits_only: bool = False
    seed: int = 0
    #: epochs of supervised vision-tower pretraining (0: none), see `pretrain_vision_tower`
    vision_pretrain_epochs: int = 0
    vision_pretrain_lr: float = 1e-3
    #: images generated for that pretraining (another seed than the task's splits); 0: the training split's
    vision_pretrain_images: int = 0
    #: learning rates tried for the baseline's LoRA (empty: `recovery_lrs`)
    baseline_lrs: tuple[float, ...] = ()
    #: parts fully trained in stage 2 (with the projector); the vision tower stays frozen unless listed
    stage2_parts: tuple[str, ...] = ("language_model", "vision_tower")


SIZES: dict[str, TaskSize] = {
    "full": TaskSize(n_train=2000, n_val=200, n_test=400, image_size=64, patch_size=16, vision_hidden=64,
                     vision_layers=2, vision_feature_layer=-2, text_hidden=128, text_layers=2, stage1_steps=30,
                     stage2_epochs=10.0, stage2_lr=1e-3, batch_size=32, rank=4, recovery_steps=100,
                     recovery_lrs=(3e-5, 1e-4, 3e-4, 1e-3), baseline_lrs=(3e-4, 1e-3, 3e-3, 1e-2), vision_pretrain_epochs=10,
                     vision_pretrain_images=8000,
                     stage2_parts=("language_model",)),
    "ci": TaskSize(n_train=48, n_val=16, n_test=16, image_size=32, patch_size=16, vision_hidden=32,
                   vision_layers=1, vision_feature_layer=-1, text_hidden=64, text_layers=1, stage1_steps=2,
                   stage2_epochs=1.0, stage2_lr=1e-3, batch_size=16, rank=2, recovery_steps=2, recovery_lrs=(1e-3,),
                   eval_batch=16, compress_iters=1, ci_bits_only=True, vision_pretrain_epochs=1),
}

#: The bit settings compared: ours (PolarQuant bits per complex coefficient) vs RTN at about the same bits.
BIT_SETTINGS: list[dict[str, Any]] = [
    {"tag": "fourier", "amplitude_bits": 3, "phase_bits": 5, "rtn_bits": 4, "rtn_group": 128, "with_rank0": True},
    {"tag": "fourier22", "amplitude_bits": 2, "phase_bits": 2, "rtn_bits": 2, "rtn_group": 128, "with_rank0": True},
]


# ------------------------------------------------------------------------------------------- model
def task_texts() -> list[str]:
    """The texts of Shapes-VQA prompts and answers (tokenizer corpus); answers repeated so each is one token."""
    from llava_fa.modeling.processing_llava_fa import DEFAULT_SYSTEM_PROMPT
    from llava_fa.training.synthetic_task import ANSWER_HINT, QUESTIONS, answer_vocabulary

    answers = [a for values in answer_vocabulary().values() for a in values]
    return [*QUESTIONS.values(), ANSWER_HINT, DEFAULT_SYSTEM_PROMPT, "system", "user", "assistant", *answers * 10]


def build_task_tokenizer(texts: list[str], vocab_size: int = 384) -> Any:
    """A deterministic byte-level BPE `Qwen2Tokenizer` trained on `texts` (x50).

    Special tokens and ids as the tiny preset's (`<|endoftext|>`=0 pad, `<|im_start|>`=1,
    `<|im_end|>`=2 eos, `<image>`=3), so `LlavaFAConfig.from_preset("tiny")` ids apply.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    from llava_fa.testing.tiny import TINY_SPECIAL_TOKENS

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(PRETOKENIZE_REGEX, behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=TINY_SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(list(texts) * 50, trainer=trainer)
    state = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    tokenizer = Qwen2Tokenizer(vocab=state["vocab"], merges=merges, unk_token=None, eos_token="<|im_end|>",
                               pad_token="<|endoftext|>", extra_special_tokens=["<|im_start|>", "<image>"])
    tokenizer.padding_side = "left"
    ids = tokenizer.convert_tokens_to_ids(TINY_SPECIAL_TOKENS)
    if ids != list(range(len(TINY_SPECIAL_TOKENS))) or len(tokenizer) > vocab_size:
        raise RuntimeError(f"task tokenizer special ids {ids} / size {len(tokenizer)} do not match the tiny layout.")
    return tokenizer


def task_image_processor(size: TaskSize) -> Any:
    """LLaVA's preprocessing (pad to square, resize, crop) with white mapped to 0: mean 1, std 0.5 per channel.

    Shapes-VQA draws a few small shapes on a white background. With CLIP's statistics the constant
    white dominates every patch embedding of a vision tower trained from scratch (the image features
    of two different images differed by ~0.1 % of their scale and the model stayed at chance); with
    white at 0 a patch embeds only what is drawn in it.
    """
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

    return LlavaImageProcessorPil(size={"shortest_edge": size.image_size},
                                  crop_size={"height": size.image_size, "width": size.image_size},
                                  do_pad=True, image_mean=[1.0, 1.0, 1.0], image_std=[0.5, 0.5, 0.5])


def build_task_model(size: TaskSize, tokenizer: Any) -> tuple[nn.Module, Any]:
    """A randomly initialised (seeded) LLaVA-FA of `size` and its processor for `tokenizer`."""
    from transformers import GenerationConfig

    from llava_fa import LlavaFAConfig, LlavaFAForConditionalGeneration, LlavaFAProcessor

    config = LlavaFAConfig.from_preset(
        "tiny",
        vision_config={"hidden_size": size.vision_hidden, "intermediate_size": 2 * size.vision_hidden,
                       "num_hidden_layers": size.vision_layers, "num_attention_heads": 4,
                       "image_size": size.image_size, "patch_size": size.patch_size},
        text_config={"hidden_size": size.text_hidden, "intermediate_size": 2 * size.text_hidden,
                     "num_hidden_layers": size.text_layers, "num_attention_heads": 4, "num_key_value_heads": 2},
        vision_feature_layer=size.vision_feature_layer,
    )
    processor = LlavaFAProcessor.from_model_config(config, tokenizer, image_processor=task_image_processor(size))
    torch.manual_seed(size.seed)
    model = LlavaFAForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        eos_token_id=[tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.pad_token_id],
        pad_token_id=tokenizer.pad_token_id, bos_token_id=None, do_sample=False)
    return model, processor


def _pixel_values(processor: Any, split: Any) -> torch.Tensor:
    """(N, 3, H, W) float32 pixel values of the first image of each record of `split` (the model's preprocessing)."""
    from PIL import Image

    images = []
    for paths in split["images"]:
        with Image.open(paths[0]) as image:
            images.append(image.convert("RGB"))
    return processor.image_processor(images, return_tensors="pt")["pixel_values"].float()


def pretrain_vision_tower(model: nn.Module, processor: Any, train: Any, train_attributes: dict[str, list[str]],
                          val: Any, val_attributes: dict[str, list[str]], *, epochs: int, learning_rate: float,
                          batch_size: int, seed: int) -> dict[str, Any]:
    """Supervised pretraining of the vision tower on what the training images show (LLaVA starts from a
    pretrained CLIP; here a tower from scratch learns the images' attributes first).

    One linear head per attribute (``train_attributes``: attribute -> label per record, e.g.
    `image_attributes(...)`) reads the mean over the patch tokens of the hidden state the projector
    sees (``config.vision_feature_layer``, CLS dropped); cross-entropy summed over the attributes,
    AdamW (`learning_rate`, no weight decay), `epochs` passes in `batch_size` batches (seeded). Trains
    the vision tower's parameters in place (the heads are discarded) and leaves it in eval mode.

    Returns ``{"epochs", "seconds", "final_loss", "train_accuracy", "validation_accuracy"}`` (accuracy
    per attribute of the heads, measured after training).
    """
    layer = model.config.vision_feature_layer
    if not isinstance(layer, int):
        raise ValueError(f"pretrain_vision_tower needs one vision_feature_layer, got {layer!r}.")
    tower = model.model.vision_tower
    classes = {k: sorted(set(v) | set(val_attributes[k])) for k, v in train_attributes.items()}

    def labels(attributes: dict[str, list[str]]) -> dict[str, torch.Tensor]:
        return {k: torch.tensor([classes[k].index(a) for a in attributes[k]]) for k in classes}

    def features(pixels: torch.Tensor) -> torch.Tensor:
        return tower(pixel_values=pixels, output_hidden_states=True).hidden_states[layer][:, 1:].mean(1)

    x, y = _pixel_values(processor, train), labels(train_attributes)
    x_val, y_val = _pixel_values(processor, val), labels(val_attributes)
    torch.manual_seed(seed)
    heads = nn.ModuleDict({k: nn.Linear(model.config.vision_config.hidden_size, len(c)) for k, c in classes.items()})
    for p in tower.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW([*tower.parameters(), *heads.parameters()], lr=learning_rate, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    start, loss = time.perf_counter(), torch.tensor(float("nan"))
    tower.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x), batch_size):
            idx = order[i:i + batch_size]
            h = features(x[idx])
            loss = sum(nn.functional.cross_entropy(heads[k](h), y[k][idx]) for k in heads)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    seconds = time.perf_counter() - start
    tower.eval()
    for p in tower.parameters():
        p.requires_grad_(False)

    @torch.no_grad()
    def accuracy(pixels: torch.Tensor, target: dict[str, torch.Tensor]) -> dict[str, float]:
        h = torch.cat([features(pixels[i:i + 256]) for i in range(0, len(pixels), 256)])
        return {k: float((heads[k](h).argmax(-1) == target[k]).float().mean()) for k in heads}

    return {"epochs": epochs, "seconds": seconds, "final_loss": float(loss.detach()), "train_accuracy": accuracy(x, y),
            "validation_accuracy": accuracy(x_val, y_val)}


# ------------------------------------------------------------------------------------------- baseline
def fourier_modules(model: nn.Module) -> dict[str, nn.Module]:
    """``{name: FourierLinear}`` of a compressed model (peft wrappers stripped from the names)."""
    return {name.replace(".base_layer", ""): m for name, m in model.named_modules()
            if getattr(m, "is_fourier_linear", False) is True}


def rtn_fake_quantize_(model: nn.Module, names: list[str], bits: int = RTN_BITS, group: int = RTN_GROUP) -> float:
    """Replace the weights of the `nn.Linear` modules `names` by their RTN reconstruction (`bits`, `group`
    consecutive weights per float16 scale + zero), in place.

    Returns the bits per weight of those modules as stored by a real RTN kernel (bits + 32 / group).
    """
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name in names:
            linear = modules[name]
            if not isinstance(linear, nn.Linear):
                raise TypeError(f"{name} is a {type(linear).__name__}, expected nn.Linear.")
            w_hat, _ = rtn(linear.weight.detach(), bits=bits, group=group)
            linear.weight.copy_(w_hat.to(linear.weight.dtype))
    return bits + 32 / group


def adapter_modules(peft_model: nn.Module) -> list[str]:
    """Names (in the base model, as `named_modules` gives them) of the modules a `PeftModel` put adapters on.

    Read from the modules themselves: peft shortens long `target_modules` lists to name suffixes."""
    from peft.tuners.lora import LoraLayer

    return sorted(name for name, m in peft_model.get_base_model().named_modules() if isinstance(m, LoraLayer))


def counted_modules(model: nn.Module) -> list[str]:
    """Names of the compressed modules that run: every FourierLinear but those of the vision layers after
    ``vision_feature_layer`` (and ``post_layernorm``), whose output LLaVA never reads.

    Bits per weight, adapters and LoRA of both methods are counted over these same modules.
    """
    from llava_fa.adapters.registration import under_any, unused_vision_modules

    unused = unused_vision_modules(model)
    return sorted(name for name in fourier_modules(model) if not under_any(name, unused))


def bits_per_weight_over(report: Any, names: list[str]) -> float:
    """Weighted mean bits per weight (codes, scales, levels, channel scale, factors as saved) of `report`'s
    modules `names` (a `compression_report`)."""
    chosen = [m for m in report.modules if m.name in set(names)]
    if len(chosen) != len(set(names)):
        raise ValueError(f"{len(set(names)) - len(chosen)} of the named modules are not in the report.")
    weights = sum(m.shape[0] * m.shape[1] for m in chosen)
    return sum(m.bits_per_weight * m.shape[0] * m.shape[1] for m in chosen) / weights


def matching_lora_rank(model: nn.Module, names: list[str], budget: int) -> int:
    """The LoRA rank r >= 1 whose parameter count ``r * sum(in + out)`` over `names` is closest to `budget`."""
    modules = dict(model.named_modules())
    per_rank = sum(modules[n].in_features + modules[n].out_features for n in names)
    return max(1, round(budget / per_rank))


# ------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def answer_kl(model: nn.Module, teacher: nn.Module, processor: Any, split: Any, batch_size: int) -> float:
    """Mean KL(teacher || model) of the next-token distributions at the answer tokens of `split` (nats/token)."""
    from llava_fa.training import LlavaCollator
    from llava_fa.training.stages import distillation_loss

    collate = LlavaCollator(processor)
    total, count = 0.0, 0
    for start in range(0, len(split), batch_size):
        batch = collate([split[i] for i in range(start, min(start + batch_size, len(split)))])
        labels = batch.pop("labels")
        n = int((labels[:, 1:] != -100).sum())
        total += float(distillation_loss(model(**batch).logits, teacher(**batch).logits, labels)) * n
        count += n
    return total / max(count, 1)


def evaluate(model: nn.Module, processor: Any, split: Any, batch_size: int,
             teacher: nn.Module | None = None) -> dict[str, Any]:
    """Exact-match accuracy of greedy answers on `split` (overall and per question type), its time, and the
    answer-token KL to `teacher` when given."""
    from llava_fa.training.stages import generate_answers
    from llava_fa.training.synthetic_task import exact_match_accuracy

    start = time.perf_counter()
    predictions = generate_answers(model, processor, split, batch_size=batch_size, max_new_tokens=3)
    answers, types = list(split["answer"]), list(split["question_type"])
    by_type = {}
    for qtype in sorted(set(types)):
        idx = [i for i, t in enumerate(types) if t == qtype]
        by_type[qtype] = exact_match_accuracy([predictions[i] for i in idx], [answers[i] for i in idx])
    out = {"accuracy": exact_match_accuracy(predictions, answers), "by_type": by_type, "n": len(answers),
           "seconds": time.perf_counter() - start, "examples": list(zip(predictions[:5], answers[:5]))}
    if teacher is not None:
        out["kl_to_dense"] = answer_kl(model, teacher, processor, split, batch_size)
    return out


# ------------------------------------------------------------------------------------------- the run
def run_task(size: TaskSize, work_dir: str | os.PathLike, *, log: Callable[[str], None] = print,
             keep: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the whole task pipeline at `size` under `work_dir`; returns the results dict (JSON-serialisable).

    `keep`, if given, receives the live objects (models, processor, datasets, TrainResults) for tests.
    """
    from llava_fa.training.stages import train_alignment, train_instruction
    from llava_fa.training.synthetic_task import build_shapes_vqa, image_attributes

    work = Path(work_dir)
    t_start = time.perf_counter()
    results: dict[str, Any] = {"size": asdict(size), "torch_threads": torch.get_num_threads(),
                               "torch": torch.__version__}
    keep = {} if keep is None else keep

    data = build_shapes_vqa(work / "shapes_vqa", n_train=size.n_train, n_val=size.n_val, n_test=size.n_test,
                            seed=size.seed, image_size=max(size.image_size, 16))
    train, val, test = data["train"], data["validation"], data["test"]
    tokenizer = build_task_tokenizer(task_texts())
    model, processor = build_task_model(size, tokenizer)
    results["model"] = {"parameters": sum(p.numel() for p in model.parameters()),
                        "vision": f"{size.vision_layers}x{size.vision_hidden}",
                        "text": f"{size.text_layers}x{size.text_hidden}",
                        "vision_feature_layer": size.vision_feature_layer,
                        "image_tokens": model.config.num_image_tokens, "vocab": len(tokenizer)}
    keep.update(data=data, processor=processor)
    log(f"data {len(train)}/{len(val)}/{len(test)}, model {results['model']}")

    common = {"per_device_train_batch_size": size.batch_size, "global_batch_size": size.batch_size,
              "seed": size.seed, "logging_steps": 10}
    if size.vision_pretrain_epochs:
        root, images = work / "shapes_vqa", train
        if size.vision_pretrain_images:
            root = work / "pretrain_images"
            images = build_shapes_vqa(root, n_train=size.vision_pretrain_images, n_val=0, n_test=0, seed=size.seed + 1,
                                      image_size=max(size.image_size, 16))["train"]
        results["vision_pretrain"] = pretrain_vision_tower(
            model, processor, images, image_attributes(root, "train"), val,
            image_attributes(work / "shapes_vqa", "validation"), epochs=size.vision_pretrain_epochs,
            learning_rate=size.vision_pretrain_lr, batch_size=size.batch_size, seed=size.seed)
        results["vision_pretrain"]["images"] = len(images)
        log(f"vision pretraining: {results['vision_pretrain']}")
    stage1 = train_alignment(model, processor, train, output_dir=work / "stage1", max_steps=size.stage1_steps,
                             **common)
    log(f"stage 1: {stage1.summary()}")
    stage2 = train_instruction(model, processor, train, output_dir=work / "stage2", adapters=False,
                               parts=size.stage2_parts, learning_rate=size.stage2_lr,
                               projector_learning_rate=size.stage2_lr, num_train_epochs=size.stage2_epochs, **common)
    log(f"stage 2: {stage2.summary()}")
    results["stage1"], results["stage2"] = stage1.summary(), stage2.summary()
    keep.update(stage1=stage1, stage2=stage2)

    dense = model.eval()
    rows: dict[str, dict[str, Any]] = {}
    rows["dense"] = {"validation": evaluate(dense, processor, val, size.eval_batch),
                     **evaluate(dense, processor, test, size.eval_batch), "bits_per_weight": 32.0}
    log(f"dense: val {rows['dense']['validation']['accuracy']:.4f} test {rows['dense']['accuracy']:.4f}")
    dense_dir = work / "dense"
    dense.save_pretrained(dense_dir)
    processor.save_pretrained(dense_dir)
    keep.update(dense=dense, dense_dir=dense_dir)

    rows["dense"]["kl_to_dense"] = 0.0
    results["rows"], results["compared"] = rows, {}
    for setting in BIT_SETTINGS[: 1 if size.ci_bits_only else None]:
        compare_at_bits(setting, size, dense, dense_dir, processor, train, val, test, work, rows, results["compared"],
                        keep, log)
    results["total_seconds"] = time.perf_counter() - t_start
    return results


def tuned_recovery(build: Callable[[], nn.Module], size: TaskSize, dense: nn.Module, processor: Any, train: Any,
                   val: Any, out: Path, name: str, log: Callable[[str], None],
                   lrs: tuple[float, ...] | None = None) -> tuple[Any, dict[str, float]]:
    """`recover` a fresh `build()` model with each learning rate of `lrs` (default `size.recovery_lrs`); keep the
    run with the lowest answer-token KL to the dense model on the VALIDATION split. Returns (best TrainResult,
    lr -> val KL)."""
    from llava_fa.training.stages import recover

    common = {"per_device_train_batch_size": size.batch_size, "global_batch_size": size.batch_size,
              "seed": size.seed, "logging_steps": 10}
    best, sweep = None, {}
    for lr in lrs or size.recovery_lrs:
        result = recover(build(), processor, train, output_dir=out / f"{name}_lr{lr:g}", teacher=dense,
                         max_steps=size.recovery_steps, learning_rate=lr, **common)
        sweep[f"{lr:g}"] = answer_kl(result.model, dense, processor, val, size.eval_batch)
        log(f"{name} lr {lr:g}: val KL {sweep[f'{lr:g}']:.3e}, {result.summary()}")
        if best is None or sweep[f"{lr:g}"] < sweep[f"{best[1]:g}"]:
            best = (result, lr)
    assert best is not None
    return best[0], sweep


def compare_at_bits(setting: dict[str, Any], size: TaskSize, dense: nn.Module, dense_dir: Path, processor: Any,
                    train: Any, val: Any, test: Any, work: Path, rows: dict[str, Any], compared: dict[str, Any],
                    keep: dict[str, Any], log: Callable[[str], None]) -> None:
    """Ours (compressed on load, then recovered) vs RTN + LoRA at one bit setting; fills `rows` and `compared`.

    Each method's recovery learning rate is picked from `size.recovery_lrs` on the validation KL."""
    from peft import LoraConfig, get_peft_model

    from llava_fa import FourierApproxConfig, LlavaFAForConditionalGeneration, compression_report

    tag, bits = setting["tag"], {"amplitude_bits": setting["amplitude_bits"], "phase_bits": setting["phase_bits"]}
    ranks = (0, size.rank) if setting["with_rank0"] else (size.rank,)
    compressed, counted = {}, None
    for rank in ranks:
        t0 = time.perf_counter()
        cmodel = LlavaFAForConditionalGeneration.from_pretrained(dense_dir, quantization_config=FourierApproxConfig(
            rank=rank, max_iters=size.compress_iters, **bits)).eval()
        seconds = time.perf_counter() - t0
        report = compression_report(cmodel)
        counted = counted_modules(cmodel) if counted is None else counted
        key = f"{tag}_r{rank}"
        rows[key] = {**evaluate(cmodel, processor, test, size.eval_batch, dense),
                     "bits_per_weight": bits_per_weight_over(report, counted),
                     "bits_per_weight_all_compressed": report.bits_per_weight, "compress_seconds": seconds,
                     "compressed_modules": len(report.modules), "mean_weight_error": report.mean_error, **bits}
        compressed[rank] = cmodel
        log(f"{key}: test {rows[key]['accuracy']:.4f} bpw {rows[key]['bits_per_weight']:.3f} over {len(counted)} "
            f"modules ({report.bits_per_weight:.3f} over all {len(report.modules)})")
    assert counted is not None
    student = compressed[size.rank]
    compressed_dir = work / f"compressed_{tag}_r{size.rank}"
    student.save_pretrained(compressed_dir)
    processor.save_pretrained(compressed_dir)
    ours, ours_sweep = tuned_recovery(lambda: LlavaFAForConditionalGeneration.from_pretrained(compressed_dir),
                                      size, dense, processor, train, val, work, f"recover_{tag}", log)
    adapted = adapter_modules(ours.model)
    if set(adapted) != set(counted):
        raise RuntimeError(f"the adapted modules {sorted(set(adapted) ^ set(counted))} differ from the counted ones; "
                           f"the comparison needs the same modules for bits and adapters.")
    ours_key = f"{tag}_r{size.rank}+recovery"
    rows[ours_key] = {**evaluate(ours.model, processor, test, size.eval_batch, dense),
                      "bits_per_weight": rows[f"{tag}_r{size.rank}"]["bits_per_weight"],
                      "trainable_params": ours.trainable_params, "train": ours.summary(),
                      "lr": ours.optimizer_groups[0]["lr"], "val_kl_by_lr": ours_sweep}

    # baseline: RTN of the same modules + LoRA on the same (adapted) modules, the closest parameter budget
    names = sorted(fourier_modules(student))

    def rtn_model() -> nn.Module:
        model = LlavaFAForConditionalGeneration.from_pretrained(dense_dir).eval()
        rtn_fake_quantize_(model, names, bits=setting["rtn_bits"], group=setting["rtn_group"])
        return model

    baseline = rtn_model()
    rtn_bpw = setting["rtn_bits"] + 32 / setting["rtn_group"]
    n_weights = sum(dict(baseline.named_modules())[n].weight.numel() for n in counted)
    rtn_key = f"rtn{setting['rtn_bits']}_g{setting['rtn_group']}"
    rows[rtn_key] = {**evaluate(baseline, processor, test, size.eval_batch, dense), "bits_per_weight": rtn_bpw}
    lora_rank = matching_lora_rank(baseline, adapted, ours.trainable_params)

    def lora_model() -> nn.Module:
        model = rtn_model().requires_grad_(False)
        return get_peft_model(model, LoraConfig(r=lora_rank, lora_alpha=lora_rank, lora_dropout=0.0,
                                                target_modules=adapted))

    base, base_sweep = tuned_recovery(lora_model, size, dense, processor, train, val, work, f"baseline_{tag}", log,
                                      lrs=size.baseline_lrs or size.recovery_lrs)
    if adapter_modules(base.model) != adapted:
        raise RuntimeError("the baseline's LoRA modules differ from our adapted modules.")
    lora_bits = base.trainable_params * 16 / n_weights  # adapters saved in float16, as our factors, over `counted`
    rows[f"{rtn_key}+lora"] = {**evaluate(base.model, processor, test, size.eval_batch, dense),
                               "bits_per_weight": rtn_bpw + lora_bits, "lora_rank": lora_rank,
                               "trainable_params": base.trainable_params, "train": base.summary(),
                               "lr": base.optimizer_groups[0]["lr"], "val_kl_by_lr": base_sweep}
    if tag == BIT_SETTINGS[0]["tag"]:
        keep.update(compressed=compressed, compressed_dir=compressed_dir, recovery=ours, baseline=base)
    compared[tag] = {
        "ours": ours_key, "baseline": f"{rtn_key}+lora",
        "adapted_modules": len(adapted), "quantized_modules": len(names), "counted_modules": len(counted),
        "counted_weights": n_weights, "excluded_modules": sorted(set(names) - set(counted)),
        "ours_trainable_params": ours.trainable_params, "baseline_trainable_params": base.trainable_params,
        "ours_step_time_s": ours.step_time_s, "baseline_step_time_s": base.step_time_s,
        "ours_peak_rss_mib": ours.peak_rss_mib, "baseline_peak_rss_mib": base.peak_rss_mib,
        "recovery_gap_to_dense_points": 100 * (rows["dense"]["accuracy"] - rows[ours_key]["accuracy"]),
        "ours_minus_baseline_points": 100 * (rows[ours_key]["accuracy"] - rows[f"{rtn_key}+lora"]["accuracy"]),
    }


# ------------------------------------------------------------------------------------------- output
def by_type(row: dict[str, Any]) -> str:
    """``"c / s / n / p"``: a row's accuracy per question type (color, shape, count, position), 2 decimals."""
    return " / ".join(f"{row['by_type'][t]:.2f}" if t in row["by_type"] else "-"
                      for t in ("color", "shape", "count", "position"))


def training_note(results: dict[str, Any]) -> str:
    """One sentence on how the dense model was trained (vision pretraining, stage 1, stage 2)."""
    size, parts = results["size"], results["size"]["stage2_parts"]
    pre = results.get("vision_pretrain")
    text = ""
    if pre:
        acc = " / ".join(f"{pre['validation_accuracy'][t]:.2f}" for t in ("color", "shape", "count", "position"))
        source = "the training images" if not size["vision_pretrain_images"] else "other generated images"
        text = (f"Vision tower pretrained {pre['epochs']} epochs on the attributes of {pre['images']:,} images "
                f"({source}; validation accuracy of its linear heads: {acc}), ")
    frozen = "" if "vision_tower" in parts else ", vision tower frozen"
    return (text + f"stage 1 {results['stage1']['steps']} steps, stage 2 {results['stage2']['steps']} steps "
            f"({size['stage2_epochs']:g} epochs, {' + '.join(parts)} + projector{frozen}).")


def to_markdown(results: dict[str, Any], command: str) -> str:
    """The results table (markdown) with the command that produced it."""
    rows, size = results["rows"], results["size"]
    r = size["rank"]
    lines = [f"Command: `{command}` ({results['total_seconds']:.0f} s, {results['torch_threads']} torch thread(s), "
             f"CPU). Model: vision {results['model']['vision']} (feature layer {results['model']['vision_feature_layer']}), "
             f"text {results['model']['text']}, {results['model']['parameters']:,} parameters, "
             f"{results['model']['image_tokens']} image tokens; Shapes-VQA {size['n_train']}/{size['n_val']}/"
             f"{size['n_test']} train/val/test. {training_note(results)} Dense validation accuracy "
             f"{rows['dense']['validation']['accuracy']:.4f} ({by_type(rows['dense']['validation'])}).", "",
             "| model | bits/weight | test accuracy | color / shape / count / position | KL to dense (nats/token) "
             "| trainable params | step time (s) | peak RSS (MiB) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]

    def line(label: str, row: dict[str, Any]) -> str:
        train = row.get("train", {})
        tp = f"{row['trainable_params']:,}" if "trainable_params" in row else ""
        st = f"{train['step_time_s']:.3f}" if train else ""
        rss = f"{train['peak_rss_mib']:.0f}" if train else ""
        return (f"| {label} | {row['bits_per_weight']:.3f} | {row['accuracy']:.4f} | {by_type(row)} "
                f"| {row['kl_to_dense']:.2e} | {tp} | {st} | {rss} |")

    lines.append(line("dense (float32)", rows["dense"]))
    notes = []
    for tag, comp in results["compared"].items():
        setting = next(s for s in BIT_SETTINGS if s["tag"] == tag)
        ab, pb, rb, rg = setting["amplitude_bits"], setting["phase_bits"], setting["rtn_bits"], setting["rtn_group"]
        if f"{tag}_r0" in rows:
            lines.append(line(f"ours {ab}+{pb} bits, rank 0", rows[f"{tag}_r0"]))
        lines.append(line(f"ours {ab}+{pb} bits, rank {r}", rows[f"{tag}_r{r}"]))
        lines.append(line(f"ours {ab}+{pb} bits, rank {r} + recovery (Fourier-factor adapters)", rows[comp["ours"]]))
        base = rows[comp["baseline"]]
        lines.append(line(f"RTN {rb}-bit g{rg}", rows[comp["baseline"].removesuffix("+lora")]))
        lines.append(line(f"RTN {rb}-bit g{rg} + LoRA r{base['lora_rank']} (QLoRA-style)", base))
        notes.append(f"{ab}+{pb} bits: ours minus dense {-comp['recovery_gap_to_dense_points']:+.2f} points, ours minus "
                     f"baseline {comp['ours_minus_baseline_points']:+.2f} points")
    first = next(iter(results["compared"].values()))
    lrs = ", ".join(f"{label} {rows[comp[key]]['lr']:g}" for comp in results["compared"].values()
                    for key, label in (("ours", comp["ours"]), ("baseline", comp["baseline"])))
    lines += ["", f"Recovery and LoRA: {size['recovery_steps']} steps, batch {size['batch_size']}, distilled from the "
              f"dense model (KL on the answer tokens), on the same {first['adapted_modules']} modules; learning rate "
              f"per run picked by the validation KL from {list(size['recovery_lrs'])} for ours and "
              f"{list(size['baseline_lrs'] or size['recovery_lrs'])} for LoRA ({lrs}); "
              + "; ".join(notes) + f". Bits/weight over the {first['counted_modules']} compressed Linear modules "
              f"that run ({first['counted_weights']:,} weights; both methods compress all {first['quantized_modules']}, "
              f"the {len(first['excluded_modules'])} of the vision layer after the feature layer never run and are "
              f"counted for neither), factors and LoRA counted in float16 (as saved)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Shapes-VQA fine-tuning benchmark: dense -> compressed -> recovered vs RTN4 + LoRA (CPU).",
        epilog="example: python benchmarks/finetune.py --size full --threads 2")
    parser.add_argument("--size", choices=sorted(SIZES), default="full", help="run size (default: full)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--work-dir", default=None, help="folder for data and models (default: a temporary one)")
    parser.add_argument("--out", default=None, help="results path stem (default: benchmarks/results/finetune_cpu"
                                                    "[_<size>])")
    parser.add_argument("--recovery-steps", type=int, default=None, help="override the recovery step budget")
    args = parser.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    size = SIZES[args.size]
    if args.recovery_steps is not None:
        if args.recovery_steps < 1:
            parser.error("--recovery-steps must be >= 1")
        size = replace(size, recovery_steps=args.recovery_steps)
    stem = Path(args.out) if args.out else RESULTS / ("finetune_cpu" if args.size == "full" else f"finetune_cpu_{args.size}")
    command = "python " + " ".join(["benchmarks/finetune.py", *(argv if argv is not None else sys.argv[1:])])
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="llava_fa_finetune_"))
    try:
        results = run_task(size, work)
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    print(write_results(results, stem, command))
    return 0


def write_results(results: dict[str, Any], stem: str | os.PathLike, command: str) -> str:
    """Write ``<stem>.json`` (results + command + machine load) and ``<stem>.md`` (the table), atomically.

    Returns the markdown table.
    """
    stem = Path(stem)
    results = dict(results, command=command)
    try:
        results["load_average"] = os.getloadavg()
    except OSError:
        pass
    results["cpu_count"] = os.cpu_count()
    write_atomic(stem.with_name(stem.name + ".json"), json.dumps(results, indent=2, default=str) + "\n")
    table = to_markdown(results, command)
    write_atomic(stem.with_name(stem.name + ".md"), table)
    return table


if __name__ == "__main__":
    raise SystemExit(main())

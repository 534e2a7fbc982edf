"""Training stages of LLaVA-FA through `transformers.Trainer`: alignment, instruction tuning, recovery.

Three functions, one per stage, each returning a :class:`TrainResult`:

* :func:`train_alignment` (stage 1): only the multimodal projector trains; the vision tower and the
  language model are frozen (their tensors stay bit-identical). Keep the projector dense when
  compressing (`modules_to_not_convert=[..., "model.multi_modal_projector"]`); a compressed
  projector trains its factors and bias.
* :func:`train_instruction` (stage 2): adapters on the language model (and optionally the vision
  tower) plus the projector, with two learning-rate groups (adapters, projector). On a compressed
  model the adapters are the Fourier factors themselves (`llava_fa.adapters.get_fourier_peft_model`,
  projector in `modules_to_save`); on a dense model a standard peft LoRA on the parts' `nn.Linear`
  modules, or (``adapters=False``) the whole parts (full fine-tuning, what a small model trained from
  scratch needs).
* :func:`recover`: a model compressed from a trained dense one trains the Fourier-factor adapters
  of every compressed part, on the task labels (cross-entropy on the answer tokens) or, given the
  dense ``teacher``, by distillation: KL(teacher || student) of the next-token distributions on the
  answer tokens (:func:`distillation_loss`). A model that already is a `PeftModel` (e.g. a
  QLoRA-style baseline) trains its adapters as they are.

Hyperparameters (:data:`STAGE_DEFAULTS`) are LLaVA-1.5's: stage 1 lr 1e-3, stage 2 lr 2e-4 for the
adapters and 2e-5 for the projector, no weight decay, cosine schedule, warmup 3 % of the steps,
one epoch. They are scaled to the data as follows:

* the number of optimizer steps follows the data: ``epochs * ceil(len(train_data) / batch)``
  (or ``max_steps``), and the warmup is 3 % of those steps;
* the global batch is LLaVA's (256 for stage 1, 128 for stage 2 and recovery) capped at the data
  size, split into ``per_device_train_batch_size`` (default 16) times gradient accumulation;
* any value can be overridden with a `TrainingArguments` field name (``learning_rate=...``,
  ``max_steps=...``, ``per_device_train_batch_size=...``, ...); ``projector_learning_rate`` sets the
  second group of stage 2.

Every stage runs `transformers.Trainer` with ``remove_unused_columns=False`` (the collator needs the
raw records), the data helper's `LlavaCollator` (or the ``collator`` given), fixed seeds
(``seed``, ``data_seed``), no checkpoints unless asked (``save_strategy``), and reports what
trained, the final loss, the steps, the mean step time and the process's peak RSS during training.

:func:`generate_answers` decodes greedy answers to the first question of each record (evaluation).
"""

from __future__ import annotations

import dataclasses
import os
import resource
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments

from .trainer_support import FourierTrainer

IGNORE_INDEX = -100
#: The three parts of a LLaVA-FA model, as module-name components.
PARTS: tuple[str, ...] = ("vision_tower", "multi_modal_projector", "language_model")
PROJECTOR = "multi_modal_projector"

#: LLaVA-1.5's values per stage (see the module docstring for how they are scaled to the data).
STAGE_DEFAULTS: dict[str, dict[str, Any]] = {
    "alignment": {"learning_rate": 1e-3, "weight_decay": 0.0, "lr_scheduler_type": "cosine", "warmup_ratio": 0.03,
                  "num_train_epochs": 1.0, "global_batch_size": 256},
    "instruction": {"learning_rate": 2e-4, "projector_learning_rate": 2e-5, "weight_decay": 0.0,
                    "lr_scheduler_type": "cosine", "warmup_ratio": 0.03, "num_train_epochs": 1.0,
                    "global_batch_size": 128},
    "recovery": {"learning_rate": 2e-4, "weight_decay": 0.0, "lr_scheduler_type": "cosine", "warmup_ratio": 0.03,
                 "num_train_epochs": 1.0, "global_batch_size": 128},
}
#: Per-device batch used when the caller gives none (the rest of LLaVA's global batch is accumulation).
DEFAULT_DEVICE_BATCH = 16
#: Our own override names (not `TrainingArguments` fields).
_OWN_OVERRIDES = ("projector_learning_rate", "warmup_ratio", "global_batch_size")
_TRAINING_ARG_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainingArguments))


@dataclass
class TrainResult:
    """What a stage trained and how it went.

    Attributes:
        stage: "alignment", "instruction" or "recovery".
        model: the trained model (a `peft.PeftModel` when adapters were trained, else the model given).
        trained_parameters: names of the parameters that required grad (as in `model.named_parameters()`).
        trainable_params: number of trained scalars (complex factors count two reals each).
        final_loss: mean training loss of the last logging window (float; nan if no step ran).
        steps: optimizer steps taken.
        step_time_s: mean wall time of one optimizer step in seconds (the first step excluded when
            there are more than one: it includes lazy initialisation).
        train_runtime_s: wall time of `Trainer.train()` in seconds.
        peak_rss_mib: the process's peak resident set size during training in MiB (Linux: VmHWM after
            resetting it at the start of training; elsewhere the process's lifetime maximum).
        output_dir: where the run wrote (saved projector / adapter / model when `save=True`).
        saved: paths written when `save=True`.
        optimizer_groups: one dict per optimizer parameter group: ``name``, ``lr`` (its peak learning
            rate), ``weight_decay``, ``params`` (parameter names).
        log_history: `Trainer.state.log_history`.
    """

    stage: str
    model: nn.Module
    trained_parameters: list[str]
    trainable_params: int
    final_loss: float
    steps: int
    step_time_s: float
    train_runtime_s: float
    peak_rss_mib: float
    output_dir: str
    saved: list[str] = field(default_factory=list)
    optimizer_groups: list[dict[str, Any]] = field(default_factory=list)
    log_history: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable summary (everything but the model and the log history)."""
        return {"stage": self.stage, "trainable_params": self.trainable_params, "final_loss": self.final_loss,
                "steps": self.steps, "step_time_s": self.step_time_s, "train_runtime_s": self.train_runtime_s,
                "peak_rss_mib": self.peak_rss_mib, "n_trained_tensors": len(self.trained_parameters),
                "optimizer_groups": [{k: g[k] for k in ("name", "lr", "weight_decay")} | {"n_params": len(g["params"])}
                                     for g in self.optimizer_groups],
                "output_dir": self.output_dir, "saved": list(self.saved)}


# ---------------------------------------------------------------------------------------------
# measuring
# ---------------------------------------------------------------------------------------------
def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux >= 4.0); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB (VmHWM on Linux, else `ru_maxrss`)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if os.uname().sysname == "Darwin" else rss / 1024.0


class _StepTimer(TrainerCallback):
    """Records the wall time of every optimizer step and the peak RSS during training."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._t0 = 0.0
        self.peak_rss_mib = float("nan")

    def on_train_begin(self, args, state, control, **kwargs):
        _reset_peak_rss()

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._t0)

    def on_train_end(self, args, state, control, **kwargs):
        self.peak_rss_mib = peak_rss_mib()

    @property
    def mean_step_time(self) -> float:
        times = self.times[1:] if len(self.times) > 1 else self.times
        return float(sum(times) / len(times)) if times else float("nan")


# ---------------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------------
def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Mean KL(teacher || student) of the next-token distributions at the answer tokens.

    Args:
        student_logits, teacher_logits: ``(B, T, V)`` float logits of the same inputs.
        labels: ``(B, T)`` long, -100 outside the answer tokens. Position ``t`` of the logits predicts
            token ``t + 1``, so the KL is taken at the positions ``t`` where ``labels[:, t + 1] != -100``
            (the tokens the cross-entropy loss trains on).
        temperature: both distributions are ``softmax(logits / temperature)``; the KL is multiplied by
            ``temperature ** 2`` (Hinton et al.) so gradients keep their scale.

    Returns a scalar float32 tensor: ``T^2 * mean_t sum_v p_t(v) (log p_t(v) - log q_t(v))``; 0 when
    no position is selected.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} must have the same shape (same inputs, same vocabulary).")
    if labels.shape != student_logits.shape[:2]:
        raise ValueError(f"labels shape {tuple(labels.shape)} must be the logits' (batch, seq) "
                         f"{tuple(student_logits.shape[:2])}.")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}.")
    select = labels[:, 1:] != IGNORE_INDEX
    student = student_logits[:, :-1][select].float() / temperature
    teacher = teacher_logits[:, :-1][select].float() / temperature
    if student.shape[0] == 0:
        return student_logits.sum() * 0.0
    kl = F.kl_div(F.log_softmax(student, -1), F.log_softmax(teacher, -1), log_target=True, reduction="batchmean")
    return kl * temperature**2


class _StageTrainer(FourierTrainer):
    """`FourierTrainer` (exact resume of compressed models) with named learning-rate groups and an optional
    distillation teacher.

    ``param_groups``: ``[(group_name, [parameters], learning_rate)]``; every trainable parameter must
    be in exactly one group (checked). ``teacher``: a frozen model; the loss becomes
    ``kd_weight * distillation_loss + ce_weight * cross-entropy``.
    """

    def __init__(self, *args: Any, param_groups: list[tuple[str, list[nn.Parameter], float]] | None = None,
                 teacher: nn.Module | None = None, temperature: float = 1.0, kd_weight: float = 1.0,
                 ce_weight: float = 0.0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.param_groups_spec = param_groups
        self.teacher = teacher
        self.temperature, self.kd_weight, self.ce_weight = temperature, kd_weight, ce_weight
        if teacher is not None:
            self.loss_is_scaled_for_ga = False  # our loss is a per-batch mean

    def create_optimizer(self, model=None):
        if self.optimizer is None and self.param_groups_spec is not None:
            groups = [{"params": params, "lr": lr, "weight_decay": self.args.weight_decay, "name": name}
                      for name, params, lr in self.param_groups_spec if params]
            self.optimizer = torch.optim.AdamW(groups, lr=self.args.learning_rate, betas=(self.args.adam_beta1,
                                               self.args.adam_beta2), eps=self.args.adam_epsilon)
            return self.optimizer
        return super().create_optimizer(model)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.teacher is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        outputs = model(**inputs)
        with torch.no_grad():
            teacher_inputs = {k: v for k, v in inputs.items() if k != "labels"}
            teacher_logits = self.teacher(**teacher_inputs).logits
        loss = self.kd_weight * distillation_loss(outputs.logits, teacher_logits, inputs["labels"], self.temperature)
        if self.ce_weight:
            loss = loss + self.ce_weight * outputs.loss
        return (loss, outputs) if return_outputs else loss


# ---------------------------------------------------------------------------------------------
# model inspection
# ---------------------------------------------------------------------------------------------
def _is_fourier(module: nn.Module) -> bool:
    return getattr(module, "is_fourier_linear", False) is True


def _part_of(name: str) -> str | None:
    """The part ("vision_tower", "multi_modal_projector", "language_model") a module/parameter name belongs to;
    `lm_head` counts as the language model."""
    pieces = name.split(".")
    for part in PARTS:
        if part in pieces:
            return part
    if "lm_head" in pieces:
        return "language_model"
    return None


def compressed_parts(model: nn.Module) -> tuple[str, ...]:
    """The parts of `model` that hold at least one FourierLinear module, in `PARTS` order."""
    found = {_part_of(name) for name, module in model.named_modules() if _is_fourier(module)}
    return tuple(p for p in PARTS if p in found)


def _check_parts(parts: Any, allowed: Sequence[str] = PARTS) -> tuple[str, ...]:
    if isinstance(parts, str):
        parts = (parts,)
    if not isinstance(parts, (tuple, list)) or not parts:
        raise TypeError(f"parts must be a non-empty tuple of names among {tuple(allowed)}, got {parts!r}.")
    unknown = [p for p in parts if p not in allowed]
    if unknown:
        raise ValueError(f"unknown part(s) {unknown}; choose among {tuple(allowed)}.")
    return tuple(parts)


def _check_model(model: Any, what: str = "model") -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{what} must be a torch nn.Module (a LlavaFAForConditionalGeneration), got "
                        f"{type(model).__name__}.")
    names = {n for n, _ in model.named_modules()}
    if not any(n.endswith(PROJECTOR) for n in names):
        raise ValueError(f"{what} has no {PROJECTOR!r} module; the stages expect a LLaVA-FA model "
                         f"(vision_tower, multi_modal_projector, language_model).")


def _is_peft(model: nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """``{name: parameter}`` of the parameters that require grad."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _freeze_all(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


# ---------------------------------------------------------------------------------------------
# arguments and the common training loop
# ---------------------------------------------------------------------------------------------
def _training_arguments(stage: str, output_dir: str | os.PathLike, n_examples: int,
                        overrides: dict[str, Any]) -> tuple[TrainingArguments, dict[str, Any]]:
    """`TrainingArguments` of `stage` from `STAGE_DEFAULTS` + `overrides`; returns them and our own settings."""
    unknown = sorted(set(overrides) - _TRAINING_ARG_FIELDS - set(_OWN_OVERRIDES))
    if unknown:
        raise ValueError(f"unknown training override(s) {unknown}: use TrainingArguments field names "
                         f"(learning_rate, max_steps, per_device_train_batch_size, ...) or {list(_OWN_OVERRIDES)}.")
    hp = dict(STAGE_DEFAULTS[stage])
    hp.update(overrides)
    own = {k: hp.pop(k) for k in _OWN_OVERRIDES if k in hp}
    device_batch = int(hp.pop("per_device_train_batch_size", min(DEFAULT_DEVICE_BATCH, max(n_examples, 1))))
    if device_batch < 1:
        raise ValueError(f"per_device_train_batch_size must be >= 1, got {device_batch}.")
    if "gradient_accumulation_steps" not in hp:
        global_batch = min(int(own.get("global_batch_size", device_batch)), max(n_examples, 1))
        hp["gradient_accumulation_steps"] = max(1, global_batch // device_batch)
    warmup_ratio = float(own.get("warmup_ratio", 0.0))
    if "warmup_steps" not in hp and warmup_ratio:
        hp["warmup_steps"] = warmup_ratio  # a float in [0, 1): a ratio of the total steps
    use_cpu = hp.pop("use_cpu", not torch.cuda.is_available())
    hp.setdefault("seed", 0)
    hp.setdefault("data_seed", hp["seed"])
    hp.setdefault("logging_steps", 10)
    hp.setdefault("save_strategy", "no")
    hp.setdefault("report_to", "none")
    hp.setdefault("disable_tqdm", True)
    hp.setdefault("dataloader_num_workers", 0)
    if hp.pop("remove_unused_columns", False):
        raise ValueError("remove_unused_columns=True would drop the raw LLaVA columns the collator needs; leave it "
                         "False.")
    args = TrainingArguments(output_dir=str(output_dir), per_device_train_batch_size=device_batch, use_cpu=use_cpu,
                             remove_unused_columns=False, **hp)
    return args, own


def _check_data(train_data: Any) -> int:
    if train_data is None or not hasattr(train_data, "__len__") or not hasattr(train_data, "__getitem__"):
        raise TypeError(f"train_data must be a datasets.Dataset (or a sequence) of LLaVA records as returned by "
                        f"llava_fa.training.data.load_llava_dataset, got {type(train_data).__name__}.")
    n = len(train_data)
    if n == 0:
        raise ValueError("train_data is empty; nothing to train on.")
    return n


def _default_collator(processor: Any, max_length: int | None) -> Callable:
    from .collator import LlavaCollator  # the data helper's collator

    return LlavaCollator(processor, max_length=max_length)


def _run(stage: str, model: nn.Module, processor: Any, train_data: Any, *, output_dir: str | os.PathLike | None,
         overrides: dict[str, Any], collator: Callable | None, max_length: int | None,
         param_groups: list[tuple[str, list[nn.Parameter], float]] | None = None,
         teacher: nn.Module | None = None, distill: dict[str, float] | None = None) -> tuple[TrainResult, Trainer]:
    n = _check_data(train_data)
    if output_dir is None:
        output_dir = tempfile.mkdtemp(prefix=f"llava_fa_{stage}_")
    args, _ = _training_arguments(stage, output_dir, n, overrides)
    trained = trainable_parameters(model)
    if not trained:
        raise ValueError(f"{stage}: no parameter requires grad; nothing would train.")
    timer = _StepTimer()
    trainer = _StageTrainer(
        model=model, args=args, train_dataset=train_data,
        data_collator=collator if collator is not None else _default_collator(processor, max_length),
        callbacks=[timer], param_groups=param_groups, teacher=teacher, **(distill or {}),
    )
    if teacher is not None:
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    start = time.perf_counter()
    output = trainer.train()
    runtime = time.perf_counter() - start
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    names = {id(p): n for n, p in model.named_parameters()}
    groups = [{"name": g.get("name", f"group{i}"), "lr": float(g.get("initial_lr", g["lr"])),
               "weight_decay": float(g.get("weight_decay", 0.0)), "params": [names[id(p)] for p in g["params"]]}
              for i, g in enumerate(trainer.optimizer.param_groups)] if trainer.optimizer is not None else []
    final = float(losses[-1]) if losses else float(output.training_loss if trainer.state.global_step else "nan")
    n_trainable = sum(p.numel() for p in trained.values())
    result = TrainResult(stage=stage, model=model, trained_parameters=list(trained), trainable_params=n_trainable,
                         final_loss=final, steps=int(trainer.state.global_step), step_time_s=timer.mean_step_time,
                         train_runtime_s=runtime, peak_rss_mib=timer.peak_rss_mib, output_dir=str(output_dir),
                         optimizer_groups=groups, log_history=list(trainer.state.log_history))
    return result, trainer


def _save_projector(model: nn.Module, output_dir: str | os.PathLike) -> str:
    """Write the projector's tensors (`multi_modal_projector.*` keys) to ``output_dir/mm_projector.safetensors``."""
    from safetensors.torch import save_file

    state = {}
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if PROJECTOR in name.split("."):
            key = name[name.index(PROJECTOR):]
            state[key] = tensor.detach().cpu().contiguous()
    path = Path(output_dir) / "mm_projector.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    save_file(state, tmp, metadata={"format": "pt"})
    os.replace(tmp, path)
    return str(path)


# ---------------------------------------------------------------------------------------------
# stage 1
# ---------------------------------------------------------------------------------------------
def train_alignment(
    model: nn.Module,
    processor: Any,
    train_data: Any,
    *,
    output_dir: str | os.PathLike | None = None,
    collator: Callable | None = None,
    max_length: int | None = None,
    save: bool = False,
    **overrides: Any,
) -> TrainResult:
    """Stage 1 (feature alignment): train the multimodal projector only.

    Every other parameter is frozen (`requires_grad=False`) and stays bit-identical; buffers (e.g.
    the codes of a compressed model) never change. LLaVA-1.5 defaults: lr 1e-3, no weight decay,
    cosine, warmup 3 %, one epoch (see the module docstring for the scaling and `overrides`).

    Args:
        model: a `LlavaFAForConditionalGeneration` (dense or compressed; a compressed projector trains
            its factors and bias).
        processor: its `LlavaFAProcessor` (used by the default collator).
        train_data: a `datasets.Dataset` of LLaVA records (`load_llava_dataset`).
        output_dir: Trainer output folder (a temporary one when None).
        collator: batch builder; default `LlavaCollator(processor, max_length)`.
        save: write the projector to ``output_dir/mm_projector.safetensors``.
        **overrides: `TrainingArguments` fields (and `global_batch_size`, `warmup_ratio`).

    Returns a `TrainResult` whose `trained_parameters` are the projector's parameters.
    """
    _check_model(model)
    if _is_peft(model):
        raise TypeError("train_alignment trains the bare model's projector; pass the model, not a PeftModel.")
    _freeze_all(model)
    for name, p in model.named_parameters():
        if PROJECTOR in name.split("."):
            p.requires_grad_(True)
    model.train()
    result, _ = _run("alignment", model, processor, train_data, output_dir=output_dir, overrides=overrides,
                     collator=collator, max_length=max_length)
    model.eval()
    if save:
        result.saved.append(_save_projector(model, result.output_dir))
    return result


# ---------------------------------------------------------------------------------------------
# stage 2
# ---------------------------------------------------------------------------------------------
def _linear_targets(model: nn.Module, parts: Sequence[str]) -> list[str]:
    """Full names of the `nn.Linear` modules in `parts` (not `lm_head`: it stays frozen, as in LLaVA's LoRA)."""
    return [name for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and _part_of(name) in parts and "lm_head" not in name.split(".")]


def _split_groups(model: nn.Module, lr: float, projector_lr: float) -> list[tuple[str, list[nn.Parameter], float]]:
    main, projector = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (projector if PROJECTOR in name.split(".") else main).append(p)
    return [("adapters", main, lr), ("projector", projector, projector_lr)]


def train_instruction(
    model: nn.Module,
    processor: Any,
    train_data: Any,
    *,
    output_dir: str | os.PathLike | None = None,
    adapters: bool = True,
    parts: Sequence[str] = ("language_model",),
    lora_kwargs: dict[str, Any] | None = None,
    collator: Callable | None = None,
    max_length: int | None = None,
    save: bool = False,
    **overrides: Any,
) -> TrainResult:
    """Stage 2 (instruction tuning): adapters (or the whole parts) plus the projector, two learning rates.

    What trains:
        * compressed model, ``adapters=True``: the Fourier-factor adapters of the FourierLinear modules
          in `parts` (`llava_fa.adapters.get_fourier_peft_model(model, parts, modules_to_save=
          ["multi_modal_projector"], **lora_kwargs)`); the result is a `PeftModel`.
        * dense model, ``adapters=True``: a peft LoRA (default r=8, alpha=16, dropout 0) on every
          `nn.Linear` of `parts` (explicit names), projector in `modules_to_save`; a `PeftModel`.
        * ``adapters=False``: every parameter of `parts` (for "language_model" also the embeddings
          and `lm_head`) and of the projector; the model itself.
        The vision tower is frozen unless "vision_tower" is in `parts`.

    Optimizer: AdamW with two groups, "adapters" at `learning_rate` (LLaVA-1.5: 2e-4) and "projector"
    at `projector_learning_rate` (2e-5); both follow the same cosine schedule with 3 % warmup.

    Args: as :func:`train_alignment`, plus `adapters`, `parts` (subset of ("vision_tower",
    "language_model")) and `lora_kwargs` (extra `LoraConfig` fields).
    Returns a `TrainResult`; with ``save=True`` the adapter (`PeftModel.save_pretrained`) or the whole
    model (`save_pretrained`) is written to `output_dir`.
    """
    _check_model(model)
    if _is_peft(model):
        raise TypeError("train_instruction adds its own adapters; pass the bare model, not a PeftModel.")
    parts = _check_parts(parts, ("vision_tower", "language_model"))
    if lora_kwargs is not None and not isinstance(lora_kwargs, dict):
        raise TypeError(f"lora_kwargs must be a dict of LoraConfig fields, got {type(lora_kwargs).__name__}.")
    hp = dict(STAGE_DEFAULTS["instruction"])
    hp.update(overrides)
    lr, projector_lr = float(hp["learning_rate"]), float(hp["projector_learning_rate"])
    _freeze_all(model)
    compressed = compressed_parts(model)
    if adapters and any(p in compressed for p in parts):
        missing = [p for p in parts if p not in compressed]
        if missing:
            raise ValueError(f"parts {missing} hold no FourierLinear module, so they have no Fourier-factor adapters; "
                             f"compressed parts of this model: {compressed}.")
        from llava_fa.adapters import get_fourier_peft_model

        trained_model = get_fourier_peft_model(model, parts=parts, modules_to_save=[PROJECTOR],
                                               **(lora_kwargs or {}))
    elif adapters:
        from peft import LoraConfig, get_peft_model

        targets = _linear_targets(model, parts)
        if not targets:
            raise ValueError(f"no nn.Linear module in parts {parts}; nothing to put a LoRA adapter on.")
        kwargs = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0}
        kwargs.update(lora_kwargs or {})
        trained_model = get_peft_model(model, LoraConfig(target_modules=targets, modules_to_save=[PROJECTOR],
                                                         **kwargs))
    else:
        for name, p in model.named_parameters():
            if _part_of(name) in (*parts, PROJECTOR):
                p.requires_grad_(True)
        trained_model = model
    trained_model.train()
    groups = _split_groups(trained_model, lr, projector_lr)
    result, _ = _run("instruction", trained_model, processor, train_data, output_dir=output_dir,
                     overrides=overrides, collator=collator, max_length=max_length, param_groups=groups)
    trained_model.eval()
    if save:
        trained_model.save_pretrained(result.output_dir)
        result.saved.append(result.output_dir)
    return result


# ---------------------------------------------------------------------------------------------
# recovery
# ---------------------------------------------------------------------------------------------
def recover(
    compressed_model: nn.Module,
    processor: Any,
    train_data: Any,
    *,
    output_dir: str | os.PathLike | None = None,
    teacher: nn.Module | None = None,
    parts: Sequence[str] | None = None,
    temperature: float = 1.0,
    ce_weight: float = 0.0,
    lora_kwargs: dict[str, Any] | None = None,
    collator: Callable | None = None,
    max_length: int | None = None,
    save: bool = False,
    **overrides: Any,
) -> TrainResult:
    """Recover a compressed model's behaviour by training the Fourier-factor adapters of its compressed parts.

    Loss: without `teacher`, the cross-entropy of the answer tokens (the task labels); with the
    dense `teacher` (same inputs, same vocabulary), ``distillation_loss(student, teacher, labels,
    temperature) + ce_weight * cross-entropy`` (KL on the answer tokens only).

    Args:
        compressed_model: a model loaded with `FourierApproxConfig` (rank > 0 in the parts to train),
            or a `PeftModel` whose adapters are trained as they are (e.g. LoRA on a fake-quantized
            base, for baselines).
        teacher: the dense model the compressed one came from; frozen and put in eval mode.
        parts: parts whose FourierLinear factors train; default every compressed part.
        lora_kwargs: extra arguments of `get_fourier_peft_model`.
        Others as :func:`train_alignment`; defaults: lr 2e-4, no weight decay, cosine, warmup 3 %.

    Returns a `TrainResult` whose model is the `PeftModel` (``merge_and_unload()`` gives back a
    compressed model with the trained factors). Codes, scales and levels are buffers and never change.
    """
    _check_model(compressed_model, "compressed_model")
    if teacher is not None:
        _check_model(teacher, "teacher")
    if not (isinstance(temperature, (int, float)) and temperature > 0):
        raise ValueError(f"temperature must be a number > 0, got {temperature!r}.")
    if _is_peft(compressed_model):
        peft_model = compressed_model
    else:
        compressed = compressed_parts(compressed_model)
        if not compressed:
            raise ValueError("compressed_model holds no FourierLinear module; load it with "
                             "from_pretrained(..., quantization_config=FourierApproxConfig(rank=...)) first.")
        parts = compressed if parts is None else _check_parts(parts)
        missing = [p for p in parts if p not in compressed]
        if missing:
            raise ValueError(f"parts {missing} are not compressed (compressed parts: {compressed}).")
        _freeze_all(compressed_model)
        from llava_fa.adapters import get_fourier_peft_model

        peft_model = get_fourier_peft_model(compressed_model, parts=parts, **(lora_kwargs or {}))
    peft_model.train()
    distill = {"temperature": float(temperature), "kd_weight": 1.0, "ce_weight": float(ce_weight)}
    result, _ = _run("recovery", peft_model, processor, train_data, output_dir=output_dir, overrides=overrides,
                     collator=collator, max_length=max_length, teacher=teacher,
                     distill=distill if teacher is not None else None)
    peft_model.eval()
    if save:
        peft_model.save_pretrained(result.output_dir)
        result.saved.append(result.output_dir)
    return result


# ---------------------------------------------------------------------------------------------
# evaluation helper
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def generate_answers(
    model: nn.Module,
    processor: Any,
    records: Any,
    *,
    batch_size: int = 32,
    max_new_tokens: int = 8,
) -> list[str]:
    """Greedy answers of `model` to each record's conversation without its last gpt reply.

    `records`: LLaVA records as `load_llava_dataset` returns them (columns `images`, `conversations`).
    Prompts are built by the data helper's `build_generation_batch` (left padded, generation prompt
    appended). Returns one stripped string per record, special tokens removed
    (`model.generate(do_sample=False)`).
    """
    from .collator import build_generation_batch

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}.")
    tokenizer = processor.tokenizer
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    answers: list[str] = []
    try:
        for start in range(0, len(records), batch_size):
            batch = [records[i] for i in range(start, min(start + batch_size, len(records)))]
            inputs, _ = build_generation_batch(processor, batch)
            inputs = {k: v.to(device) for k, v in inputs.items()}
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
            new = out[:, inputs["input_ids"].shape[1]:]
            answers.extend(t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True))
    finally:
        model.train(was_training)
    return answers


__all__ = [
    "PARTS",
    "STAGE_DEFAULTS",
    "TrainResult",
    "compressed_parts",
    "distillation_loss",
    "generate_answers",
    "peak_rss_mib",
    "recover",
    "train_alignment",
    "train_instruction",
    "trainable_parameters",
]

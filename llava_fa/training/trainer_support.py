"""Make `transformers.Trainer` train compressed (FourierLinear) models correctly.

* `fourier_training_arguments(output_dir, **kw)`: `TrainingArguments` with the settings these models need
  (``remove_unused_columns=False``: LLaVA collators read raw columns; ``ddp_broadcast_buffers=False``:
  otherwise DDP re-sends every code, scale and table from rank 0 before each forward).
* `FourierTrainer`: a `Trainer` whose checkpoints resume EXACTLY for a bare compressed model. Plain
  `Trainer` saves checkpoints in the model's original key layout (LLaVA's ``language_model.model.*``)
  but reads them back with ``model.load_state_dict(state, strict=False)`` in the model's own layout, so
  nothing loads and training silently restarts from the initial factors; and ``save_pretrained`` rounds
  the float32 factors to the stored ``factor_dtype``. `FourierTrainer` saves the factors in float32 and
  loads checkpoints through transformers' key renaming, failing loudly on any missing or unexpected key.
  PeftModels already resume exactly through peft (adapter files).
* `train_factors_only(model, parts)`: freeze everything except the low-rank factors of the chosen parts
  (the bare-model counterpart of `get_fourier_peft_model`).
* `freeze_unused_vision_layers(model)`: LLaVA reads vision hidden state -2, so the last CLIP layer(s) and
  the tower's ``post_layernorm`` never get gradients; freezing them lets DDP run with
  ``find_unused_parameters=False``.
* `frozen_state(model)` / `check_frozen_unchanged(before, model)` / `FrozenCodesCallback`: the codes,
  scales, tables and input scales must stay bit-identical through training.
* `local_device_map()`: ``{"": LOCAL_RANK}`` under torchrun (one GPU per rank), ``{"": "cpu"}`` without CUDA.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Iterable, Iterator, Optional

import torch
from torch import nn
from transformers import PreTrainedModel, Trainer, TrainerCallback, TrainingArguments
from transformers.utils import logging

from ..adapters.layer import base_factors
from ..adapters.registration import check_parts, in_parts, is_fourier_module, under_any, unused_vision_modules

logger = logging.get_logger(__name__)

#: Buffers of a FourierLinear that training must never change.
FROZEN_BUFFERS: tuple[str, ...] = ("codes", "scales", "levels", "table", "input_scale")
SAFE_WEIGHTS = "model.safetensors"
SAFE_WEIGHTS_INDEX = "model.safetensors.index.json"


# ----------------------------------------------------------------------------------------- arguments
def fourier_training_arguments(output_dir: str, **kwargs: Any) -> TrainingArguments:
    """`TrainingArguments` for compressed models: ``remove_unused_columns=False`` and
    ``ddp_broadcast_buffers=False`` unless given; everything else as passed."""
    kwargs.setdefault("remove_unused_columns", False)
    kwargs.setdefault("ddp_broadcast_buffers", False)
    return TrainingArguments(output_dir=output_dir, **kwargs)


def local_device_map() -> dict[str, Any]:
    """``device_map`` for a distributed run: this rank's GPU (``LOCAL_RANK``), else the CPU.

    ``torch.cuda.current_device()`` is 0 on every rank until the process group sets the device, so any
    ``device_map`` built from it puts every rank's model on GPU 0 (Trainer then treats ranks != 0 as
    model-parallel). `FourierApproxHfQuantizer.update_device_map` already reads ``LOCAL_RANK`` when no
    ``device_map`` is given; pass this one when loading a model that is not quantized on load.
    """
    if torch.cuda.is_available():
        return {"": int(os.environ.get("LOCAL_RANK", torch.cuda.current_device()))}
    return {"": "cpu"}


# ----------------------------------------------------------------------------------------- freezing
def freeze_unused_vision_layers(model: nn.Module) -> list[str]:
    """Freeze the parameters of vision-tower modules the model never reads (see `unused_vision_modules`).

    Returns the names of the parameters that were trainable and are now frozen.
    """
    base = _base_model(model)
    unused = unused_vision_modules(base)
    frozen = []
    for name, param in base.named_parameters():
        if param.requires_grad and under_any(_strip_wrappers(name), unused):
            param.requires_grad_(False)
            frozen.append(name)
    return frozen


def train_factors_only(model: nn.Module, parts: Optional[Iterable[str]] = ("language_model",)) -> int:
    """Freeze every parameter of `model` except the low-rank factors of its FourierLinear modules in `parts`
    (``None``: all parts), leaving out vision layers the model never reads. Returns the number of trainable
    parameters (elements). For a bare model trained with `FourierTrainer`/`Trainer` (no peft)."""
    parts = check_parts(parts)
    if not isinstance(model, nn.Module):
        raise TypeError(f"train_factors_only needs a torch model, got {type(model).__name__}.")
    unused = unused_vision_modules(model)
    model.requires_grad_(False)
    count = 0
    for name, module in model.named_modules():
        if not is_fourier_module(module) or int(module.rank) <= 0:
            continue
        if not in_parts(name, parts) or under_any(name, unused):
            continue
        for factor in base_factors(module):
            factor.requires_grad_(True)
            count += factor.numel()
    if count == 0:
        raise ValueError(f"parts={parts} selects no FourierLinear with rank > 0; nothing would train.")
    return count


# ----------------------------------------------------------------------------------------- frozen state
def frozen_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """CPU copies of every FourierLinear's frozen buffers (codes, scales, levels, table, input_scale) by name."""
    state = {}
    for name, module in _base_model(model).named_modules():
        if is_fourier_module(module):
            for buffer in FROZEN_BUFFERS:
                value = module._buffers.get(buffer)
                if value is not None:
                    state[f"{_strip_wrappers(name)}.{buffer}"] = value.detach().to("cpu", copy=True)
    return state


def check_frozen_unchanged(before: dict[str, torch.Tensor], model: nn.Module) -> None:
    """Raise `AssertionError` naming the tensors whose bits (value or dtype) differ from `before`."""
    after = frozen_state(model)
    changed = [k for k in before if k not in after or after[k].dtype != before[k].dtype
               or not torch.equal(after[k], before[k])]
    changed += [k for k in after if k not in before]
    if changed:
        raise AssertionError(f"{len(changed)} frozen FourierLinear tensor(s) changed during training: {changed[:5]}")


class FrozenCodesCallback(TrainerCallback):
    """Checks at the end of training that no code, scale, table or input scale changed (AssertionError)."""

    def __init__(self) -> None:
        self.before: Optional[dict[str, torch.Tensor]] = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is not None:
            self.before = frozen_state(model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if model is not None and self.before is not None:
            check_frozen_unchanged(self.before, model)


# ----------------------------------------------------------------------------------------- checkpoints
@contextlib.contextmanager
def float32_factors(model: nn.Module) -> Iterator[None]:
    """Within the block, `save_pretrained` writes every FourierLinear's factors in float32 (no rounding)."""
    changed = []
    for module in _base_model(model).modules():
        if is_fourier_module(module) and getattr(module, "factor_dtype", torch.float32) != torch.float32:
            changed.append((module, module.settings))
            module.settings = module.settings.replace(factor_dtype=torch.float32)
    try:
        yield
    finally:
        for module, settings in changed:
            module.settings = settings


def _read_checkpoint(folder: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    single = os.path.join(folder, SAFE_WEIGHTS)
    if os.path.isfile(single):
        return load_file(single, device="cpu")
    index = os.path.join(folder, SAFE_WEIGHTS_INDEX)
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as handle:
            files = sorted(set(json.load(handle)["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for name in files:
            state.update(load_file(os.path.join(folder, name), device="cpu"))
        return state
    raise ValueError(f"{folder!r} holds neither {SAFE_WEIGHTS} nor {SAFE_WEIGHTS_INDEX}; not a Trainer checkpoint of "
                     f"a full model (use safe_serialization).")


def to_model_keys(model: PreTrainedModel, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` with its keys renamed from the saved (original) layout to `model`'s own (transformers' mapping)."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightRenaming, rename_source_key

    transforms = get_model_conversion_mapping(model)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if not isinstance(t, WeightRenaming)]
    meta = dict.fromkeys(model.state_dict())
    prefix = getattr(model, "base_model_prefix", None)
    return {rename_source_key(key, renamings, converters, prefix, meta)[0]: value for key, value in state.items()}


def load_full_checkpoint(model: PreTrainedModel, folder: str) -> None:
    """Load a Trainer checkpoint of a full (non-peft) model into `model` exactly, in place.

    Keys are renamed to the model's layout first; every parameter and persistent buffer must be found
    (tied parameters excepted) and no key may be left over, else `ValueError` lists them.
    """
    state = to_model_keys(model, _read_checkpoint(folder))
    expected = model.state_dict()
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    missing = [k for k in expected if k not in state and k not in tied]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise ValueError(f"Checkpoint {folder!r} does not match {type(model).__name__}: {len(missing)} missing key(s) "
                         f"{missing[:4]}, {len(unexpected)} unexpected key(s) {unexpected[:4]}. Nothing was loaded.")
    with torch.no_grad():
        for key, value in state.items():
            target = expected[key]
            if target.shape != value.shape:
                raise ValueError(f"Checkpoint {folder!r}: {key} has shape {tuple(value.shape)}, the model "
                                 f"{tuple(target.shape)}.")
    model.load_state_dict(state, strict=False)  # tied parameters share storage with their loaded source


class FourierTrainer(Trainer):
    """`Trainer` for compressed models: exact resume of bare models, float32 factors in checkpoints,
    ``ddp_broadcast_buffers=False`` by default, and a clear error when ``remove_unused_columns=True``
    would drop dataset columns the collator needs.

    Use it exactly like `Trainer`. Checkpoints stay ordinary ``save_pretrained`` folders (factors in
    float32), loadable with ``from_pretrained``.
    """

    def __init__(self, model=None, args: Optional[TrainingArguments] = None, *rest: Any, **kwargs: Any):
        if args is not None and args.ddp_broadcast_buffers is None:
            args.ddp_broadcast_buffers = False
        super().__init__(model, args, *rest, **kwargs)
        self._check_columns()

    def _check_columns(self) -> None:
        dataset = self.train_dataset
        names = getattr(dataset, "column_names", None)
        if not self.args.remove_unused_columns or not names or isinstance(names, dict):
            return
        self._set_signature_columns_if_needed()
        dropped = [c for c in names if c not in self._signature_columns]
        if dropped:
            raise ValueError(f"remove_unused_columns=True would drop the dataset column(s) {dropped} before the "
                             f"collator sees them (the model's forward does not take them). Set "
                             f"TrainingArguments(remove_unused_columns=False) or build the arguments with "
                             f"llava_fa.training.fourier_training_arguments.")

    def _save(self, output_dir: Optional[str] = None, state_dict: Optional[dict] = None) -> None:
        with float32_factors(self.model):
            super()._save(output_dir, state_dict)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Optional[nn.Module] = None) -> None:
        model = self.model if model is None else model
        full = any(os.path.isfile(os.path.join(resume_from_checkpoint, f)) for f in (SAFE_WEIGHTS, SAFE_WEIGHTS_INDEX))
        if isinstance(model, PreTrainedModel) and full and not (self.is_fsdp_enabled or self.is_deepspeed_enabled):
            load_full_checkpoint(model, resume_from_checkpoint)
            return
        super()._load_from_checkpoint(resume_from_checkpoint, model)


# ----------------------------------------------------------------------------------------- helpers
def _base_model(model: nn.Module) -> nn.Module:
    """The model under a PeftModel / DDP wrapper."""
    inner = getattr(model, "module", model)
    get_base = getattr(inner, "get_base_model", None)
    return get_base() if callable(get_base) else inner


def _strip_wrappers(name: str) -> str:
    """Module name without peft's ``base_layer`` hops (so it matches the base model's names)."""
    return name.replace(".base_layer", "")


__all__ = [
    "FROZEN_BUFFERS",
    "FourierTrainer",
    "FrozenCodesCallback",
    "check_frozen_unchanged",
    "float32_factors",
    "fourier_training_arguments",
    "freeze_unused_vision_layers",
    "frozen_state",
    "load_full_checkpoint",
    "local_device_map",
    "to_model_keys",
    "train_factors_only",
]

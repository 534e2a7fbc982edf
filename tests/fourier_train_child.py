"""Shared pieces of the adapter/Trainer/DDP tests, and the script each torchrun rank runs.

As a module: `make_compressed_folder`, `load_compressed`, `tiny_inputs`, `RepeatedBatch`.
As a script (``torchrun --nproc_per_node 2 tests/fourier_train_child.py FOLDER OUT_DIR MODE``): trains the
compressed tiny model for 2 steps with `FourierTrainer` under DDP on the CPU (gloo) and writes
``OUT_DIR/rank{RANK}.json`` (world size, distributed type, DDP settings, losses, a checksum of the trained
factors). MODE: ``bare`` (factors of the bare model, unused vision layer left out), ``peft`` (Fourier
adapters on the language model), ``all`` / ``all-find-unused`` (every factor, including the vision layer
the model never reads, with ``ddp_find_unused_parameters`` False / True).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: Compression used by these tests: fast (one Algorithm 1 round); mixed ranks on purpose
#: (k_proj rank 0: no factors; v_proj rank 1: a second rank for rank_pattern).
TEST_COMPRESSION = dict(rank=2, max_iters=1,
                        overrides={r"k_proj": {"rank": 0}, r"v_proj": {"rank": 1}})


def make_compressed_folder(root: Path) -> Path:
    """Save the tiny LLaVA-FA (seed 0) and its compressed copy under `root`; returns the compressed folder."""
    from llava_fa.modeling import LlavaFAForConditionalGeneration
    from llava_fa.quantization import FourierApproxConfig
    from llava_fa.testing import save_tiny_llava_fa

    src = save_tiny_llava_fa(Path(root) / "src", seed=0)
    model = LlavaFAForConditionalGeneration.from_pretrained(
        src, quantization_config=FourierApproxConfig(**TEST_COMPRESSION))
    folder = Path(root) / "compressed"
    model.save_pretrained(folder)
    return folder


_FOLDER: dict[str, Path] = {}


def shared_compressed_folder(tmp_path_factory) -> Path:
    """`make_compressed_folder` once per pytest session (memoised here: the test modules share it)."""
    if "folder" not in _FOLDER:
        _FOLDER["folder"] = make_compressed_folder(tmp_path_factory.mktemp("fourier_train"))
    return _FOLDER["folder"]


def load_compressed(folder: Path):
    """A fresh copy of the compressed model (eval mode)."""
    from llava_fa.modeling import LlavaFAForConditionalGeneration

    return LlavaFAForConditionalGeneration.from_pretrained(folder).eval()


def tiny_inputs(config, batch: int = 2, seq: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded `input_ids` (with the image tokens), `pixel_values` and `labels` for the tiny model."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 50, (batch, seq), generator=gen)
    ids[:, 2:2 + config.image_seq_length] = config.image_token_index
    size = config.vision_config.image_size
    pixels = torch.randn(batch, 3, size, size, generator=gen)
    return dict(input_ids=ids, pixel_values=pixels, labels=ids.clone())


class RepeatedBatch(torch.utils.data.Dataset):
    """`length` examples cycling over the rows of one fixed batch (the default collator stacks them)."""

    def __init__(self, inputs: dict[str, torch.Tensor], length: int = 8):
        self.inputs, self.length = inputs, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        row = index % self.inputs["input_ids"].shape[0]
        return {k: v[row] for k, v in self.inputs.items()}


def factor_checksum(model) -> float:
    """Sum of |trainable parameters| (float64): equal on every rank iff DDP kept the replicas in sync."""
    return float(sum(p.detach().double().abs().sum() for p in model.parameters() if p.requires_grad))


def main(folder: str, out_dir: str, mode: str) -> None:
    from llava_fa.adapters import get_fourier_peft_model
    from llava_fa.training.trainer_support import FourierTrainer, fourier_training_arguments, train_factors_only

    model = load_compressed(Path(folder))
    find_unused = False
    if mode == "peft":
        model = get_fourier_peft_model(model, parts=("language_model",))
    else:
        train_factors_only(model, parts=None)
    if mode in ("all", "all-find-unused"):  # also the vision layer the model never reads (measurement only)
        for name, param in model.named_parameters():
            if name.endswith(("lowrank_l1", "lowrank_l2", "lora_l1", "lora_l2")):
                param.requires_grad_(True)
        find_unused = mode == "all-find-unused"
    args = fourier_training_arguments(
        os.path.join(out_dir, "trainer"), max_steps=2, per_device_train_batch_size=1, learning_rate=1e-2,
        logging_steps=1, report_to="none", use_cpu=True, save_strategy="no", dataloader_num_workers=0,
        ddp_find_unused_parameters=find_unused, disable_tqdm=True, seed=0)
    trainer = FourierTrainer(model=model, args=args, train_dataset=RepeatedBatch(tiny_inputs(load_config(folder))))
    trainer.train()
    wrapped = trainer.model_wrapped
    rank = int(os.environ.get("RANK", "0"))
    result = {
        "rank": rank,
        "world_size": trainer.args.world_size,
        "distributed_type": str(trainer.accelerator.distributed_type),
        "ddp": type(wrapped).__name__,
        "broadcast_buffers": getattr(wrapped, "broadcast_buffers", None),
        "find_unused_parameters": getattr(wrapped, "find_unused_parameters", None),
        "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
        "checksum": factor_checksum(trainer.model),
    }
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    tmp = Path(out_dir) / f".rank{rank}.json.tmp"
    tmp.write_text(json.dumps(result))
    tmp.replace(Path(out_dir) / f"rank{rank}.json")


def load_config(folder: str):
    from llava_fa.modeling import LlavaFAConfig

    return LlavaFAConfig.from_pretrained(folder)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(*sys.argv[1:4])


# ----------------------------------------------------------------------------------------- probes

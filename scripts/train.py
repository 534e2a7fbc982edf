"""Train LLaVA-FA in stages from the command line (a thin layer over `llava_fa.training.stages`).

    python scripts/train.py stage1  --model DENSE_DIR --data train.json --output-dir out/stage1
    python scripts/train.py stage2  --model out/stage1 --data train.json --output-dir out/stage2 --full
    python scripts/train.py recover --model DENSE_DIR --compress-rank 4 --teacher DENSE_DIR \\
                                    --data train.json --output-dir out/recovered --max-steps 200

Each command loads the model (and its processor) from a folder, trains, and writes to
`--output-dir`: `train_result.json` (what trained, final loss, steps, step time, peak RSS) and
`model/` (the whole model, loadable with `from_pretrained`; adapters merged) plus, for adapter runs,
`adapter/` (`PeftModel.save_pretrained`: adapter_config.json + adapter_model.safetensors) and, for
stage 1, `mm_projector.safetensors`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

EXAMPLES = """examples:
  python scripts/train.py stage1 --model tiny_dense --data data/train.json --output-dir runs/s1 --max-steps 100
  python scripts/train.py stage2 --model runs/s1/model --data data/train.json --output-dir runs/s2 --full \\
      --learning-rate 1e-3 --epochs 3
  python scripts/train.py recover --model runs/s2/model --compress-rank 4 --teacher runs/s2/model \\
      --data data/train.json --output-dir runs/rec --max-steps 200
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/train.py", description="LLaVA-FA training stages: stage1 (projector alignment), stage2 "
        "(instruction tuning), recover (Fourier-factor adapters of a compressed model).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="stage", required=True, metavar="{stage1,stage2,recover}")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", required=True, help="model folder (save_pretrained output with its processor)")
        p.add_argument("--processor", default=None, help="processor folder (default: --model)")
        p.add_argument("--data", required=True, help="LLaVA-format training data (.json or .jsonl)")
        p.add_argument("--image-folder", default=None, help="folder the records' image paths are relative to "
                                                            "(default: the data file's folder)")
        p.add_argument("--skip-bad-records", action="store_true", help="drop invalid records instead of failing")
        p.add_argument("--output-dir", required=True, help="where results, model and adapter are written")
        p.add_argument("--learning-rate", type=_positive_float, default=None, help="learning rate (stage default "
                                                                                   "if omitted)")
        p.add_argument("--epochs", type=_positive_float, default=None, help="training epochs (default 1)")
        p.add_argument("--max-steps", type=_positive_int, default=None, help="stop after this many optimizer steps")
        p.add_argument("--batch-size", type=_positive_int, default=None, help="per-device batch size (default 16)")
        p.add_argument("--global-batch-size", type=_positive_int, default=None,
                       help="batch per optimizer step, reached by gradient accumulation (LLaVA-1.5 default)")
        p.add_argument("--max-length", type=_positive_int, default=None, help="truncate sequences to this length")
        p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
        p.add_argument("--logging-steps", type=_positive_int, default=10)

    p1 = sub.add_parser("stage1", help="train the projector only (alignment)", epilog=EXAMPLES,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    common(p1)
    p2 = sub.add_parser("stage2", help="instruction tuning: adapters (or --full) + projector", epilog=EXAMPLES,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    common(p2)
    p2.add_argument("--full", action="store_true", help="train the whole parts instead of adapters")
    p2.add_argument("--parts", nargs="+", default=["language_model"], choices=["language_model", "vision_tower"],
                    help="parts that get adapters / train (default: language_model)")
    p2.add_argument("--projector-learning-rate", type=_positive_float, default=None,
                    help="learning rate of the projector group (default 2e-5)")
    p2.add_argument("--lora-rank", type=_positive_int, default=None, help="LoRA rank for a dense model (default 8)")
    p3 = sub.add_parser("recover", help="train the Fourier-factor adapters of a compressed model", epilog=EXAMPLES,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    common(p3)
    p3.add_argument("--compress-rank", type=int, default=None,
                    help="compress --model on load with FourierApproxConfig(rank=N) first (a dense --model)")
    p3.add_argument("--teacher", default=None, help="dense model folder to distil from (KL on answer tokens); "
                                                    "without it the task labels are used")
    p3.add_argument("--temperature", type=_positive_float, default=1.0, help="distillation temperature")
    p3.add_argument("--parts", nargs="+", default=None,
                    choices=["language_model", "vision_tower", "multi_modal_projector"],
                    help="parts whose factors train (default: every compressed part)")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"seed": args.seed, "logging_steps": args.logging_steps}
    for flag, key in (("learning_rate", "learning_rate"), ("epochs", "num_train_epochs"),
                      ("max_steps", "max_steps"), ("batch_size", "per_device_train_batch_size"),
                      ("global_batch_size", "global_batch_size")):
        value = getattr(args, flag)
        if value is not None:
            out[key] = value
    return out


def _load_model(folder: str, quantization_config: Any = None) -> Any:
    from llava_fa import LlavaFAForConditionalGeneration

    if not Path(folder).is_dir():
        raise SystemExit(f"error: model folder {folder!r} does not exist (give a save_pretrained folder).")
    kwargs = {} if quantization_config is None else {"quantization_config": quantization_config}
    return LlavaFAForConditionalGeneration.from_pretrained(folder, **kwargs)


def _save_outputs(result: Any, processor: Any, output_dir: Path) -> None:
    from peft import PeftModel

    model = result.model
    if isinstance(model, PeftModel):
        model.save_pretrained(output_dir / "adapter")
        model = model.merge_and_unload()
    model.save_pretrained(output_dir / "model")
    processor.save_pretrained(output_dir / "model")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from transformers import AutoProcessor

    from llava_fa import FourierApproxConfig
    from llava_fa.training.data import load_llava_dataset
    from llava_fa.training.stages import recover, train_alignment, train_instruction

    if not Path(args.data).is_file():
        raise SystemExit(f"error: --data {args.data!r} is not a file (a LLaVA .json / .jsonl).")
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    processor = AutoProcessor.from_pretrained(args.processor or args.model)
    data = load_llava_dataset(args.data, args.image_folder, skip_bad_records=args.skip_bad_records)
    overrides = _overrides(args)
    common = {"output_dir": output_dir / "trainer", "max_length": args.max_length}
    try:
        if args.stage == "stage1":
            model = _load_model(args.model)
            result = train_alignment(model, processor, data, save=True, **common, **overrides)
            os.replace(result.saved[0], output_dir / "mm_projector.safetensors")
            result.saved = [str(output_dir / "mm_projector.safetensors")]
        elif args.stage == "stage2":
            model = _load_model(args.model)
            if args.projector_learning_rate is not None:
                overrides["projector_learning_rate"] = args.projector_learning_rate
            lora = None if args.lora_rank is None else {"r": args.lora_rank, "lora_alpha": 2 * args.lora_rank}
            result = train_instruction(model, processor, data, adapters=not args.full, parts=tuple(args.parts),
                                       lora_kwargs=lora, **common, **overrides)
        else:
            qconfig = None if args.compress_rank is None else FourierApproxConfig(rank=args.compress_rank)
            model = _load_model(args.model, qconfig)
            teacher = None if args.teacher is None else _load_model(args.teacher)
            result = recover(model, processor, data, teacher=teacher, temperature=args.temperature,
                             parts=None if args.parts is None else tuple(args.parts), **common, **overrides)
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    _save_outputs(result, processor, output_dir)
    summary = result.summary()
    tmp = output_dir / "train_result.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, output_dir / "train_result.json")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

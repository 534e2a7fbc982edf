"""`make demo`: the `llava-fa` command line, end to end, on the tiny LLaVA-FA model (no network).

1. Build the tiny model (random weights), chat about a generated image, save it (the "dense parent").
2. `llava-fa compress` it (bits, error, the card is written), `llava-fa report` it.
3. Chat with the compressed model (generate), compare its logits with the dense ones; reload the saved
   folder in process and through remote code in a process that cannot import `llava_fa` (identical logits).
4. `llava-fa eval` on a generated POPE fixture (Hub record format) and against the dense parent
   (`--reference`), then `llava-fa card --eval-results` puts both on the card.
5. Print the `llava-fa push` command a user would run next (nothing is uploaded).
6. Real all-MiniLM-L6-v2 weights: bits and error of the Fourier approximation against 4-bit RTN.

Run from the repo root: `HF_HUB_OFFLINE=1 .venv/bin/python scripts/demo.py [--out out/demo]`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from llava_fa.cli import main as llava_fa_cli  # noqa: E402
from llava_fa.fourier import PAPER_SETTINGS, fourier_approximate  # noqa: E402
from llava_fa.modeling import LlavaFAForConditionalGeneration, LlavaFAProcessor  # noqa: E402
from llava_fa.testing import build_tiny_llava_fa, run_without_package  # noqa: E402

#: Compression flags of the demo (the tiny model's matrices are 32-128 wide, so rank 4).
DEMO_FLAGS = ["--rank", "4", "--amplitude-bits", "3", "--phase-bits", "5", "--group-size", "64", "--codebook", "lloyd"]
#: The Hub id the card names as the base model (a placeholder: the demo's parent only exists locally).
DEMO_BASE = "example/tiny-llava-fa"
QUESTION = "What is in the image?"


def cli(*args: str) -> None:
    """Print and run one `llava-fa` command in process; stop the demo if it fails."""
    print(f"\n$ llava-fa {shlex.join(args)}", flush=True)
    code = llava_fa_cli(list(args))
    if code != 0:
        raise SystemExit(f"demo: `llava-fa {args[0]}` failed with status {code}")


def make_image(width: int = 64, height: int = 48) -> Image.Image:
    """A red/green gradient with a white square in the middle (deterministic)."""
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([xx * 255 // (width - 1), yy * 255 // (height - 1), np.full_like(xx, 64)], axis=-1)
    rgb[height // 3: 2 * height // 3, width // 3: 2 * width // 3] = 255
    return Image.fromarray(rgb.astype("uint8"))


def chat_turn(model: LlavaFAForConditionalGeneration, processor: LlavaFAProcessor, image: Image.Image,
              max_new_tokens: int = 12) -> dict:
    """Greedy-generate an answer; return prompt, token counts, answer text and the prompt logits."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=image, text=prompt, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1]:]
    return {"prompt": prompt, "prompt_tokens": inputs["input_ids"].shape[1],
            "image_tokens": int((inputs["input_ids"] == model.config.image_token_id).sum()),
            "answer": processor.decode(new, skip_special_tokens=True), "new_tokens": new.tolist(), "logits": logits}


_REMOTE = """
import json, sys, torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor
folder, image_path, out_path, question = sys.argv[1:5]
model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
inputs = processor(images=Image.open(image_path), text=processor.apply_chat_template(messages, add_generation_prompt=True),
                   return_tensors="pt")
with torch.no_grad():
    torch.save(model(**inputs).logits, out_path)
print(json.dumps({"model_class": type(model).__module__ + "." + type(model).__name__}))
"""


def reload_remote(folder: Path, image: Image.Image, scratch: Path) -> dict:
    """Reload `folder` with trust_remote_code=True in a process without llava_fa; return its class and logits."""
    scratch.mkdir(parents=True, exist_ok=True)
    image_path, logits_path = scratch / "demo_image.png", scratch / "remote_logits.pt"
    image.save(image_path)
    proc = run_without_package(_REMOTE, [str(folder), str(image_path), str(logits_path), QUESTION])
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    info["logits"] = torch.load(logits_path)
    return info


def real_weight_table() -> list[tuple[str, float, float]]:
    """(method, bits/weight, mean relative error) on the 6 real Linear weights of MiniLM layer 0."""
    from llava_fa.testing.minilm import minilm_linear_weights

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import baselines  # the same RTN as the benchmark

    weights = {k: w for k, w in minilm_linear_weights().items() if ".layer.0." in k}
    rows = []
    settings = {
        "fourier, paper mode (rfft2, 4+4, r_max per matrix)": dict(PAPER_SETTINGS, amplitude_bits=4, phase_bits=4),
        "fourier, ours (rfft, 3+5, lloyd, group 64)": dict(amplitude_bits=3, phase_bits=5, codebook="lloyd"),
        "fourier, ours (rfft, 3+5, vq, group 64)": dict(amplitude_bits=3, phase_bits=5, codebook="vq"),
    }
    for label, kw in settings.items():
        results = [fourier_approximate(w, rank=0, **kw) for w in weights.values()]
        bits = sum(r.nbits for r in results) / sum(w.numel() for w in weights.values())
        rows.append((label, bits, sum(r.error for r in results) / len(results)))
    rtn = [baselines.rtn(w, 4, 128) for w in weights.values()]
    rows.append(("round-to-nearest 4-bit, group 128 (fp16 scale+zero)",
                 sum(b for _, b in rtn) / sum(w.numel() for w in weights.values()),
                 sum(float((w - wh).norm() / w.norm()) for (wh, _), w in zip(rtn, weights.values())) / len(rtn)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="folder for everything the demo writes")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    dense_dir, fourier_dir, data_dir = out / "tiny-llava-fa", out / "tiny-llava-fa-fourier", out / "eval-data"
    for previous in (dense_dir, fourier_dir, data_dir, out / "scratch"):  # only what an earlier demo run wrote
        shutil.rmtree(previous, ignore_errors=True)
    t0 = time.perf_counter()

    model, processor = build_tiny_llava_fa(seed=0)
    cfg = model.config
    print(f"[1] tiny LLaVA-FA: CLIP {cfg.vision_config.image_size}px/patch {cfg.vision_config.patch_size} "
          f"(hidden {cfg.vision_config.hidden_size}) -> {cfg.mm_projector_type} projector -> Qwen2 "
          f"(hidden {cfg.text_config.hidden_size}, vocab {cfg.text_config.vocab_size}); "
          f"{sum(p.numel() for p in model.parameters()):,} parameters")
    image = make_image()
    dense_turn = chat_turn(model, processor, image)
    print(f"    chat turn: {dense_turn['prompt_tokens']} prompt tokens ({dense_turn['image_tokens']} image tokens); "
          f"answer (random weights, so gibberish): {dense_turn['answer']!r}")
    model.save_pretrained(dense_dir)
    processor.save_pretrained(dense_dir)
    print(f"    saved the dense parent to {dense_dir}")

    print("\n[2] compress and report through the command line")
    cli("compress", str(dense_dir), str(fourier_dir), *DEMO_FLAGS, "--base-model", DEMO_BASE)
    cli("report", str(fourier_dir))
    print("    (the tiny model's 32-128-wide matrices make the rank-4 factors and the float32 lm_head dominate,"
          " so the whole-model ratio is below 1; see README for Qwen2.5-7B sizes)")

    print("\n[3] the compressed folder: generate, reload in process and through remote code")
    quant = LlavaFAForConditionalGeneration.from_pretrained(fourier_dir).eval()
    quant_turn = chat_turn(quant, processor, image)
    rel = float((quant_turn["logits"] - dense_turn["logits"]).norm() / dense_turn["logits"].norm())
    print(f"    compressed chat turn: answer {quant_turn['answer']!r}; prompt logits differ from dense by {rel:.3%}")
    again = chat_turn(LlavaFAForConditionalGeneration.from_pretrained(fourier_dir).eval(), processor, image)
    same_reload = torch.equal(again["logits"], quant_turn["logits"])
    remote = reload_remote(fourier_dir, image, out / "scratch")
    same_remote = torch.equal(remote["logits"], quant_turn["logits"])
    print(f"    reloaded in process: logits identical {same_reload}; with trust_remote_code=True in a process "
          f"without llava_fa ({remote['model_class']}): identical {same_remote}")

    print("\n[4] evaluate (generated POPE fixture in the Hub's record format; random weights, so the score is noise)")
    from llava_fa.evaluation.synthetic import write_synthetic_task

    write_synthetic_task("pope", data_dir / "pope", n=6)
    results, fidelity = out / "eval_results.json", out / "eval_fidelity.json"
    cli("eval", str(fourier_dir), "--tasks", "pope", "--data", str(data_dir), "--batch-size", "3",
        "--output", str(results), "--device", "cpu")
    cli("eval", str(fourier_dir), "--reference", str(dense_dir), "--limit", "4", "--output", str(fidelity),
        "--device", "cpu")
    cli("card", str(fourier_dir), "--base-model", DEMO_BASE, "--eval-results", str(results), str(fidelity),
        "--repo-id", "your-name/tiny-llava-fa-fourier")
    card = (fourier_dir / "README.md").read_text()
    metadata = card.split("---\n")[1]
    quality = card.split("## Quality against the parent model")[1].split("## How to use")[0].strip()
    print("    README.md metadata:\n" + "\n".join("      " + line for line in metadata.splitlines()[:14]) + "\n      ...")
    print("    README.md quality section:\n" + "\n".join("      " + line for line in quality.splitlines()))

    print("\n[5] next step (not run: it needs the network and a token from `hf auth login`):")
    print(f"    llava-fa push {fourier_dir} your-name/tiny-llava-fa-fourier --private")

    print("\n[6] real all-MiniLM-L6-v2 weights (layer 0, 6 matrices), rank 0:")
    for label, bits, err in real_weight_table():
        print(f"    {label:<55} {bits:5.3f} bits/weight  relative error {err:.4f}")
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return 0 if (same_reload and same_remote) else 1


if __name__ == "__main__":
    raise SystemExit(main())

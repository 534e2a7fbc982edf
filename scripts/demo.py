"""`make demo`: build the tiny LLaVA-FA model, chat about a generated image, save it, reload it
through remote code in a process where `llava_fa` is not importable, and compare logits; then
compress it on load with `FourierApproxConfig`, report bits and error, generate, save the
compressed model and reload it (in process and through remote code); finally compress real
all-MiniLM-L6-v2 weights and compare with 4-bit round-to-nearest at about the same bits.

Run from the repo root: `HF_HUB_OFFLINE=1 .venv/bin/python scripts/demo.py [--out out/demo]`.
Each step is a function so later steps (e.g. compression) can be appended in `main`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from llava_fa.fourier import PAPER_SETTINGS, fourier_approximate  # noqa: E402
from llava_fa.modeling import LlavaFAForConditionalGeneration, LlavaFAProcessor, build_tiny_llava_fa  # noqa: E402
from llava_fa.modeling.isolation import run_without_package  # noqa: E402
from llava_fa.quantization import FourierApproxConfig, compression_report, is_fourier_linear  # noqa: E402

#: Compression settings of the demo (the tiny model's matrices are 32-128 wide, so rank 4).
DEMO_QUANT = dict(rank=4, amplitude_bits=3, phase_bits=5, group_size=64, codebook="lloyd")

QUESTION = "What is in the image?"


def make_image(width: int = 64, height: int = 48) -> Image.Image:
    """A red/green gradient with a white square in the middle (deterministic)."""
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([xx * 255 // (width - 1), yy * 255 // (height - 1), np.full_like(xx, 64)], axis=-1)
    rgb[height // 3: 2 * height // 3, width // 3: 2 * width // 3] = 255
    return Image.fromarray(rgb.astype("uint8"))


def chat_inputs(processor: LlavaFAProcessor, image: Image.Image, question: str = QUESTION) -> dict:
    """One user turn (image + question) through the chat template and the processor."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    return {"prompt": prompt, "inputs": processor(images=image, text=prompt, return_tensors="pt")}


def chat_turn(model: LlavaFAForConditionalGeneration, processor: LlavaFAProcessor, image: Image.Image,
              max_new_tokens: int = 12) -> dict:
    """Greedy-generate an answer; return prompt, token counts, answer text and the prompt logits."""
    turn = chat_inputs(processor, image)
    inputs = turn["inputs"]
    with torch.no_grad():
        logits = model(**inputs).logits
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1]:]
    return {
        "prompt": turn["prompt"],
        "prompt_tokens": inputs["input_ids"].shape[1],
        "image_tokens": int((inputs["input_ids"] == model.config.image_token_id).sum()),
        "pixel_values": tuple(inputs["pixel_values"].shape),
        "answer": processor.decode(new, skip_special_tokens=True),
        "new_tokens": new.tolist(),
        "logits": logits,
    }


def save(model: LlavaFAForConditionalGeneration, processor: LlavaFAProcessor, out_dir: Path) -> list[str]:
    """Save model + processor (safetensors, auto_map, flat remote code); return the file names."""
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return sorted(p.name for p in out_dir.iterdir() if p.is_file())


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
    logits = model(**inputs).logits
torch.save(logits, out_path)
print(json.dumps({"model_class": type(model).__module__ + "." + type(model).__name__}))
"""


def reload_remote(out_dir: Path, image: Image.Image) -> dict:
    """Reload `out_dir` with trust_remote_code=True in a process without llava_fa; return its logits."""
    image_path, logits_path = out_dir / "demo_image.png", out_dir / "remote_logits.pt"
    image.save(image_path)
    proc = run_without_package(_REMOTE, [str(out_dir), str(image_path), str(logits_path), QUESTION])
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    info["logits"] = torch.load(logits_path)
    image_path.unlink()
    logits_path.unlink()
    return info


def compress_on_load(folder: Path) -> LlavaFAForConditionalGeneration:
    """Load `folder` with a FourierApproxConfig: every Linear but lm_head becomes a FourierLinear."""
    config = FourierApproxConfig(**DEMO_QUANT)
    return LlavaFAForConditionalGeneration.from_pretrained(folder, quantization_config=config).eval()


def converted_by_tower(model: LlavaFAForConditionalGeneration) -> dict[str, int]:
    """How many FourierLinear modules each part of the model holds."""
    counts = {"vision_tower": 0, "multi_modal_projector": 0, "language_model": 0, "lm_head": 0}
    for name, module in model.named_modules():
        if is_fourier_linear(module):
            part = next((p for p in counts if p in name), "other")
            counts[part] = counts.get(part, 0) + 1
    return counts


def real_weight_table() -> list[tuple[str, float, float]]:
    """(method, bits/weight, mean relative error) on the 6 real Linear weights of MiniLM layer 0."""
    from llava_fa.reference import minilm_linear_weights

    sys_path = Path(__file__).resolve().parents[1] / "benchmarks"
    import sys

    sys.path.insert(0, str(sys_path))
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
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="folder to save the tiny model into")
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    t0 = time.perf_counter()

    model, processor = build_tiny_llava_fa(seed=0)
    cfg = model.config
    n_params = sum(p.numel() for p in model.parameters())
    print(f"[1] built tiny LLaVA-FA: CLIP {cfg.vision_config.image_size}px/patch {cfg.vision_config.patch_size} "
          f"(hidden {cfg.vision_config.hidden_size}) -> {cfg.mm_projector_type} projector -> Qwen2 "
          f"(hidden {cfg.text_config.hidden_size}, vocab {cfg.text_config.vocab_size}); {n_params:,} parameters")

    image = make_image()
    turn = chat_turn(model, processor, image)
    print(f"[2] chat turn on a {image.size[0]}x{image.size[1]} generated image -> pixel_values {turn['pixel_values']}")
    print("    prompt:", repr(turn["prompt"]))
    print(f"    {turn['prompt_tokens']} prompt tokens, {turn['image_tokens']} of them image tokens")
    print(f"    answer (random weights, so gibberish): {turn['answer']!r}  ids={turn['new_tokens']}")

    files = save(model, processor, args.out)
    print(f"[3] saved to {args.out}: {', '.join(files)}")

    remote = reload_remote(args.out, image)
    diff = (remote["logits"] - turn["logits"]).abs().max().item()
    same = torch.equal(remote["logits"], turn["logits"])
    print(f"[4] reloaded with trust_remote_code=True in a process without llava_fa: {remote['model_class']}")
    print(f"    logits identical: {same} (max abs diff {diff:.3g})")

    quant = compress_on_load(args.out)
    print(f"[5] from_pretrained(..., quantization_config=FourierApproxConfig({', '.join(f'{k}={v!r}' for k, v in DEMO_QUANT.items())}))")
    print(f"    FourierLinear modules per part: {converted_by_tower(quant)}")
    report = compression_report(quant)
    print("\n".join("    " + line for line in str(report).splitlines()))
    print("    (the tiny model's 32-128-wide matrices make the rank-4 factors and the float32 biases dominate;"
          " see README for Qwen2.5-7B sizes)")
    qturn = chat_turn(quant, processor, image)
    rel = float((qturn["logits"] - turn["logits"]).norm() / turn["logits"].norm())
    print(f"    compressed chat turn: answer {qturn['answer']!r}; prompt logits differ from dense by {rel:.3%} (relative)")

    quant_dir = args.out.with_name(args.out.name + "-fourier")
    qfiles = save(quant, processor, quant_dir)
    reloaded = LlavaFAForConditionalGeneration.from_pretrained(quant_dir).eval()
    same_q = torch.equal(chat_turn(reloaded, processor, image)["logits"], qturn["logits"])
    remote_q = reload_remote(quant_dir, image)
    same_remote_q = torch.equal(remote_q["logits"], qturn["logits"])
    print(f"[6] saved compressed model to {quant_dir} ({len(qfiles)} files); reloaded pre-quantized: logits identical "
          f"{same_q}; through remote code without llava_fa: identical {same_remote_q}")

    print("[7] real all-MiniLM-L6-v2 weights (layer 0, 6 matrices), rank 0:")
    for label, bits, err in real_weight_table():
        print(f"    {label:<55} {bits:5.3f} bits/weight  relative error {err:.4f}")
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return 0 if (same and same_q and same_remote_q) else 1


if __name__ == "__main__":
    raise SystemExit(main())

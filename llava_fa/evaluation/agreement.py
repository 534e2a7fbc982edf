"""Fidelity without labels: how closely a compressed model follows its dense parent.

For each prompt the *reference* (dense) model decodes greedily up to ``max_new_tokens`` tokens;
then both models read prompt + that continuation in one teacher-forced pass and their next-token
distributions are compared at every continuation position:

* ``token_agreement``: share of positions where both models' most likely token is the same;
* ``mean_kl``: mean ``KL(p_reference || p_model)`` in nats (float64 on CPU);

so a model compared with itself scores exactly 1.0 and 0.0. Prompts are ``{"text": str}`` or
``{"text": str, "image": PIL image | path | bytes}``; without prompts a built-in set of text
prompts and generated images (:func:`default_prompts`) is used.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from .data import to_pil
from .generation import chat_text
from .io import write_json_atomic

__all__ = ["fidelity", "fidelity_path", "default_prompts"]

_TEXT_PROMPTS = [
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "List three colours.",
    "How many legs does a cat have?",
]
_IMAGE_PROMPTS = [
    "What is in the image? Describe the picture in one sentence.",
    "What color is the square in the middle?",
    "Is there a circle in the image? Answer yes or no.",
    "How many shapes are in the picture?",
]


def _image(kind: int, size: int = 96):
    """A deterministic synthetic picture: gradient background plus coloured shapes."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size))
    pixels = image.load()
    for y in range(size):
        for x in range(size):
            pixels[x, y] = ((x * 255) // size, (y * 255) // size, (kind * 60) % 256)
    draw = ImageDraw.Draw(image)
    colours = [(220, 30, 30), (30, 200, 60), (40, 60, 230), (240, 220, 40)]
    q = size // 4
    if kind % 2 == 0:
        draw.rectangle([q, q, 3 * q, 3 * q], fill=colours[kind % 4])
    else:
        draw.ellipse([q, q, 3 * q, 3 * q], fill=colours[kind % 4])
    for i in range(kind):
        draw.rectangle([4 + 12 * i, size - 12, 12 + 12 * i, size - 4], fill=colours[(kind + i) % 4])
    return image


def default_prompts() -> list[dict[str, Any]]:
    """The built-in prompt set: 4 text-only prompts and 4 prompts on generated images."""
    return [{"text": t} for t in _TEXT_PROMPTS] + [{"text": t, "image": _image(i)} for i, t in enumerate(_IMAGE_PROMPTS)]


def _device(model: Any) -> torch.device:
    device = getattr(model, "device", None)
    return device if isinstance(device, torch.device) else next(model.parameters()).device


def _inputs(processor: Any, prompt: dict[str, Any]) -> dict[str, torch.Tensor]:
    if not isinstance(prompt, dict) or not isinstance(prompt.get("text"), str):
        raise TypeError(f"Each prompt must be a dict with a 'text' str (and optionally 'image'), got {prompt!r:.80}.")
    image = prompt.get("image")
    text = chat_text(processor, prompt["text"], with_image=image is not None)
    if image is None:
        return dict(processor(text=[text], return_tensors="pt"))
    return dict(processor(text=[text], images=[to_pil(image)], return_tensors="pt"))


def _until_eos(tokens: torch.Tensor, model: Any) -> torch.Tensor:
    """``tokens`` up to and including the first end-of-sequence token of ``model``'s generation config."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    hits = torch.isin(tokens, torch.tensor(eos, dtype=tokens.dtype)).nonzero() if eos else []
    return tokens[: int(hits[0]) + 1] if len(hits) else tokens


def _logits(model: Any, inputs: dict[str, torch.Tensor], positions: slice) -> torch.Tensor:
    device = _device(model)
    batch = {k: v.to(device) for k, v in inputs.items()}
    logits = model(**batch).logits[0, positions]
    return logits.detach().to("cpu", torch.float64)


@torch.inference_mode()
def fidelity(
    model: Any,
    reference: Any,
    processor: Any,
    prompts: Sequence[dict[str, Any]] | None = None,
    *,
    max_new_tokens: int = 16,
) -> dict[str, Any]:
    """Agreement of ``model`` with ``reference`` (its dense parent) on ``prompts``.

    Returns ``{"token_agreement": float in [0, 1], "mean_kl": float >= 0 (nats), "n_prompts": int,
    "n_tokens": int, "per_prompt": [{"token_agreement", "mean_kl", "n_tokens"}, ...]}``; the means
    are over all compared tokens. Raises ``ValueError`` if the two models' vocabularies differ or
    ``prompts`` is empty.
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}.")
    prompts = default_prompts() if prompts is None else list(prompts)
    if not prompts:
        raise ValueError("prompts is empty; give at least one {'text': ...} prompt or None for the built-in set.")
    per_prompt = []
    agree_total, kl_total, tokens_total = 0, 0.0, 0
    for prompt in prompts:
        inputs = _inputs(processor, prompt)
        n_prompt = inputs["input_ids"].shape[1]
        ref_device = _device(reference)
        generated = reference.generate(**{k: v.to(ref_device) for k, v in inputs.items()}, do_sample=False,
                                       max_new_tokens=max_new_tokens)[0, n_prompt:].cpu()
        generated = _until_eos(generated, reference)
        n_new = int(generated.numel())
        if n_new == 0:
            continue
        full = dict(inputs)
        full["input_ids"] = torch.cat([inputs["input_ids"], generated[None]], dim=1)
        full["attention_mask"] = torch.ones_like(full["input_ids"])
        positions = slice(n_prompt - 1, n_prompt - 1 + n_new)
        ref_logits = _logits(reference, full, positions)
        logits = _logits(model, full, positions)
        if logits.shape != ref_logits.shape:
            raise ValueError(f"The models' vocabularies differ ({logits.shape[-1]} vs {ref_logits.shape[-1]} "
                             f"logits); compare a model with its own parent.")
        ref_logp = torch.log_softmax(ref_logits, dim=-1)
        logp = torch.log_softmax(logits, dim=-1)
        kl = (ref_logp.exp() * (ref_logp - logp)).sum(-1).clamp_min(0.0)
        agree = int((logits.argmax(-1) == ref_logits.argmax(-1)).sum())
        per_prompt.append({"token_agreement": agree / n_new, "mean_kl": float(kl.mean()), "n_tokens": n_new})
        agree_total += agree
        kl_total += float(kl.sum())
        tokens_total += n_new
    if tokens_total == 0:
        raise ValueError("The reference generated no tokens for any prompt; nothing to compare.")
    return {"token_agreement": agree_total / tokens_total, "mean_kl": kl_total / tokens_total,
            "n_prompts": len(prompts), "n_tokens": tokens_total, "max_new_tokens": max_new_tokens,
            "per_prompt": per_prompt}


def fidelity_path(
    model_path: str | os.PathLike,
    reference_path: str | os.PathLike,
    prompts: Sequence[dict[str, Any]] | None = None,
    *,
    max_new_tokens: int = 16,
    device: str | None = None,
    output: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Load a compressed folder and its dense parent (``trust_remote_code=True``) and run :func:`fidelity`.

    The processor comes from ``model_path``. Adds ``"model"`` and ``"reference"`` to the result and
    writes it to ``output`` (JSON, atomically) when given.
    """
    from .runner import _version, load_model_and_processor

    for name, path in (("model", model_path), ("reference", reference_path)):
        if not os.path.isdir(path) and os.path.exists(path):
            raise FileNotFoundError(f"{name} path {path} is not a model folder.")
    model, processor = load_model_and_processor(model_path, device=device)
    reference, _ = load_model_and_processor(reference_path, device=device)
    result = fidelity(model, reference, processor, prompts, max_new_tokens=max_new_tokens)
    result = {"model": str(model_path), "reference": str(reference_path), **result,
              "llava_fa_version": _version()}
    if output is not None:
        write_json_atomic(output, result)
    return result

"""Batched greedy generation for a LLaVA-FA model: chat template, left padding, one image per prompt."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["chat_text", "generate_answers"]


def chat_text(processor: Any, prompt: str, with_image: bool) -> str:
    """The processor's chat template for one user turn (image first, as LLaVA) plus the assistant header."""
    content: Any = [{"type": "image"}, {"type": "text", "text": prompt}] if with_image else prompt
    return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                         tokenize=False)


def _device(model: torch.nn.Module) -> torch.device:
    device = getattr(model, "device", None)
    return device if isinstance(device, torch.device) else next(model.parameters()).device


@torch.inference_mode()
def generate_answers(
    model: Any,
    processor: Any,
    prompts: Sequence[str],
    images: Sequence[Any] | None = None,
    *,
    max_new_tokens: int = 16,
    batch_size: int = 8,
    progress: bool = True,
    description: str = "generating",
) -> list[str]:
    """Greedy answers (decoded, special tokens dropped, stripped) for ``prompts[i]`` with ``images[i]``.

    ``images``: one PIL image per prompt, or ``None`` for text-only prompts. Prompts are batched
    ``batch_size`` at a time with left padding (the tokenizer's side is restored afterwards), so
    results do not depend on the batch size beyond floating-point effects of padding. The progress
    bar shows when ``progress`` is true and ``HF_HUB_DISABLE_PROGRESS_BARS`` is not set.
    """
    from huggingface_hub.utils import are_progress_bars_disabled
    from tqdm.auto import tqdm

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}.")
    if images is not None and len(images) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(images)} images; give one image per prompt or None.")
    tokenizer = processor.tokenizer
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    device = _device(model)
    answers: list[str] = []
    try:
        hidden = not progress or are_progress_bars_disabled()
        with tqdm(total=len(prompts), desc=description, unit="sample", disable=hidden) as bar:
            for start in range(0, len(prompts), batch_size):
                batch_prompts = prompts[start:start + batch_size]
                texts = [chat_text(processor, p, images is not None) for p in batch_prompts]
                kwargs: dict[str, Any] = {"text": texts, "padding": True, "return_tensors": "pt"}
                if images is not None:
                    kwargs["images"] = list(images[start:start + batch_size])
                inputs = processor(**kwargs).to(device)
                output = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens)
                new_tokens = output[:, inputs["input_ids"].shape[1]:]
                answers.extend(a.strip() for a in tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
                bar.update(len(batch_prompts))
    finally:
        tokenizer.padding_side = side
    return answers

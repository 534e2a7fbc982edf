"""Tiny LLaVA-FA models for tests, the demo and other issues' tests (no download, a few seconds).

* `build_tiny_tokenizer()`: a byte-level BPE `Qwen2Tokenizer` (Qwen's pre-tokenizer) trained on a
  fixed corpus, deterministic; special tokens `<|endoftext|>`=0, `<|im_start|>`=1, `<|im_end|>`=2,
  `<image>`=3; `len(tokenizer) <= TINY_VOCAB_SIZE`.
* `build_tiny_processor()`, `build_tiny_llava_fa(seed)`, `save_tiny_llava_fa(path, seed)`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import GenerationConfig, Qwen2Tokenizer
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

from ..modeling.configuration_llava_fa import TINY_VOCAB_SIZE, LlavaFAConfig
from ..modeling.modeling_llava_fa import LlavaFAForConditionalGeneration
from ..modeling.processing_llava_fa import LlavaFAProcessor

TINY_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"]

_CORPUS = [
    "You are a helpful assistant.",
    "What is in the image? Describe the picture in one sentence.",
    "The image shows a red and blue gradient with a bright square in the middle.",
    "A cat sits on a wooden table next to a cup of coffee.",
    "There are two dogs playing with a ball in the green park.",
    "What color is the sky? The sky is blue and the clouds are white.",
    "How many people are in the photo? There are three people.",
    "Describe the scene. A street with cars, trees and a tall building.",
    "Answer the question using a single word or phrase.",
    "system user assistant yes no left right top bottom small large",
    "0 1 2 3 4 5 6 7 8 9 10 100",
]


def build_tiny_tokenizer() -> Qwen2Tokenizer:
    """Deterministic tiny Qwen2 tokenizer (eos `<|im_end|>`, pad `<|endoftext|>`, `<image>` special)."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(PRETOKENIZE_REGEX, behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE,
        special_tokens=TINY_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS * 4, trainer=trainer)
    state = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    tokenizer = Qwen2Tokenizer(
        vocab=state["vocab"],
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=["<|im_start|>", "<image>"],
    )
    tokenizer.padding_side = "left"
    ids = tokenizer.convert_tokens_to_ids(TINY_SPECIAL_TOKENS)
    if ids != list(range(len(TINY_SPECIAL_TOKENS))) or len(tokenizer) > TINY_VOCAB_SIZE:
        raise RuntimeError(f"tiny tokenizer special ids {ids} / size {len(tokenizer)} drifted; fix the builder.")
    return tokenizer


def build_tiny_processor() -> LlavaFAProcessor:
    """Processor for the "tiny" preset: 28 px images (padded to square), 4 image tokens per image."""
    config = LlavaFAConfig.from_preset("tiny")
    return LlavaFAProcessor.from_model_config(config, build_tiny_tokenizer())


def build_tiny_llava_fa(seed: int = 0) -> tuple[LlavaFAForConditionalGeneration, LlavaFAProcessor]:
    """A randomly initialised (seeded) tiny model in eval mode and its processor."""
    processor = build_tiny_processor()
    config = LlavaFAConfig.from_preset("tiny")
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = LlavaFAForConditionalGeneration(config).eval()
    finally:
        torch.random.set_rng_state(generator_state)
    tok = processor.tokenizer
    model.generation_config = GenerationConfig(
        eos_token_id=[tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")],
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
        do_sample=False,
    )
    return model, processor


def save_tiny_llava_fa(path: str | os.PathLike, seed: int = 0) -> Path:
    """Build the tiny model + processor and save both (safetensors, auto_map, remote code) into `path`."""
    path = Path(path)
    model, processor = build_tiny_llava_fa(seed)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


__all__ = ["build_tiny_tokenizer", "build_tiny_processor", "build_tiny_llava_fa", "save_tiny_llava_fa",
           "TINY_SPECIAL_TOKENS"]

"""LlavaFAProcessor: tiny tokenizer, <image> expansion, pad-to-square, chat template, labels, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import gradient_image
from PIL import Image
from transformers import AutoProcessor, AutoTokenizer
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from llava_fa.modeling import (
    CHAT_TEMPLATE,
    LlavaFAConfig,
    LlavaFAProcessor,
    build_image_processor,
)
from llava_fa.testing import build_tiny_processor, build_tiny_tokenizer

IMG = 3


@pytest.fixture(scope="module")
def processor():
    return build_tiny_processor()


def test_tiny_tokenizer_is_deterministic_with_qwen_special_tokens():
    a, b = build_tiny_tokenizer(), build_tiny_tokenizer()
    assert a.get_vocab() == b.get_vocab() and len(a) == 384
    assert a.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"]) == [0, 1, 2, 3]
    assert (a.eos_token, a.pad_token, a.padding_side) == ("<|im_end|>", "<|endoftext|>", "left")
    text = "<|im_start|>user\n<image>\nWhat is in the image?<|im_end|>"
    ids = a(text)["input_ids"]
    assert ids[0] == 1 and ids[-1] == 2 and ids.count(IMG) == 1
    assert a.decode(ids) == text  # byte-level BPE: lossless


def test_one_image_expands_to_patch_grid_tokens(processor):
    out = processor(images=gradient_image(), text="Look: <image>\nWhat?", return_tensors="pt")
    assert out["pixel_values"].shape == (1, 3, 28, 28) and out["pixel_values"].dtype == torch.float32
    assert (out["input_ids"] == IMG).sum() == (28 // 14) ** 2 == processor.num_image_tokens(28, 28) == 4
    # the 4 image tokens are contiguous, where <image> was
    pos = (out["input_ids"][0] == IMG).nonzero().flatten()
    assert torch.equal(pos, torch.arange(pos[0], pos[0] + 4))


def test_batch_with_several_images_per_prompt(processor):
    texts = ["<image><image> compare", "<image> one"]
    images = [gradient_image(seed=1), gradient_image(seed=2), gradient_image(seed=3)]
    out = processor(images=images, text=texts, padding=True, return_tensors="pt")
    assert out["pixel_values"].shape == (3, 3, 28, 28)
    assert (out["input_ids"] == IMG).sum(dim=1).tolist() == [8, 4]
    assert out["attention_mask"][:, -1].all()  # left padding for batched generation


def test_full_strategy_keeps_cls_token():
    tiny = build_tiny_processor()
    full = LlavaFAProcessor(tiny.image_processor, tiny.tokenizer, patch_size=14, vision_feature_select_strategy="full")
    out = full(images=gradient_image(), text="<image>", return_tensors="pt")
    assert (out["input_ids"] == IMG).sum() == 5
    assert LlavaFAConfig.from_preset("tiny", vision_feature_select_strategy="full").num_image_tokens == 5


def test_pad_to_square_uses_clip_mean_colour(processor):
    black_wide = Image.fromarray(np.zeros((28, 56, 3), dtype=np.uint8))  # h=28, w=56
    padded = processor(images=black_wide, text="<image>", return_tensors="pt")["pixel_values"][0]
    mean = torch.tensor(OPENAI_CLIP_MEAN).view(3, 1)
    std = torch.tensor(OPENAI_CLIP_STD).view(3, 1)
    black = (0 - mean) / std
    # padded 56x56 (mean colour above and below), resized to 28: rows 0-6 and 21-27 are the padding
    assert (padded[:, :5].reshape(3, -1).abs() < 0.02).all()
    assert (padded[:, -5:].reshape(3, -1).abs() < 0.02).all()
    assert torch.allclose(padded[:, 9:19].reshape(3, -1), black.expand(3, 280), atol=0.02)
    cropped = build_image_processor(28, pad_to_square=False)(black_wide, return_tensors="pt")["pixel_values"][0]
    assert torch.allclose(cropped.reshape(3, -1), black.expand(3, 784), atol=0.02)  # center crop: all black


@pytest.mark.parametrize(
    "text, n_images, match",
    [
        ("no placeholder", 1, "Found total 0 <image> tokens and 1 images"),
        ("<image> <image>", 1, "Found total 2 <image> tokens and 1 images"),
        ("<image>", 0, "Found 1 <image> tokens in the text but no images"),
    ],
)
def test_processor_rejects_image_placeholder_mismatch(processor, text, n_images, match):
    images = [gradient_image()] * n_images or None
    with pytest.raises(ValueError, match=match):
        processor(images=images, text=text)


def test_chat_template_string_is_qwen25_format(processor):
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the image?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
        {"role": "user", "content": "And the colour?"},
    ]
    assert processor.apply_chat_template(messages, add_generation_prompt=True) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<image>\nWhat is in the image?<|im_end|>\n"
        "<|im_start|>assistant\nA cat.<|im_end|>\n"
        "<|im_start|>user\nAnd the colour?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert processor.apply_chat_template(system) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n")
    assert processor.chat_template == CHAT_TEMPLATE


def test_chat_template_tokenized_with_images_and_llava_labels(processor):
    conversation = [
        {"role": "user", "content": [{"type": "image", "image": gradient_image()},
                                     {"type": "text", "text": "What is in the image?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
    ]
    out = processor.apply_chat_template(conversation, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True, return_tensors="pt")
    assert out["pixel_values"].shape == (1, 3, 28, 28) and (out["input_ids"] == IMG).sum() == 4
    labels = processor.build_labels(out["input_ids"], out["assistant_masks"])
    kept = labels[0] != -100
    # LLaVA trains on the assistant reply and its <|im_end|> only: system, user, image tokens masked
    assert processor.tokenizer.decode(out["input_ids"][0][kept]) == "A cat.<|im_end|>"
    assert (labels[out["input_ids"] == IMG] == -100).all()
    assert torch.equal(labels[0][kept], out["input_ids"][0][kept])


def test_processor_save_load_roundtrip(tmp_path, processor):
    processor.save_pretrained(tmp_path)
    assert {"processor_config.json", "chat_template.jinja", "tokenizer.json", "processing_llava_fa.py"} <= {
        p.name for p in tmp_path.iterdir()}
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is LlavaFAProcessor and loaded.chat_template == CHAT_TEMPLATE
    assert loaded.image_processor.do_pad and loaded.patch_size == 14
    a = processor(images=gradient_image(), text="<image> hi", return_tensors="pt")
    b = loaded(images=gradient_image(), text="<image> hi", return_tensors="pt")
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["pixel_values"], b["pixel_values"])
    assert AutoTokenizer.from_pretrained(tmp_path).get_vocab() == processor.tokenizer.get_vocab()


def test_from_model_config_checks_image_token_id():
    tok = build_tiny_tokenizer()
    with pytest.raises(ValueError, match="maps '<image>' to id 3 but the model config expects image_token_id=5"):
        LlavaFAProcessor.from_model_config(LlavaFAConfig.from_preset("tiny", image_token_index=5), tok)


def _word_level_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({"[UNK]": 0, "<": 1, "image": 2, ">": 3, "hi": 4}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    return PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]")


def test_from_model_config_adds_missing_image_token():
    tok = _word_level_tokenizer()
    assert len(tok("<image>")["input_ids"]) == 3
    proc = LlavaFAProcessor.from_model_config(LlavaFAConfig.from_preset("tiny", image_token_index=5), tok)
    assert proc.image_token_id == 5 and tok("hi <image>")["input_ids"] == [4, 5]
    assert tok.padding_side == "left"
    out = proc(images=gradient_image(), text="hi <image>", return_tensors="pt")
    assert out["input_ids"].tolist() == [[4, 5, 5, 5, 5]]


def test_tokenizer_without_special_image_token_is_rejected():
    with pytest.raises(ValueError, match="splits '<image>' into 3 tokens; add it as a special token"):
        LlavaFAProcessor(build_image_processor(28), _word_level_tokenizer())

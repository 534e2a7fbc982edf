"""Shared fixtures: tiny LLaVA-FA models saved in tmp dirs, and the real all-MiniLM-L6-v2 weights.

Nothing here downloads: HF_HUB_OFFLINE=1 is set before transformers is imported.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_MODULES_CACHE", tempfile.mkdtemp(prefix="llava_fa_hf_modules_"))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402


def correlated_layer(m: int = 48, n: int = 64, tokens: int = 512, seed: int = 0):
    """A weight ``(m, n)`` and correlated inputs ``(tokens, n)`` with a few loud channels (like transformer
    activations): the matrices the calibration and error-feedback tests compress."""
    import torch

    g = torch.Generator().manual_seed(seed)
    w = torch.randn(m, n, generator=g) * 0.05
    mix = torch.randn(n, n, generator=g) / n**0.5 + torch.eye(n)
    loud = torch.ones(n)
    loud[:4] = 8.0
    x = (torch.randn(tokens, n, generator=g) @ mix) * loud
    return w, x


def tiny_qwen2_lm(loud_channels: bool = False, **config):
    """A seeded Qwen2 LM in eval mode: 1 layer, vocab 96, width 32 unless `config` overrides Qwen2Config fields;
    `loud_channels`: the first 4 input channels of the first layer's decoder norms scaled by 8 (non-white
    activations, as in trained models)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    fields = dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                  num_key_value_heads=2, tie_word_embeddings=False)
    model = Qwen2ForCausalLM(Qwen2Config(**{**fields, **config})).eval()
    if loud_channels:
        with torch.no_grad():
            model.model.layers[0].input_layernorm.weight[:4] = 8.0
            model.model.layers[0].post_attention_layernorm.weight[:4] = 8.0
    return model


def token_batches(seed: int, n: int = 3) -> list[dict]:
    """`n` seeded batches of 2 x 12 token ids for :func:`tiny_qwen2_lm`."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return [dict(input_ids=torch.randint(0, 96, (2, 12), generator=g)) for _ in range(n)]


def gradient_image(width: int = 40, height: int = 30, seed: int = 0) -> Image.Image:
    """A deterministic RGB gradient (plus a seeded tint) as a PIL image."""
    yy, xx = np.mgrid[0:height, 0:width]
    tint = np.random.default_rng(seed).integers(0, 64, size=3)
    rgb = np.stack([xx * 255 // max(width - 1, 1), yy * 255 // max(height - 1, 1), (xx + yy) % 256], axis=-1)
    return Image.fromarray(((rgb + tint) % 256).astype("uint8"))


@pytest.fixture(scope="session")
def tiny_model_and_processor():
    """(model, processor) of the "tiny" preset, seed 0, eval mode. Do not mutate the model in tests."""
    from llava_fa.testing import build_tiny_llava_fa

    return build_tiny_llava_fa(seed=0)


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    """A saved tiny LLaVA-FA folder (model + processor + remote code), seed 0."""
    from llava_fa.testing import save_tiny_llava_fa

    return save_tiny_llava_fa(tmp_path_factory.mktemp("tiny") / "tiny_llava_fa", seed=0)


@pytest.fixture
def image():
    return gradient_image()


@pytest.fixture
def chat_inputs(tiny_model_and_processor):
    """Processor output (return_tensors="pt") for one user turn with one image, generation prompt added."""
    _, processor = tiny_model_and_processor
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the image?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    return processor(images=gradient_image(), text=text, return_tensors="pt")


# ---------------------------------------------------------------- real all-MiniLM-L6-v2 weights
MINILM_LAYER = "encoder.layer.0.intermediate.dense.weight"


@pytest.fixture(scope="session")
def minilm_weights():
    from llava_fa.testing.minilm import minilm_linear_weights

    return minilm_linear_weights()


@pytest.fixture(scope="session")
def minilm_weight(minilm_weights):
    return minilm_weights["encoder.layer.0.attention.self.query.weight"]


@pytest.fixture(scope="session")
def minilm_layer(minilm_weights):
    """(weight (1536, 384), calibration inputs, held-out inputs) of a real FFN layer."""
    from llava_fa.testing.minilm import SENTENCES, minilm_linear_inputs

    cal = minilm_linear_inputs(SENTENCES[:8])[MINILM_LAYER]
    held_out = minilm_linear_inputs(SENTENCES[8:])[MINILM_LAYER]
    return minilm_weights[MINILM_LAYER], cal, held_out

"""Fidelity (token agreement, mean KL) of a model against its dense parent."""

from __future__ import annotations

import copy
import json
import math
import os
from types import SimpleNamespace

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers import GenerationConfig  # noqa: E402

from llava_fa.evaluation import default_prompts, fidelity, fidelity_path  # noqa: E402
from llava_fa.testing import build_tiny_llava_fa, build_tiny_processor, save_tiny_llava_fa  # noqa: E402


class FixedLM(torch.nn.Module):
    """Duck-typed model: appends tokens 5, 6, 7 (7 = eos), then 0 (padding); the same logits everywhere."""

    def __init__(self, logits_row):
        super().__init__()
        self.row = torch.tensor(logits_row, dtype=torch.float32)
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.generation_config = GenerationConfig(eos_token_id=[7])

    def generate(self, input_ids, **kwargs):
        return torch.cat([input_ids, torch.tensor([[5, 6, 7, 0]])], dim=1)

    def forward(self, input_ids, **kwargs):
        return SimpleNamespace(logits=self.row.expand(1, input_ids.shape[1], -1))


def test_hand_computed_kl_and_agreement():
    processor = build_tiny_processor()
    reference = FixedLM([0.0, 0.0])                  # p = (1/2, 1/2), argmax 0
    same_top = FixedLM([math.log(3.0), 0.0])         # p = (3/4, 1/4), argmax 0
    other_top = FixedLM([0.0, math.log(3.0)])        # p = (1/4, 3/4), argmax 1
    kl = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)  # = ln(4/3) / 2
    result = fidelity(same_top, reference, processor, [{"text": "hi"}, {"text": "there"}])
    assert result["token_agreement"] == 1.0 and result["mean_kl"] == pytest.approx(kl, abs=1e-7)
    assert result["n_prompts"] == 2 and result["n_tokens"] == 6  # 5, 6 and the eos; padding dropped
    result = fidelity(other_top, reference, processor, [{"text": "hi"}])
    assert result["token_agreement"] == 0.0 and result["mean_kl"] == pytest.approx(kl, abs=1e-7)
    with pytest.raises(ValueError, match="vocabularies differ"):
        fidelity(FixedLM([0.0, 0.0, 0.0]), reference, processor, [{"text": "hi"}])


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_llava_fa(seed=0)


def test_model_against_itself_and_a_perturbed_copy(tiny):
    model, processor = tiny
    image = default_prompts()[-1]["image"]
    prompts = [{"text": "Describe the scene."}, {"text": "What is in the image?", "image": image}]
    same = fidelity(model, model, processor, prompts, max_new_tokens=6)
    assert same["token_agreement"] == 1.0 and same["mean_kl"] == 0.0
    assert same["n_prompts"] == 2 and len(same["per_prompt"]) == 2 and 2 <= same["n_tokens"] <= 12

    perturbed = copy.deepcopy(model)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in perturbed.parameters():
            p.add_(torch.randn_like(p) * 0.5 * p.std().clamp_min(1e-3))
    diff = fidelity(perturbed, model, processor, prompts, max_new_tokens=6)
    assert diff["mean_kl"] > 0.0 and diff["token_agreement"] < 1.0
    assert diff["n_tokens"] == same["n_tokens"]  # the reference's continuation decides the positions
    with pytest.raises(ValueError, match="prompts is empty"):
        fidelity(model, model, processor, [])
    with pytest.raises(TypeError, match="'text' str"):
        fidelity(model, model, processor, ["just a string"])
    with pytest.raises(ValueError, match="max_new_tokens"):
        fidelity(model, model, processor, prompts, max_new_tokens=0)


def test_default_prompt_set_has_text_and_images():
    prompts = default_prompts()
    assert sum("image" in p for p in prompts) == 4 and sum("image" not in p for p in prompts) == 4
    images = [p["image"] for p in prompts if "image" in p]
    assert all(i.mode == "RGB" and i.size == (96, 96) for i in images)
    assert len({i.tobytes() for i in images}) == 4
    assert default_prompts()[5]["image"].tobytes() == images[1].tobytes()  # deterministic


def test_fidelity_path_compressed_against_dense(tmp_path):
    from llava_fa import FourierApproxConfig, LlavaFAForConditionalGeneration

    dense = save_tiny_llava_fa(tmp_path / "dense", seed=0)
    compressed = LlavaFAForConditionalGeneration.from_pretrained(dense, quantization_config=FourierApproxConfig(
        rank=2, max_iters=1, codebook="uniform"))  # the cheapest settings: this checks plumbing, not quality
    compressed.save_pretrained(tmp_path / "fa")
    build_tiny_processor().save_pretrained(tmp_path / "fa")
    out = tmp_path / "fidelity.json"
    prompts = default_prompts()[3:5]  # one text prompt, one image prompt
    result = fidelity_path(tmp_path / "fa", dense, prompts, max_new_tokens=4, device="cpu", output=out)
    assert result["n_prompts"] == 2 and 0.0 <= result["token_agreement"] <= 1.0 and result["mean_kl"] > 0.0
    assert json.loads(out.read_text())["mean_kl"] == result["mean_kl"]
    assert result["model"] == str(tmp_path / "fa") and result["reference"] == str(dense)

"""LlavaFAConfig presets and LlavaFAForConditionalGeneration on the tiny preset (CPU, seconds)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import gradient_image
from transformers import (
    AutoModelForImageTextToText,
    CLIPConfig,
    CLIPModel,
    LlavaForConditionalGeneration,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from llava_fa.modeling import LlavaFAConfig, LlavaFAForConditionalGeneration
from llava_fa.testing import build_tiny_llava_fa

IMG = 3  # tiny image token id


def _ids(*rows):
    return torch.tensor(rows, dtype=torch.long)


# ---------------------------------------------------------------- config & presets
def test_tiny_preset_forward_with_image(tiny_model_and_processor):
    model, _ = tiny_model_and_processor
    cfg = model.config
    assert cfg.model_type == "llava_fa" and cfg.image_token_id == IMG
    assert cfg.num_image_tokens == cfg.image_seq_length == (28 // 14) ** 2 == 4
    assert sum(p.numel() for p in model.parameters()) * 4 < 5 * 2**20  # a few MB in fp32
    ids = _ids([5, 6, IMG, IMG, IMG, IMG, 7, 8])
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=torch.randn(1, 3, 28, 28))
    assert out.logits.shape == (1, 8, 384) and torch.isfinite(out.logits).all()
    feats = out.image_outputs.pooler_output
    assert len(feats) == 1 and feats[0].shape == (4, 64)  # CLS dropped, projected to text hidden


QWEN25 = {  # name: hidden, intermediate, layers, heads, kv heads, vocab, tied, exact LM params
    "qwen2.5-0.5b": (896, 4864, 24, 14, 2, 151936, True, 494_032_768),
    "qwen2.5-1.5b": (1536, 8960, 28, 12, 2, 151936, True, 1_543_714_304),
    "qwen2.5-3b": (2048, 11008, 36, 16, 2, 151936, True, 3_085_938_688),
    "qwen2.5-7b": (3584, 18944, 28, 28, 4, 152064, False, 7_615_616_512),
}


@pytest.mark.parametrize("name", sorted(QWEN25))
def test_real_presets_have_published_dimensions(name):
    hidden, inter, layers, heads, kv, vocab, tied, n_lm = QWEN25[name]
    cfg = LlavaFAConfig.from_preset(name)
    t, v = cfg.text_config, cfg.vision_config
    assert (t.hidden_size, t.intermediate_size, t.num_hidden_layers) == (hidden, inter, layers)
    assert (t.num_attention_heads, t.num_key_value_heads, t.vocab_size) == (heads, kv, vocab)
    assert t.rope_parameters["rope_theta"] == 1e6 and t.rms_norm_eps == 1e-6
    assert t.max_position_embeddings == 32768 and t.tie_word_embeddings is tied and cfg.tie_word_embeddings is tied
    # CLIP ViT-L/14-336
    assert (v.hidden_size, v.num_hidden_layers, v.num_attention_heads, v.intermediate_size) == (1024, 24, 16, 4096)
    assert (v.image_size, v.patch_size, v.hidden_act, v.projection_dim) == (336, 14, "quick_gelu", 768)
    assert cfg.image_seq_length == 576 and cfg.vision_feature_layer == -2
    assert cfg.vision_feature_select_strategy == "default" and cfg.mm_projector_type == "mlp2x_gelu"
    assert cfg.image_token_id == 151665 < vocab and cfg.projector_dims == (1024, hidden)
    with torch.device("meta"):
        model = LlavaFAForConditionalGeneration(cfg)
    lm = sum(p.numel() for p in model.model.language_model.parameters())
    lm += 0 if tied else model.lm_head.weight.numel()
    assert lm == n_lm  # exact published parameter count of Qwen2.5
    assert (model.lm_head.weight is model.model.language_model.embed_tokens.weight) is tied
    assert model.model.multi_modal_projector.linear_1.weight.shape == (hidden, 1024)
    assert model.model.multi_modal_projector.linear_2.weight.shape == (hidden, hidden)


def test_default_config_is_7b_and_roundtrips_through_dict():
    cfg = LlavaFAConfig()
    assert cfg.text_config.hidden_size == 3584 and cfg.vision_config.hidden_size == 1024
    again = LlavaFAConfig.from_dict(LlavaFAConfig.from_preset("tiny").to_dict())
    assert again.to_dict() == LlavaFAConfig.from_preset("tiny").to_dict()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"vision_feature_layer": 5}, "vision_feature_layer=5 is out of range"),
        ({"image_token_index": 10_000}, "outside the language model's vocabulary"),
        ({"projector_hidden_act": "nope"}, "projector_hidden_act"),
        ({"vision_config": {"image_size": 30}}, "not a multiple of patch_size"),
    ],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LlavaFAConfig.from_preset("tiny", **kwargs)


def test_bad_select_strategy_rejected_by_strict_config():
    # transformers' strict dataclass validation already names the field and the allowed values
    with pytest.raises(Exception, match="vision_feature_select_strategy.*expected one of"):
        LlavaFAConfig.from_preset("tiny", vision_feature_select_strategy="cls")


def test_unknown_preset_raises():
    with pytest.raises(ValueError, match="Unknown LlavaFAConfig preset 'qwen9'"):
        LlavaFAConfig.from_preset("qwen9")


# ---------------------------------------------------------------- loss & labels
def test_loss_equals_manual_masked_cross_entropy(tiny_model_and_processor):
    model, _ = tiny_model_and_processor
    ids = _ids([0, 0, 5, IMG, IMG, IMG, IMG, 7, 8, 9], [5, 6, IMG, IMG, IMG, IMG, 7, 8, 9, 10])
    mask = (torch.arange(10) >= torch.tensor([[2], [0]])).long()
    pixels = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(1))
    labels = ids.clone()
    labels[:, :3] = -100  # "prompt" masked by the caller
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=pixels, attention_mask=mask, labels=labels)
    expected_labels = labels.clone()
    expected_labels[ids == IMG] = -100  # image tokens: masked by the model
    expected_labels[mask == 0] = -100  # padding: masked by the model
    manual = F.cross_entropy(out.logits[:, :-1].reshape(-1, 384), expected_labels[:, 1:].reshape(-1),
                             ignore_index=-100)
    assert torch.isfinite(out.loss) and out.loss.item() == pytest.approx(manual.item(), rel=1e-6)
    # the model does not train on image tokens even if the caller forgot to mask them
    with torch.no_grad():
        unmasked = model(input_ids=ids, pixel_values=pixels, attention_mask=mask, labels=ids.clone())
    assert (ids[:, 1:] == IMG).any() and torch.isfinite(unmasked.loss)


# ---------------------------------------------------------------- generation
def _prompt(processor, question):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True)


def test_generate_with_image_and_batched_left_padding_matches_single(tiny_model_and_processor):
    model, processor = tiny_model_and_processor
    texts = [_prompt(processor, "What is in the image?"), _prompt(processor, "Describe the picture in one sentence.")]
    images = [gradient_image(seed=1), gradient_image(50, 20, seed=2)]
    singles = []
    for text, img in zip(texts, images):
        inp = processor(images=img, text=text, return_tensors="pt")
        out = model.generate(**inp, max_new_tokens=6, do_sample=False, min_new_tokens=6)
        assert out.shape == (1, inp["input_ids"].shape[1] + 6)
        assert torch.equal(out[:, : inp["input_ids"].shape[1]], inp["input_ids"])
        singles.append(out[0, inp["input_ids"].shape[1]:])
    batch = processor(images=images, text=texts, padding=True, return_tensors="pt")
    assert processor.tokenizer.padding_side == "left"
    assert batch["attention_mask"][:, -1].all() and not batch["attention_mask"].all()  # prompts differ in length
    out = model.generate(**batch, max_new_tokens=6, do_sample=False, min_new_tokens=6)
    new = out[:, batch["input_ids"].shape[1]:]
    assert new.shape == (2, 6)
    assert torch.equal(new[0], singles[0]) and torch.equal(new[1], singles[1])


# ---------------------------------------------------------------- dtypes, checkpointing
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_forward(tiny_model_and_processor, chat_inputs, dtype):
    model, _ = tiny_model_and_processor
    half, _ = build_tiny_llava_fa(seed=0)
    half = half.to(dtype)
    with torch.no_grad():
        ref = model(**chat_inputs).logits
        out = half(**{**chat_inputs, "pixel_values": chat_inputs["pixel_values"].to(dtype)}).logits
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max()


def test_gradient_checkpointing_gives_same_grads(chat_inputs):
    def grads(checkpointing):
        model, _ = build_tiny_llava_fa(seed=0)
        model.train()
        if checkpointing:
            model.activation_checkpointing_enable()  # transformers 5 name of gradient_checkpointing_enable
        assert model.is_activation_checkpointing is checkpointing
        calls = {"vision": 0, "text": 0}
        model.model.vision_tower.encoder.layers[0].mlp.register_forward_pre_hook(lambda *a: calls.__setitem__(
            "vision", calls["vision"] + 1))
        model.model.language_model.layers[0].mlp.register_forward_pre_hook(lambda *a: calls.__setitem__(
            "text", calls["text"] + 1))
        model(**chat_inputs, labels=chat_inputs["input_ids"]).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, calls

    (plain, plain_calls), (ckpt, ckpt_calls) = grads(False), grads(True)
    assert LlavaFAForConditionalGeneration.supports_gradient_checkpointing
    # checkpointed layers of both towers run again in the backward pass
    assert plain_calls == {"vision": 1, "text": 1} and ckpt_calls == {"vision": 2, "text": 2}
    assert plain.keys() == ckpt.keys() and any("vision_tower" in n for n in plain)
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], rtol=1e-4, atol=1e-6, msg=name)


# ---------------------------------------------------------------- save / load
def test_save_load_identical_logits_and_native_llava_compatible(tiny_folder, tiny_model_and_processor, chat_inputs):
    model, _ = tiny_model_and_processor
    with torch.no_grad():
        ref = model(**chat_inputs).logits
        for cls in (LlavaFAForConditionalGeneration, AutoModelForImageTextToText, LlavaForConditionalGeneration):
            loaded = cls.from_pretrained(tiny_folder).eval()
            assert torch.equal(loaded(**chat_inputs).logits, ref), cls.__name__
    assert type(AutoModelForImageTextToText.from_pretrained(tiny_folder)) is LlavaFAForConditionalGeneration


def test_device_map_auto_loads_through_accelerate(tiny_folder, tiny_model_and_processor, chat_inputs):
    model, _ = tiny_model_and_processor
    loaded = LlavaFAForConditionalGeneration.from_pretrained(tiny_folder, device_map="auto").eval()
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert {p.device.type for p in loaded.parameters()} == {expected}
    with torch.no_grad():
        out = loaded(**{k: v.to(loaded.device) for k, v in chat_inputs.items()}).logits.cpu()
        ref = model(**chat_inputs).logits
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- from_vision_text_pretrained
@pytest.fixture(scope="module")
def vision_text_checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("vt")
    torch.manual_seed(3)
    clip = CLIPModel(CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "vocab_size": 99},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 28, "patch_size": 14},
        projection_dim=16,
    ))
    clip.save_pretrained(root / "clip")  # a full CLIPModel, like openai/clip-vit-large-patch14-336
    paths = {"clip": root / "clip", "clip_model": clip}
    for tied in (False, True):
        qwen = Qwen2ForCausalLM(Qwen2Config(hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                                            num_attention_heads=4, num_key_value_heads=2, vocab_size=128,
                                            tie_word_embeddings=tied))
        qwen.save_pretrained(root / f"qwen_tied{tied}")
        paths[f"qwen{tied}"] = (root / f"qwen_tied{tied}", qwen)
    return paths


@pytest.mark.parametrize("tied", [False, True])
def test_from_vision_text_pretrained_copies_weights_exactly(vision_text_checkpoints, tied, tmp_path):
    qwen_path, qwen = vision_text_checkpoints[f"qwen{tied}"]
    model = LlavaFAForConditionalGeneration.from_vision_text_pretrained(
        vision_text_checkpoints["clip"], qwen_path, image_token_id=7)
    clip_state = vision_text_checkpoints["clip_model"].state_dict()
    vision_state = model.model.vision_tower.state_dict()
    assert len(vision_state) == sum(k.startswith("vision_model.") for k in clip_state)
    for name, tensor in vision_state.items():
        assert torch.equal(tensor, clip_state["vision_model." + name]), name
    qwen_state = qwen.state_dict()
    for name, tensor in model.model.language_model.state_dict().items():
        assert torch.equal(tensor, qwen_state["model." + name]), name
    assert torch.equal(model.lm_head.weight, qwen.lm_head.weight)
    assert (model.lm_head.weight is model.model.language_model.embed_tokens.weight) is tied
    assert model.config.image_token_id == 7 and model.config.projector_dims == (32, 48)
    assert model.config.tie_word_embeddings is tied
    ids = _ids([1, 7, 7, 7, 7, 2])
    with torch.no_grad():
        ref = model(input_ids=ids, pixel_values=torch.ones(1, 3, 28, 28)).logits
    model.save_pretrained(tmp_path / "assembled")
    again = LlavaFAForConditionalGeneration.from_pretrained(tmp_path / "assembled")
    with torch.no_grad():
        assert torch.equal(again(input_ids=ids, pixel_values=torch.ones(1, 3, 28, 28)).logits, ref)


def test_from_vision_text_pretrained_projector_weights(vision_text_checkpoints):
    qwen_path, _ = vision_text_checkpoints["qwenFalse"]
    proj = {"model.mm_projector.0.weight": torch.randn(48, 32), "model.mm_projector.0.bias": torch.randn(48),
            "model.mm_projector.2.weight": torch.randn(48, 48), "model.mm_projector.2.bias": torch.randn(48)}
    model = LlavaFAForConditionalGeneration.from_vision_text_pretrained(
        vision_text_checkpoints["clip"], qwen_path, image_token_id=7, projector_state_dict=proj)
    assert torch.equal(model.model.multi_modal_projector.linear_1.weight, proj["model.mm_projector.0.weight"])
    assert torch.equal(model.model.multi_modal_projector.linear_2.bias, proj["model.mm_projector.2.bias"])
    bad = dict(proj, **{"model.mm_projector.0.weight": torch.randn(48, 1024)})
    with pytest.raises(ValueError, match=r"linear_1.weight has shape \(48, 1024\) but this config needs \(48, 32\)"):
        LlavaFAForConditionalGeneration.from_vision_text_pretrained(
            vision_text_checkpoints["clip"], qwen_path, image_token_id=7, projector_state_dict=bad)


def test_mismatched_projector_checkpoint_raises(tiny_folder):
    # transformers' own loader rejects it, with its mismatch table naming the projector weights
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        LlavaFAForConditionalGeneration.from_pretrained(
            tiny_folder, config=LlavaFAConfig.from_preset("tiny", text_config={"hidden_size": 32}))


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "ids, n_images, match",
    [
        ([5, 6, 7, 8], 1, r"got 1 image\(s\) but no image token"),
        ([5, IMG, IMG, IMG, IMG, 8], 0, "4 image tokens .* but no pixel_values"),
        ([5, IMG, IMG, IMG, IMG, 8], 2, r"need 8 image tokens \(4 each\), but input_ids hold 4"),
        ([5, IMG, IMG, 8], 1, "need 4 image tokens .* hold 2"),
    ],
)
def test_image_token_mismatch_raises(tiny_model_and_processor, ids, n_images, match):
    model, _ = tiny_model_and_processor
    pixels = torch.randn(n_images, 3, 28, 28) if n_images else None
    with pytest.raises(ValueError, match=match):
        model(input_ids=_ids(ids), pixel_values=pixels)


@pytest.mark.parametrize("shape", [(1, 3, 32, 32), (3, 28, 28), (1, 1, 28, 28)])
def test_wrong_pixel_shape_raises(tiny_model_and_processor, shape):
    model, _ = tiny_model_and_processor
    with pytest.raises(ValueError, match=r"pixel_values must have shape \(num_images, 3, 28, 28\)"):
        model(input_ids=_ids([5, IMG, IMG, IMG, IMG]), pixel_values=torch.randn(*shape))

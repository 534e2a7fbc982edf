"""LlavaCollator: chat template, image-token expansion, assistant-only labels (token by token), right padding,
mixed image/text batches, truncation rules, errors, and a forward/backward + Trainer step on the tiny model."""

from __future__ import annotations

import pytest
import torch
from conftest import gradient_image

from llava_fa.testing import build_tiny_llava_fa, build_tiny_processor
from llava_fa.training import LlavaCollator, load_llava_dataset
from llava_fa.training.data import BadRecordError

PAD, IM_START, IM_END, IMG = 0, 1, 2, 3
N_IMG = 4  # tiny preset: 28 px / patch 14 -> 2x2 image tokens
SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"


@pytest.fixture(scope="module")
def processor():
    return build_tiny_processor()


@pytest.fixture(scope="module")
def model():
    return build_tiny_llava_fa(seed=0)[0]


def _turns(*values):
    return [{"from": "human" if i % 2 == 0 else "gpt", "value": v} for i, v in enumerate(values)]


def _expected(processor, segments):
    """(input_ids, labels) built independently: each (text, trained) segment tokenized on its own,
    '<image>' expanded to N_IMG image tokens, labels = ids on trained segments, else -100."""
    ids, labels = [], []
    for text, trained in segments:
        seg = processor.tokenizer.encode(text, add_special_tokens=False)
        seg = [t for tok in seg for t in ([IMG] * N_IMG if tok == IMG else [tok])]
        ids += seg
        labels += seg if trained else [-100] * len(seg)
    return ids, labels


def test_labels_token_by_token_multi_turn_with_image(processor):
    record = {"id": "r", "images": [gradient_image()],
              "conversations": _turns("<image>\nWhat is shown?", "A gradient.", "Which colours?", "Red and blue.")}
    batch = LlavaCollator(processor)([record])
    ids, labels = _expected(processor, [
        (SYSTEM + "<|im_start|>user\n<image>\nWhat is shown?<|im_end|>\n<|im_start|>assistant\n", False),
        ("A gradient.<|im_end|>", True),
        ("\n<|im_start|>user\nWhich colours?<|im_end|>\n<|im_start|>assistant\n", False),
        ("Red and blue.<|im_end|>", True),
        ("\n", False),
    ])
    assert batch["input_ids"].tolist() == [ids]
    assert batch["labels"].tolist() == [labels]
    assert batch["attention_mask"].tolist() == [[1] * len(ids)]
    assert batch["pixel_values"].shape == (1, 3, 28, 28) and batch["pixel_values"].dtype == torch.float32
    trained = batch["labels"][0] != -100
    assert processor.tokenizer.decode(batch["input_ids"][0][trained]) == "A gradient.<|im_end|>Red and blue.<|im_end|>"
    assert int((batch["labels"][0] == IM_END).sum()) == 2  # both end-of-turn tokens are trained on
    assert all(batch[k].dtype == torch.long for k in ("input_ids", "attention_mask", "labels"))


def test_custom_system_prompt_and_text_only(processor):
    record = {"id": "t", "conversations": _turns("Hi", "Hello.")}
    batch = LlavaCollator(processor, system_prompt="Be brief.")([record])
    ids, labels = _expected(processor, [
        ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", False),
        ("Hello.<|im_end|>", True), ("\n", False)])
    assert batch["input_ids"].tolist() == [ids] and batch["labels"].tolist() == [labels]
    assert "pixel_values" not in batch


def test_right_padding_and_mixed_batch_keeps_image_order(processor):
    a, b = gradient_image(seed=1), gradient_image(seed=2, width=30, height=50)
    records = [
        {"id": "t1", "conversations": _turns("A longer text-only question here?", "Yes.")},
        {"id": "i1", "image": a, "conversations": _turns("<image>\nColour?", "Red.")},
        {"id": "t2", "conversations": _turns("Hi", "Hello there, friend.")},
        {"id": "i2", "images": [b], "conversations": _turns("Shape <image>", "Round.")},
    ]
    collator = LlavaCollator(processor)
    batch = collator(records)
    singles = [collator([r]) for r in records]
    lengths = [s["input_ids"].shape[1] for s in singles]
    assert batch["input_ids"].shape == (4, max(lengths))
    for i, (single, n) in enumerate(zip(singles, lengths)):
        assert torch.equal(batch["input_ids"][i, :n], single["input_ids"][0])
        assert torch.equal(batch["labels"][i, :n], single["labels"][0])
        assert batch["attention_mask"][i].tolist() == [1] * n + [0] * (batch["input_ids"].shape[1] - n)
        assert (batch["input_ids"][i, n:] == PAD).all() and (batch["labels"][i, n:] == -100).all()
        assert batch["input_ids"][i, 0] == IM_START  # right padding: every row starts at position 0
    assert (batch["input_ids"] == IMG).sum(dim=1).tolist() == [0, N_IMG, 0, N_IMG]
    expected_pixels = processor.image_processor([a, b], return_tensors="pt")["pixel_values"]
    assert torch.equal(batch["pixel_values"], expected_pixels)


def test_pad_to_multiple_of(processor):
    batch = LlavaCollator(processor, pad_to_multiple_of=16)([{"id": "t", "conversations": _turns("Hi", "Yo")}])
    assert batch["input_ids"].shape[1] % 16 == 0 and batch["attention_mask"][0, -1] == 0


def test_forward_loss_is_finite_and_matches_manual_ce(processor, model):
    records = [{"id": "i", "image": gradient_image(), "conversations": _turns("<image>\nWhat?", "A cat.")},
               {"id": "t", "conversations": _turns("Hi", "Hello.", "Again?", "Yes.")}]
    batch = LlavaCollator(processor)(records)
    out = model(**batch)
    assert torch.isfinite(out.loss)
    logits = out.logits[:, :-1].reshape(-1, out.logits.shape[-1])
    manual = torch.nn.functional.cross_entropy(logits, batch["labels"][:, 1:].reshape(-1), ignore_index=-100)
    assert torch.allclose(out.loss, manual, atol=1e-5)
    text_only = LlavaCollator(processor)(records[1:])
    assert torch.isfinite(model(**text_only).loss)


def test_backward_reaches_the_projector(processor):
    model = build_tiny_llava_fa(seed=1)[0].train()
    record = {"id": "i", "image": gradient_image(), "conversations": _turns("<image>\nWhat?", "A cat.")}
    model(**LlavaCollator(processor)([record])).loss.backward()
    proj = model.model.multi_modal_projector.linear_1.weight.grad
    assert proj is not None and proj.abs().sum() > 0


def test_truncation_keeps_images_and_cuts_the_tail(processor):
    record = {"id": "long", "image": gradient_image(),
              "conversations": _turns("<image>\nQ?", "First answer.", "And more?", "A second, longer answer.")}
    full = LlavaCollator(processor)([record])
    n = full["input_ids"].shape[1]
    limit = n - 5
    cut = LlavaCollator(processor, max_length=limit)([record])
    assert cut["input_ids"].shape == (1, limit)
    assert torch.equal(cut["input_ids"][0], full["input_ids"][0, :limit])
    assert torch.equal(cut["labels"][0], full["labels"][0, :limit])
    assert (cut["input_ids"] == IMG).sum() == N_IMG and "pixel_values" in cut


def test_truncation_never_cuts_inside_image_tokens(processor):
    record = {"id": "img-late", "image": [gradient_image(seed=1), gradient_image(seed=2)],
              "conversations": _turns("<image>\nQ?", "A.", "<image>\nAnd this one?", "B.")}
    ids = LlavaCollator(processor)([record])["input_ids"][0]
    last_image = int((ids == IMG).nonzero().max())
    limit = last_image - 1  # would keep the first image and half of the second one's tokens
    with pytest.raises(ValueError, match=r"record 'img-late' is \d+ tokens long and its image tokens end at "
                                         rf"position {last_image + 1} but max_length={limit}"):
        LlavaCollator(processor, max_length=limit)([record])
    text = {"id": "t", "conversations": _turns("Hi", "Hello.")}
    dropper = LlavaCollator(processor, max_length=limit, overlong="drop")
    with pytest.warns(UserWarning, match="dropped record 'img-late'"):
        batch = dropper([record, text])
    assert batch["input_ids"].shape[0] == 1 and "pixel_values" not in batch and dropper.n_dropped == 1
    assert torch.equal(batch["input_ids"], LlavaCollator(processor)([text])["input_ids"])
    with pytest.raises(ValueError, match=r"every record of this batch \(1\) was dropped"), pytest.warns(UserWarning):
        dropper([record])


def test_truncation_that_leaves_no_label_is_refused(processor):
    record = {"id": "q", "conversations": _turns("A long question with many words in it?", "Yes.")}
    with pytest.raises(ValueError, match=r"record 'q' .* no assistant token lies within the first max_length=20"):
        LlavaCollator(processor, max_length=20)([record])


def test_collator_on_loaded_dataset_and_bad_records(tmp_path, processor):
    import json

    gradient_image().save(tmp_path / "a.png")
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    records = [{"id": "ok", "image": "a.png", "conversations": _turns("<image>\nQ", "A")},
               {"id": "corrupt", "image": "bad.png", "conversations": _turns("<image>\nQ", "A")}]
    (tmp_path / "d.json").write_text(json.dumps(records))
    ds = load_llava_dataset(tmp_path / "d.json", image_check="exists")
    collator = LlavaCollator(processor)
    assert collator([ds[0]])["pixel_values"].shape == (1, 3, 28, 28)
    with pytest.raises(BadRecordError, match=r"record 'corrupt': image .*bad.png' cannot be decoded"):
        collator([ds[0], ds[1]])
    with pytest.raises(ValueError, match=r"record 'x': turn 1 is 'human' but roles must alternate"):
        collator([{"id": "x", "conversations": _turns("Q", "A")[:1] * 2}])
    with pytest.raises(ValueError, match=r"record 'y': has 1 <image> placeholder\(s\) but no image"):
        collator([{"id": "y", "conversations": _turns("<image>Q", "A")}])
    with pytest.raises(TypeError, match="expects dict records"):
        collator(["text"])
    with pytest.raises(ValueError, match="non-empty list"):
        collator([])


def test_collator_arguments_are_checked(processor):
    with pytest.raises(TypeError, match="processor must be a LlavaFAProcessor"):
        LlavaCollator(processor.tokenizer.backend_tokenizer)
    with pytest.raises(ValueError, match="max_length must be >= 1"):
        LlavaCollator(processor, max_length=0)
    with pytest.raises(TypeError, match="max_length must be an int"):
        LlavaCollator(processor, max_length=1.5)
    with pytest.raises(ValueError, match="overlong must be 'raise' or 'drop'"):
        LlavaCollator(processor, overlong="skip")


def test_trainer_trains_with_the_collator(tmp_path, processor):
    import json

    from transformers import Trainer, TrainingArguments

    gradient_image().save(tmp_path / "a.png")
    recs = [{"id": str(i), "image": "a.png", "conversations": _turns("<image>\nColour?", "Red.")} for i in range(4)]
    recs += [{"id": "t", "conversations": _turns("Hi", "Hello.")}]
    (tmp_path / "d.json").write_text(json.dumps(recs))
    ds = load_llava_dataset(tmp_path / "d.json")
    model = build_tiny_llava_fa(seed=2)[0].train()
    args = TrainingArguments(output_dir=str(tmp_path / "out"), per_device_train_batch_size=2, max_steps=3,
                             learning_rate=1e-3, remove_unused_columns=False, use_cpu=True, report_to=[],
                             save_strategy="no", logging_steps=1, dataloader_num_workers=0)
    before = model.model.multi_modal_projector.linear_1.weight.detach().clone()
    result = Trainer(model=model, args=args, train_dataset=ds, data_collator=LlavaCollator(processor)).train()
    assert result.global_step == 3 and torch.isfinite(torch.tensor(result.training_loss))
    assert not torch.equal(before, model.model.multi_modal_projector.linear_1.weight)


def test_encode_equals_the_processors_chat_template_path(tmp_path, processor):
    from llava_fa.training.collator import open_image
    from llava_fa.training.data import conversation_to_messages

    gradient_image(seed=4, width=50, height=20).save(tmp_path / "a.png")
    records = [{"id": "one", "image": str(tmp_path / "a.png"),
                "conversations": _turns("Look: <image> What?", "A bar.", "Sure?", "Yes, sure.")},
               {"id": "two", "image": [str(tmp_path / "a.png")] * 2,
                "conversations": _turns("<image>\nQ?", "A.", "<image>\nQ2", "B")},
               {"id": "text", "conversations": _turns("Only text here?", "Yes.")}]
    collator = LlavaCollator(processor, system_prompt="Sys.")
    for record in records:
        images = [open_image(p) for p in collator_images(record)]
        messages = conversation_to_messages(record, images, "Sys.")
        ref = processor.apply_chat_template(messages, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True, return_tensors="pt")
        item = collator.encode(record)
        assert torch.equal(item["input_ids"], ref["input_ids"][0])
        assert torch.equal(item["labels"], processor.build_labels(ref["input_ids"], ref["assistant_masks"])[0])
        assert ("pixel_values" in item) == bool(images)
        if images:
            assert torch.equal(item["pixel_values"], ref["pixel_values"])
        assert torch.equal(collator.encode_text(record)["input_ids"], item["input_ids"])  # no image opened


def collator_images(record):
    from llava_fa.training.collator import record_images

    return record_images(record)


def test_fits_and_filter_dataset(tmp_path, processor):
    import json

    gradient_image().save(tmp_path / "a.png")
    recs = [{"id": "short", "image": "a.png", "conversations": _turns("<image>\nQ?", "A.")},
            {"id": "two", "image": ["a.png", "a.png"], "conversations": _turns("<image>\nQ?", "A.", "<image>\nQ2", "B")},
            {"id": "text", "conversations": _turns("A question that is rather long, with words?", "Yes.")}]
    (tmp_path / "d.json").write_text(json.dumps(recs))
    ds = load_llava_dataset(tmp_path / "d.json")
    collator = LlavaCollator(processor)
    assert collator.image_token_count() == N_IMG
    lengths = [collator.encode_text(row)["input_ids"].numel() for row in ds]
    limit = lengths[0] + 1  # "short" fits; "two" would be cut inside its 2nd image; "text" before its answer
    strict = LlavaCollator(processor, max_length=limit)
    assert [strict.fits(row) for row in ds] == [True, False, False]
    with pytest.warns(UserWarning, match=f"dropped 2 of 3 records that do not fit max_length={limit}"):
        kept = strict.filter_dataset(ds)
    assert kept["id"] == ["short"] and strict(list(kept))["input_ids"].shape[1] == lengths[0]
    assert collator.filter_dataset(ds) is ds  # no max_length: nothing to filter


def test_generation_batch_is_left_padded_without_the_answer(processor, model):
    from llava_fa.training.collator import build_generation_batch

    records = [{"id": "i", "image": gradient_image(), "conversations": _turns("<image>\nColour?", "Red.")},
               {"id": "t", "conversations": _turns("A much longer text-only question, isn't it?", "Yes.")}]
    side = processor.tokenizer.padding_side
    batch, answers = build_generation_batch(processor, records)
    assert answers == ["Red.", "Yes."] and processor.tokenizer.padding_side == side
    assert batch["attention_mask"][:, -1].all() and not batch["attention_mask"][0, 0]  # left padding
    prompt = batch["input_ids"][0][batch["attention_mask"][0].bool()]
    assert processor.tokenizer.decode(prompt).endswith("Colour?<|im_end|>\n<|im_start|>assistant\n")
    assert (batch["input_ids"][0] == IMG).sum() == N_IMG and batch["pixel_values"].shape == (1, 3, 28, 28)
    out = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert out.shape[0] == 2 and out.shape[1] <= batch["input_ids"].shape[1] + 3

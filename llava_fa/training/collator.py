"""`LlavaCollator`: LLaVA records -> a right-padded training batch for `LlavaFAForConditionalGeneration`.

Per record (a row of `load_llava_dataset`, or any dict with `conversations` and `images`/`image`):
  1. open its images (paths -> RGB PIL; PIL images are used as given) and preprocess them with
     the processor's image processor (LLaVA pad-to-square, resize, crop, CLIP normalisation);
  2. render the processor's chat template (Qwen2.5 `<|im_start|>role ... <|im_end|>`, default
     or given system prompt; each "<image>" of a human turn becomes an image item, as LLaVA's
     `preprocess_multimodal` moves it to the start of the turn), tokenize it and expand each
     image placeholder to the processor's `num_image_tokens` image tokens (the same ids as
     `processor.apply_chat_template(..., tokenize=True)`, tested);
  3. labels = input ids on the assistant replies and their `<|im_end|>`, -100 elsewhere
     (system, user turns, role headers, image tokens, the newline after `<|im_end|>`);
  4. truncate to `max_length` from the right, never inside or before the image tokens and
     never so that no label is left (such a record raises `ValueError`, or is dropped with a
     warning when `overlong="drop"`).
The batch is padded on the RIGHT (pad id, attention 0, label -100): Qwen2 numbers positions
with `arange` when no position ids are given, so left padding would shift them in training.

Mixed batches: `pixel_values` holds the images of the image-bearing records only, in batch
order; text-only rows hold no image tokens (the model scatters image features into the image
token positions of the whole batch, so rows without images are unaffected). A batch with no
image at all has no `pixel_values` key.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from .data import IMAGE_TOKEN, UNREADABLE_IMAGE, BadRecordError, conversation_to_messages, validate_conversation

IGNORE_INDEX = -100


def _record_name(record: Any) -> str:
    rid = record.get("id") if isinstance(record, dict) else None
    return repr(rid) if rid is not None else "<no id>"


def open_image(source: Any, record_name: str = "?") -> Any:
    """A PIL RGB image from a path (opened now) or a PIL image; `ValueError` naming the record if undecodable."""
    from PIL import Image

    if isinstance(source, Image.Image):
        return source if source.mode == "RGB" else source.convert("RGB")
    try:
        with Image.open(source) as im:
            return im.convert("RGB")
    except (OSError, ValueError, SyntaxError) as exc:
        raise BadRecordError(record_name, UNREADABLE_IMAGE, f"image {str(source)!r} cannot be decoded "
                                                            f"({type(exc).__name__}: {exc}); remove the record, or "
                                                            f"load the data with image_check='decode' and "
                                                            f"skip_bad_records=True to drop such records up front.") from exc


def record_images(record: dict[str, Any]) -> list[Any]:
    """The record's image sources: `images` (list) or LLaVA's `image` (one or a list); [] if none."""
    images = record.get("images")
    if images is None:
        images = record.get("image")
    if images is None:
        return []
    if isinstance(images, (list, tuple)):
        return list(images)
    return [images]


def _check_record(record: Any) -> None:
    """Validate the structure of a record that may not come from `load_llava_dataset`."""
    if not isinstance(record, dict):
        raise TypeError(f"LlavaCollator expects dict records (dataset rows), got {type(record).__name__}.")
    validate_conversation(record.get("conversations"), len(record_images(record)), _record_name(record))


@dataclass
class LlavaCollator:
    """Collate LLaVA records into `input_ids`, `attention_mask`, `labels` (+ `pixel_values`) tensors.

    Usable as `Trainer(data_collator=LlavaCollator(processor), args=TrainingArguments(...,
    remove_unused_columns=False))` (Trainer would otherwise drop the raw `conversations`/`images`
    columns before they reach the collator).

    Args:
        processor: a `LlavaFAProcessor` (chat template with `{% generation %}` assistant spans).
        max_length: truncate longer sequences to this many tokens (see `overlong`); None: no limit.
        system_prompt: system message for every record; None uses the template's default
            ("You are a helpful assistant.").
        overlong: what to do with a record whose truncation would cut into its image tokens or
            leave no label: "raise" (`ValueError` naming the record) or "drop" (leave it out of the
            batch with a warning; a batch left empty raises).
        pad_to_multiple_of: round the padded length up to a multiple of this.
        validate: check each record's structure (roles, values, placeholders) here too; rows of
            `load_llava_dataset` are already valid.

    Returns (dict of torch tensors): `input_ids` (B, T) int64, `attention_mask` (B, T) int64,
    `labels` (B, T) int64 (-100 outside assistant replies and on padding) and, when the batch
    holds any image, `pixel_values` (num_images, 3, H, W) float32 in row order.
    """

    processor: Any
    max_length: int | None = None
    system_prompt: str | None = None
    overlong: Literal["raise", "drop"] = "raise"
    pad_to_multiple_of: int | None = None
    validate: bool = True
    n_dropped: int = field(default=0, init=False)
    _n_image_tokens: int | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is None or not hasattr(self.processor, "apply_chat_template"):
            raise TypeError(f"processor must be a LlavaFAProcessor (with a tokenizer and a chat template), got "
                            f"{type(self.processor).__name__}.")
        if tokenizer.pad_token_id is None:
            raise ValueError("the processor's tokenizer has no pad token; set tokenizer.pad_token (Qwen2.5: "
                             "'<|endoftext|>') before collating.")
        for name in ("max_length", "pad_to_multiple_of"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise TypeError(f"{name} must be an int or None, got {type(value).__name__}.")
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}.")
        if self.overlong not in ("raise", "drop"):
            raise ValueError(f"overlong must be 'raise' or 'drop', got {self.overlong!r}.")
        self.image_token_id = self.processor.image_token_id
        self.pad_token_id = tokenizer.pad_token_id

    # ------------------------------------------------------------------ one record
    def encode(self, record: dict[str, Any]) -> dict[str, torch.Tensor] | None:
        """Tokenize one record: 1-D `input_ids`, `labels`, and `pixel_values` (k, 3, H, W) if it has images.

        The text goes through the processor's chat template on its tokenizer (`encode_text`), the
        images through its image processor; the result equals
        `processor.apply_chat_template(..., return_assistant_tokens_mask=True)` + `build_labels`
        (tested) at a fraction of the cost. Returns None if the record is dropped (`overlong="drop"`).
        """
        item = self.encode_text(record)
        name = _record_name(record)
        images = [open_image(src, name) for src in record_images(record)]
        if images:
            pixel_values = self.processor.image_processor(images, return_tensors="pt")["pixel_values"]
            height, width = pixel_values.shape[-2:]
            if self.processor.num_image_tokens(int(height), int(width)) != self.image_token_count():
                raise ValueError(f"record {name}: the image processor produced {height}x{width} images, which need "
                                 f"{self.processor.num_image_tokens(int(height), int(width))} image tokens, not "
                                 f"{self.image_token_count()}; use an image processor with a fixed crop size "
                                 f"(LLaVA's pad-to-square + center crop).")
            item["pixel_values"] = pixel_values.to(torch.float32)
        if self.max_length is not None and item["input_ids"].numel() > self.max_length:
            item = self._truncate(item, name)
        return item

    def _overlong_problem(self, input_ids: torch.Tensor, labels: torch.Tensor) -> str | None:
        """Why truncating to `max_length` is not allowed (None if it is, or if nothing is cut)."""
        limit = self.max_length
        if limit is None or input_ids.numel() <= limit:
            return None
        image_pos = (input_ids == self.image_token_id).nonzero().flatten()
        if image_pos.numel() and int(image_pos[-1]) >= limit:
            return (f"its image tokens end at position {int(image_pos[-1]) + 1} but max_length={limit} "
                    f"would cut into or before them")
        if not (labels[:limit] != IGNORE_INDEX).any():
            return f"no assistant token lies within the first max_length={limit} tokens"
        return None

    def _truncate(self, item: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor] | None:
        n, limit = item["input_ids"].numel(), self.max_length
        problem = self._overlong_problem(item["input_ids"], item["labels"])
        if problem is None:
            return {k: (v[:limit] if k != "pixel_values" else v) for k, v in item.items()}
        message = (f"record {name} is {n} tokens long and {problem}; raise max_length, shorten the record, or "
                   f"use overlong='drop'.")
        if self.overlong == "raise":
            raise ValueError(message)
        self.n_dropped += 1
        warnings.warn(f"dropped {message.split('; ')[0]}.", stacklevel=3)
        return None

    # ------------------------------------------------------------------ lengths without images
    def image_token_count(self) -> int:
        """Image tokens per image: the processor's count for its output (crop) size."""
        if self._n_image_tokens is None:
            self._n_image_tokens = self._count_image_tokens()
        return self._n_image_tokens

    def _count_image_tokens(self) -> int:
        ip = self.processor.image_processor
        crop = getattr(ip, "crop_size", None) if getattr(ip, "do_center_crop", True) else None
        size = crop or getattr(ip, "size", None) or {}
        h = size.get("height", size.get("shortest_edge"))
        w = size.get("width", size.get("shortest_edge"))
        if h is None or w is None:
            raise ValueError(f"cannot tell the image size the image processor produces (crop_size={crop}, "
                             f"size={getattr(ip, 'size', None)}).")
        return int(self.processor.num_image_tokens(int(h), int(w)))

    def encode_text(self, record: dict[str, Any]) -> dict[str, torch.Tensor]:
        """`input_ids` and `labels` of `encode(record)` before truncation, computed without opening
        the images (each image placeholder is expanded to `image_token_count()` tokens)."""
        if self.validate:
            _check_record(record)
        messages = conversation_to_messages(record, (), self.system_prompt)
        out = self.processor.tokenizer.apply_chat_template(
            messages, chat_template=self.processor.chat_template, tokenize=True, return_dict=True,
            return_assistant_tokens_mask=True)
        n_img = self.image_token_count()
        ids: list[int] = []
        labels: list[int] = []
        for tok, trained in zip(out["input_ids"], out["assistant_masks"]):
            repeat = n_img if tok == self.image_token_id else 1
            ids += [tok] * repeat
            labels += [tok if trained else IGNORE_INDEX] * repeat
        return {"input_ids": torch.tensor(ids, dtype=torch.long), "labels": torch.tensor(labels, dtype=torch.long)}

    def fits(self, record: dict[str, Any]) -> bool:
        """False if `encode(record)` would refuse to truncate it (`overlong`); images are not opened."""
        if self.max_length is None:
            return True
        item = self.encode_text(record)
        return self._overlong_problem(item["input_ids"], item["labels"]) is None

    def filter_dataset(self, dataset: Any, num_proc: int | None = None) -> Any:
        """`dataset` without the records `fits` rejects (warns with their number), so that no batch
        meets an overlong record mid-epoch. Returns the dataset unchanged when `max_length` is None."""
        if self.max_length is None:
            return dataset
        kept = dataset.filter(self.fits, num_proc=num_proc, desc="LlavaCollator.filter_dataset")
        if len(kept) < len(dataset):
            warnings.warn(f"filter_dataset: dropped {len(dataset) - len(kept)} of {len(dataset)} records that do "
                          f"not fit max_length={self.max_length}.", stacklevel=2)
        return kept

    # ------------------------------------------------------------------ batch
    def __call__(self, records: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not isinstance(records, Sequence) or isinstance(records, (str, bytes)) or not records:
            raise ValueError("LlavaCollator needs a non-empty list of records.")
        items = [item for item in (self.encode(r) for r in records) if item is not None]
        if not items:
            raise ValueError(f"every record of this batch ({len(records)}) was dropped as overlong; raise "
                             f"max_length or filter the dataset first (LlavaCollator.filter_dataset).")
        return self.pad(items)

    def pad(self, items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Right-pad encoded items into a batch (pad id / attention 0 / label -100)."""
        length = max(item["input_ids"].numel() for item in items)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = len(items)
        input_ids = torch.full((batch, length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((batch, length), dtype=torch.long)
        for i, item in enumerate(items):
            n = item["input_ids"].numel()
            input_ids[i, :n] = item["input_ids"]
            labels[i, :n] = item["labels"]
            attention_mask[i, :n] = 1
        out = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        pixels = [item["pixel_values"] for item in items if "pixel_values" in item]
        if pixels:
            out["pixel_values"] = torch.cat(pixels, dim=0).to(torch.float32)
        return out


def build_generation_batch(
    processor: Any, records: Sequence[dict[str, Any]], *, system_prompt: str | None = None
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Prompts for `model.generate` from LLaVA records, and the reference answers.

    Each record's last gpt turn is removed (it is the reference) and the generation prompt
    (`<|im_start|>assistant\n`) appended; the batch is LEFT-padded (generation appends on the
    right). Returns (`input_ids`, `attention_mask` and, if any record has images, `pixel_values`
    as in `LlavaCollator`; the references in record order).
    """
    if not isinstance(records, Sequence) or isinstance(records, (str, bytes)) or not records:
        raise ValueError("build_generation_batch needs a non-empty list of records.")
    texts, images, answers = [], [], []
    for record in records:
        _check_record(record)
        name = _record_name(record)
        turns = list(record["conversations"])
        answers.append(turns[-1]["value"])
        messages = conversation_to_messages({"conversations": turns[:-1]}, (), system_prompt)
        texts.append(processor.apply_chat_template(messages, add_generation_prompt=True))
        images += [open_image(src, name) for src in record_images(record)]
    tokenizer = processor.tokenizer
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        out = processor(text=texts, images=images or None, padding=True, return_tensors="pt")
    finally:
        tokenizer.padding_side = side
    batch = {"input_ids": out["input_ids"], "attention_mask": out["attention_mask"]}
    if images:
        batch["pixel_values"] = out["pixel_values"].to(torch.float32)
    return batch, answers


__all__ = ["IGNORE_INDEX", "IMAGE_TOKEN", "LlavaCollator", "build_generation_batch", "open_image", "record_images"]

"""`LlavaFAForConditionalGeneration`: CLIP vision tower -> 2-layer MLP projector -> Qwen2 LM.

Subclasses transformers' Llava classes, keeping their module names
(`model.vision_tower`, `model.multi_modal_projector.linear_1/linear_2`, `model.language_model`,
`lm_head`) so checkpoints load in `LlavaForConditionalGeneration` and back. Adds:
  * input validation with actionable errors (pixel shape, image-token count);
  * LLaVA label masking of image placeholders and padding in `forward(labels=...)`;
  * `from_vision_text_pretrained(vision_path, text_path)` to assemble a model from a CLIP and a
    Qwen2 checkpoint.

Shipped as Hub remote code: imports installed libraries and flat siblings only.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import torch
from torch import nn
from transformers import CLIPVisionModel, Qwen2ForCausalLM
from transformers.conversion_mapping import (
    get_checkpoint_conversion_mapping,
    register_checkpoint_conversion_mapping,
)
from transformers.models.llava.modeling_llava import (
    LlavaForConditionalGeneration,
    LlavaModel,
    LlavaMultiModalProjector,
    LlavaPreTrainedModel,
)

from llava_fa.shipping import ShipsRemoteCode

from .configuration_llava_fa import LlavaFAConfig

IGNORE_INDEX = -100


def _register_checkpoint_conversions() -> None:
    """Give `llava_fa` the checkpoint key renaming transformers applies to `llava` (idempotent).

    transformers only renames keys for its own classes; without this a LLaVA-FA checkpoint loads
    with doubled `model.` prefixes and an unloaded `lm_head`.
    """
    for ours, theirs in (("llava_fa", "llava"), ("LlavaFAModel", "LlavaModel")):
        mapping = get_checkpoint_conversion_mapping(theirs)
        if mapping is not None:
            register_checkpoint_conversion_mapping(ours, mapping, overwrite=True)


_register_checkpoint_conversions()


def check_multimodal_inputs(
    config: LlavaFAConfig,
    input_ids: torch.LongTensor | None,
    pixel_values: torch.Tensor | None,
    is_prefill: bool = True,
) -> None:
    """Raise `ValueError` unless images and image tokens agree.

    Contract: `pixel_values` is float (num_images, num_channels, image_size, image_size); on prefill
    `input_ids` (batch, seq) holds exactly `num_images * config.num_image_tokens` tokens equal to
    `config.image_token_id`.
    """
    vc = config.vision_config
    n_images = 0
    if pixel_values is not None:
        expected = (vc.num_channels, vc.image_size, vc.image_size)
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(
                f"pixel_values must have shape (num_images, {', '.join(map(str, expected))}), got "
                f"{tuple(pixel_values.shape)}; preprocess images with LlavaFAProcessor (it resizes and crops "
                f"to {vc.image_size}x{vc.image_size})."
            )
        if not pixel_values.is_floating_point():
            raise ValueError(f"pixel_values must be a float tensor, got {pixel_values.dtype}.")
        n_images = pixel_values.shape[0]
    if input_ids is None or not is_prefill:
        return
    per_image = config.num_image_tokens
    n_tokens = int((input_ids == config.image_token_id).sum())
    if n_images and n_tokens == 0:
        raise ValueError(
            f"got {n_images} image(s) but no image token (id {config.image_token_id}) in input_ids; put one "
            f"<image> per image in the prompt and let LlavaFAProcessor expand it to {per_image} tokens."
        )
    if n_tokens and not n_images:
        raise ValueError(
            f"input_ids hold {n_tokens} image tokens (id {config.image_token_id}) but no pixel_values were "
            f"given; pass the images, or remove <image> from the prompt."
        )
    if n_tokens != n_images * per_image:
        raise ValueError(
            f"got {n_images} image(s), which need {n_images * per_image} image tokens ({per_image} each), but "
            f"input_ids hold {n_tokens}; put one <image> per image in the prompt and build input_ids with "
            f"LlavaFAProcessor (do not truncate prompts inside the image tokens)."
        )


class LlavaFAPreTrainedModel(ShipsRemoteCode, LlavaPreTrainedModel):
    """Base class: binds `LlavaFAConfig`; supports gradient checkpointing, SDPA, flash attention."""

    config_class = LlavaFAConfig
    config: LlavaFAConfig
    supports_gradient_checkpointing = True
    _no_split_modules = ["CLIPEncoderLayer", "Qwen2DecoderLayer", "LlavaMultiModalProjector"]


class LlavaFAModel(LlavaFAPreTrainedModel, LlavaModel):
    """Vision tower + projector + Qwen2 decoder (no LM head). Validates multimodal inputs."""

    def __init__(self, config: LlavaFAConfig):
        LlavaModel.__init__(self, config)

    def forward(self, input_ids=None, pixel_values=None, *args: Any, **kwargs: Any):
        """`LlavaModel.forward` after `check_multimodal_inputs` (only checked on prefill)."""
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        is_prefill = cache is None or cache.get_seq_length() == 0
        if kwargs.get("mm_encoder_outputs") is None:
            check_multimodal_inputs(self.config, input_ids, pixel_values, is_prefill=is_prefill)
        return super().forward(input_ids, pixel_values, *args, **kwargs)


class LlavaFAForConditionalGeneration(LlavaFAPreTrainedModel, LlavaForConditionalGeneration):
    """LLaVA-FA for image-text-to-text generation.

    forward(input_ids (B, T) long, pixel_values (N, C, H, W) float, attention_mask (B, T), labels (B, T))
    -> `logits` (B, T, vocab) and, with labels, `loss` (mean next-token CE over labels != -100).
    Labels at image tokens and at padding (attention_mask == 0) are set to -100 here; prompt
    masking (LLaVA trains on assistant turns only) comes from `LlavaFAProcessor.build_labels`.
    """

    def __init__(self, config: LlavaFAConfig):
        LlavaFAPreTrainedModel.__init__(self, config)
        self.model = LlavaFAModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def forward(self, input_ids=None, pixel_values=None, *args: Any, labels=None, attention_mask=None, **kwargs):
        if labels is not None:
            labels = mask_labels(labels, input_ids, attention_mask, self.config.image_token_id)
        return super().forward(input_ids, pixel_values, *args, labels=labels, attention_mask=attention_mask, **kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any):
        """`PreTrainedModel.save_pretrained` + `auto_map` for AutoModel (+ flat remote-code files, see `ShipsRemoteCode`)."""
        if self._auto_class is not None:
            auto_map = dict(getattr(self.config, "auto_map", None) or {})
            auto_map["AutoModel"] = f"{LlavaFAModel.__module__.rsplit('.', 1)[-1]}.LlavaFAModel"
            self.config.auto_map = auto_map
        return super().save_pretrained(save_directory, *args, **kwargs)

    def _upload_modified_files(self, working_dir: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        """transformers' upload step (`push_to_hub`), after our model card replaces its generic one.

        The card writer is imported by name, so remote code (no `llava_fa` installed) keeps transformers' card.
        """
        try:
            card = importlib.import_module("llava_fa.hub.card")
        except ImportError:
            card = None
        if card is not None:
            card.ensure_model_card(working_dir, self)
        return super()._upload_modified_files(working_dir, *args, **kwargs)

    @classmethod
    def from_vision_text_pretrained(
        cls,
        vision_model_name_or_path: str | os.PathLike,
        text_model_name_or_path: str | os.PathLike,
        *,
        image_token_id: int | None = None,
        projector_state_dict: dict[str, torch.Tensor] | None = None,
        config_kwargs: dict[str, Any] | None = None,
        **from_pretrained_kwargs: Any,
    ) -> LlavaFAForConditionalGeneration:
        """Assemble a model from a pretrained CLIP checkpoint and a pretrained Qwen2 causal LM.

        The vision tower and the language model (with its `lm_head`, tied or not) are the loaded
        modules themselves, so their weights are copied exactly. The projector is freshly
        initialised (torch's `nn.Linear` default, as LLaVA) or loaded from `projector_state_dict`
        (keys `linear_1/linear_2.{weight,bias}` or LLaVA's `mm_projector.0/2.*`, any prefix).
        `image_token_id` defaults to the config default (151665, "<image>" added to the Qwen2.5
        tokenizer); `config_kwargs` go to `LlavaFAConfig`; `from_pretrained_kwargs` (e.g. `dtype`,
        `local_files_only`) go to both `from_pretrained` calls.
        """
        vision = CLIPVisionModel.from_pretrained(vision_model_name_or_path, **from_pretrained_kwargs)
        text = Qwen2ForCausalLM.from_pretrained(text_model_name_or_path, **from_pretrained_kwargs)
        kwargs = dict(config_kwargs or {})
        if image_token_id is not None:
            kwargs["image_token_index"] = image_token_id
        config = LlavaFAConfig(vision_config=vision.config, text_config=text.config, **kwargs)
        dtype = text.lm_head.weight.dtype
        with torch.device("meta"):
            model = cls(config)
        model.model.vision_tower = vision
        model.model.language_model = text.model
        model.lm_head = text.lm_head
        projector = LlavaMultiModalProjector(config).to(dtype)
        if projector_state_dict is not None:
            load_projector_state_dict(projector, projector_state_dict, config)
        model.model.multi_modal_projector = projector
        leftover = [n for n, p in list(model.named_parameters()) + list(model.named_buffers()) if p.is_meta]
        if leftover:
            raise RuntimeError(f"from_vision_text_pretrained left tensors on the meta device: {leftover[:5]}")
        model.generation_config = text.generation_config
        model.config.dtype = dtype
        return model


def mask_labels(
    labels: torch.LongTensor,
    input_ids: torch.LongTensor | None,
    attention_mask: torch.Tensor | None,
    image_token_id: int,
) -> torch.LongTensor:
    """Return a copy of `labels` (B, T) with image-token and padding positions set to -100."""
    labels = labels.clone()
    if input_ids is not None:
        if input_ids.shape != labels.shape:
            raise ValueError(f"labels shape {tuple(labels.shape)} must equal input_ids shape {tuple(input_ids.shape)}.")
        labels[input_ids == image_token_id] = IGNORE_INDEX
    if attention_mask is not None and attention_mask.shape == labels.shape:
        labels[attention_mask == 0] = IGNORE_INDEX
    return labels


def load_projector_state_dict(
    projector: LlavaMultiModalProjector, state_dict: dict[str, torch.Tensor], config: LlavaFAConfig
) -> None:
    """Copy a 2-layer projector state dict into `projector`, with a clear error on any shape mismatch.

    Accepts native (`linear_1`, `linear_2`) or LLaVA (`mm_projector.0`, `mm_projector.2`) names,
    with any prefix (e.g. `model.mm_projector.0.weight`).
    """
    aliases = {"mm_projector.0.": "linear_1.", "mm_projector.2.": "linear_2.", "linear_1.": "linear_1.",
               "linear_2.": "linear_2."}
    renamed = {}
    for key, value in state_dict.items():
        for src, dst in aliases.items():
            if src in key:
                renamed[dst + key.split(src, 1)[1]] = value
                break
    own = projector.state_dict()
    missing = sorted(set(own) - set(renamed))
    if missing:
        raise ValueError(f"projector state dict lacks {missing}; got keys {sorted(state_dict)}.")
    in_dim, out_dim = config.projector_dims
    for key, target in own.items():
        if renamed[key].shape != target.shape:
            raise ValueError(
                f"projector weight {key} has shape {tuple(renamed[key].shape)} but this config needs "
                f"{tuple(target.shape)} (vision hidden {in_dim} -> text hidden {out_dim}); the projector was "
                f"trained for another vision tower / language model."
            )
    projector.load_state_dict({k: renamed[k].to(own[k].dtype) for k in own})


LlavaFAForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")

__all__ = [
    "LlavaFAForConditionalGeneration",
    "LlavaFAModel",
    "LlavaFAPreTrainedModel",
    "check_multimodal_inputs",
    "load_projector_state_dict",
    "mask_labels",
]

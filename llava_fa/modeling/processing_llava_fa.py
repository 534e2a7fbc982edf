"""`LlavaFAProcessor`: CLIP image preprocessing (LLaVA pad-to-square) + Qwen2 tokenizer + chat template.

A subclass of transformers' `LlavaProcessor`: each "<image>" in the text becomes
`(image_size // patch_size) ** 2` image tokens (CLS dropped, LLaVA's "default" strategy). The
chat template is Qwen2.5's im_start/im_end format with LLaVA's "<image>\\n" before the text; the
assistant turns are wrapped in `{% generation %}` so `apply_chat_template(...,
return_assistant_tokens_mask=True)` marks the tokens LLaVA trains on (`build_labels`).

Shipped as Hub remote code: imports installed libraries and flat siblings only.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AddedToken, LlavaProcessor, PreTrainedTokenizerBase
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

from llava_fa.shipping import ShipsRemoteCode

IGNORE_INDEX = -100
IMAGE_TOKEN = "<image>"
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."

# Qwen2.5 chat format; images render as "<image>\n" (LLaVA puts the image before the question);
# assistant content + <|im_end|> is the trained-on span ({% generation %}), as in LLaVA's Qwen recipe.
CHAT_TEMPLATE = (
    "{%- macro render(content) -%}"
    "{%- if content is string -%}{{- content -}}"
    "{%- else -%}{%- for item in content -%}"
    "{%- if item['type'] == 'image' -%}{{- '<image>\\n' -}}"
    "{%- elif item['type'] == 'text' -%}{{- item['text'] -}}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{%- if messages[0]['role'] != 'system' -%}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}{{- render(message['content']) + '<|im_end|>' -}}{%- endgeneration -%}"
    "{%- else -%}{{- render(message['content']) + '<|im_end|>' -}}{%- endif -%}"
    "{{- '\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def build_image_processor(image_size: int = 336, pad_to_square: bool = True) -> LlavaImageProcessorPil:
    """CLIP preprocessing at `image_size` (resize shortest edge, center crop, OpenAI CLIP mean/std).

    `pad_to_square=True` is LLaVA-1.5's `image_aspect_ratio="pad"`: pad to a square with the CLIP
    mean colour before resizing, so nothing is cropped away.
    """
    return LlavaImageProcessorPil(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        do_pad=pad_to_square,
        image_mean=OPENAI_CLIP_MEAN,
        image_std=OPENAI_CLIP_STD,
    )


class LlavaFAProcessor(ShipsRemoteCode, LlavaProcessor):
    """Processor for LLaVA-FA: `processor(images=..., text=...)` -> input_ids, attention_mask, pixel_values.

    Contract: `pixel_values` is float32 (num_images, 3, image_size, image_size); each "<image>" in
    `text` becomes `num_image_tokens(image)` tokens of id `image_token_id`. Text and images must
    agree (one image per "<image>"), otherwise `ValueError`.
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        patch_size: int | None = 14,
        vision_feature_select_strategy: str | None = "default",
        chat_template: str | None = None,
        image_token: str = IMAGE_TOKEN,
        num_additional_image_tokens: int = 1,
        **kwargs: Any,
    ):
        if tokenizer is not None:
            ids = tokenizer.encode(image_token, add_special_tokens=False)
            if len(ids) != 1:
                raise ValueError(
                    f"The tokenizer splits {image_token!r} into {len(ids)} tokens; add it as a special token "
                    f"first (tokenizer.add_special_tokens({{'additional_special_tokens': [{image_token!r}]}}) "
                    f"or use LlavaFAProcessor.from_model_config)."
                )
        super().__init__(
            image_processor=image_processor,
            tokenizer=tokenizer,
            patch_size=patch_size,
            vision_feature_select_strategy=vision_feature_select_strategy,
            chat_template=chat_template if chat_template is not None else CHAT_TEMPLATE,
            image_token=image_token,
            num_additional_image_tokens=num_additional_image_tokens,
            **kwargs,
        )

    @classmethod
    def from_model_config(
        cls,
        config: Any,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: Any | None = None,
        pad_to_square: bool = True,
    ) -> LlavaFAProcessor:
        """Build the processor matching a `LlavaFAConfig` (image size, patch size, strategy, image token).

        Adds "<image>" to `tokenizer` as a special token if missing, then checks that its id is
        `config.image_token_id` (raises `ValueError` otherwise: the model would never see the images).
        Sets `tokenizer.padding_side = "left"` (batched generation needs left padding).
        """
        if IMAGE_TOKEN not in tokenizer.get_vocab():
            tokenizer.add_special_tokens({"additional_special_tokens": [AddedToken(IMAGE_TOKEN, special=True)]},
                                         replace_extra_special_tokens=False)
        token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        if token_id != config.image_token_id:
            raise ValueError(
                f"The tokenizer maps {IMAGE_TOKEN!r} to id {token_id} but the model config expects "
                f"image_token_id={config.image_token_id}; build the config with image_token_id={token_id}."
            )
        tokenizer.padding_side = "left"
        vc = config.vision_config
        return cls(
            image_processor=image_processor or build_image_processor(vc.image_size, pad_to_square),
            tokenizer=tokenizer,
            patch_size=vc.patch_size,
            vision_feature_select_strategy=config.vision_feature_select_strategy,
        )

    def num_image_tokens(self, height: int, width: int) -> int:
        """Image tokens for one preprocessed image of `height` x `width` pixels."""
        n = (height // self.patch_size) * (width // self.patch_size) + self.num_additional_image_tokens
        return n - 1 if self.vision_feature_select_strategy == "default" else n

    @staticmethod
    def build_labels(input_ids: torch.Tensor, assistant_masks: torch.Tensor) -> torch.Tensor:
        """LLaVA labels: `input_ids` where `assistant_masks` is 1 (assistant replies + <|im_end|>), else -100.

        Use with `apply_chat_template(..., tokenize=True, return_dict=True,
        return_assistant_tokens_mask=True, return_tensors="pt")`.
        """
        input_ids = torch.as_tensor(input_ids)
        assistant_masks = torch.as_tensor(assistant_masks)
        if assistant_masks.shape != input_ids.shape:
            raise ValueError(f"assistant_masks shape {tuple(assistant_masks.shape)} != input_ids shape "
                             f"{tuple(input_ids.shape)}.")
        return torch.where(assistant_masks.bool(), input_ids, torch.full_like(input_ids, IGNORE_INDEX))


LlavaFAProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["LlavaFAProcessor", "build_image_processor", "CHAT_TEMPLATE", "IMAGE_TOKEN", "DEFAULT_SYSTEM_PROMPT"]

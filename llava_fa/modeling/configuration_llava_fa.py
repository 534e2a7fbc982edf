"""`LlavaFAConfig`: CLIP vision tower + 2-layer GELU MLP projector + Qwen2 language model.

A thin subclass of transformers' `LlavaConfig` (same fields, same meaning) with:
  * `model_type = "llava_fa"`, sub-configs fixed to `CLIPVisionConfig` and `Qwen2Config`;
  * validation with actionable errors (feature layer, select strategy, image token, projector);
  * `LlavaFAConfig.from_preset(name)` for the tiny test model and the real CLIP-L/14-336 + Qwen2.5 sizes.

This file is shipped as Hub remote code: it may only import installed libraries and flat
siblings (`from .x import y`).
"""

from __future__ import annotations

import copy
from typing import Any

from transformers import CLIPVisionConfig, Qwen2Config
from transformers.activations import ACT2FN
from transformers.configuration_utils import SubConfigSpec
from transformers.models.llava.configuration_llava import LlavaConfig

from llava_fa.shipping import ShipsRemoteCode

# Qwen2.5's tokenizer holds 151643 BPE tokens + 22 special tokens (ids 151643..151664), so adding
# "<image>" as a special token gives id 151665. That id lies inside the padded embedding matrix
# (151936 / 152064 rows), so no `resize_token_embeddings` is needed for the real presets.
QWEN25_IMAGE_TOKEN_ID = 151665

# openai/clip-vit-large-patch14-336 (vision part), as published.
CLIP_VIT_L14_336: dict[str, Any] = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 336,
    "patch_size": 14,
    "projection_dim": 768,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "num_channels": 3,
}

_QWEN25_COMMON: dict[str, Any] = {
    "hidden_act": "silu",
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "sliding_window": 32768,
    "use_sliding_window": False,
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
}

# Qwen/Qwen2.5-{0.5B,1.5B,3B,7B}(-Instruct) config.json values, one row per size.
_QWEN25_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                  "num_key_value_heads", "vocab_size", "max_window_layers", "tie_word_embeddings")
_QWEN25_ROWS: dict[str, tuple[Any, ...]] = {
    "qwen2.5-0.5b": (896, 4864, 24, 14, 2, 151936, 21, True),
    "qwen2.5-1.5b": (1536, 8960, 28, 12, 2, 151936, 21, True),
    "qwen2.5-3b": (2048, 11008, 36, 16, 2, 151936, 70, True),
    "qwen2.5-7b": (3584, 18944, 28, 28, 4, 152064, 28, False),
}
QWEN25_TEXT: dict[str, dict[str, Any]] = {
    name: dict(_QWEN25_COMMON, **dict(zip(_QWEN25_FIELDS, row))) for name, row in _QWEN25_ROWS.items()
}

# The tiny model (a few MB, CPU-fast): 28 px images / patch 14 -> 4 image tokens.
# Its vocabulary matches `build_tiny_tokenizer()` (TINY_VOCAB_SIZE ids, "<image>" = TINY_IMAGE_TOKEN_ID).
TINY_VOCAB_SIZE = 384
TINY_IMAGE_TOKEN_ID = 3
TINY_PRESET: dict[str, Any] = {
    "vision_config": {
        "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
        "image_size": 28, "patch_size": 14, "projection_dim": 32, "hidden_act": "quick_gelu",
    },
    "text_config": {
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": TINY_VOCAB_SIZE, "max_position_embeddings": 512,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": False,
        "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 0,
    },
    "image_token_index": TINY_IMAGE_TOKEN_ID,
}

PRESETS: dict[str, dict[str, Any]] = {"tiny": TINY_PRESET}
for _name, _text in QWEN25_TEXT.items():
    PRESETS[_name] = {
        "vision_config": dict(CLIP_VIT_L14_336),
        "text_config": dict(_text),
        "image_token_index": QWEN25_IMAGE_TOKEN_ID,
    }

SUPPORTED_PROJECTOR_TYPES = ("mlp2x_gelu",)


class LlavaFAConfig(ShipsRemoteCode, LlavaConfig):
    r"""Configuration of a LLaVA-FA model (LLaVA-1.5 layout with a Qwen2 language model).

    Fields (in addition to `LlavaConfig`'s, whose meaning is unchanged):
        vision_config (`CLIPVisionConfig` | dict): the CLIP vision tower.
        text_config (`Qwen2Config` | dict): the Qwen2 / Qwen2.5 language model.
        image_token_index / image_token_id (int): id of the image placeholder token; one image fills
            `image_seq_length` consecutive such tokens.
        vision_feature_layer (int): hidden-state index of the vision tower fed to the projector
            (LLaVA: -2, the penultimate layer).
        vision_feature_select_strategy ("default" | "full"): "default" drops CLS (LLaVA),
            "full" keeps it.
        projector_hidden_act (str): activation between the projector's two linears ("gelu":
            LLaVA's "mlp2x_gelu", see `mm_projector_type`).
    `image_seq_length` is derived: (image_size // patch_size) ** 2 (+1 for "full").
    """

    model_type = "llava_fa"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=CLIPVisionConfig, init_kwargs=dict(CLIP_VIT_L14_336)),
        "text_config": SubConfigSpec(config_class=Qwen2Config, init_kwargs=dict(QWEN25_TEXT["qwen2.5-7b"])),
    }

    image_token_index: int = QWEN25_IMAGE_TOKEN_ID

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self._validate()
        self.image_seq_length = self.num_image_tokens

    # ---- derived quantities -------------------------------------------------------------
    @property
    def num_image_tokens(self) -> int:
        """Image tokens per image: (image_size // patch_size)^2, +1 when CLS is kept ("full")."""
        side = self.vision_config.image_size // self.vision_config.patch_size
        return side * side + (1 if self.vision_feature_select_strategy == "full" else 0)

    @property
    def mm_projector_type(self) -> str:
        """LLaVA's name for the projector, e.g. "mlp2x_gelu" (two linears with the activation between)."""
        return f"mlp2x_{self.projector_hidden_act}"

    @property
    def projector_dims(self) -> tuple[int, int]:
        """(input, output) features of the projector: (vision hidden * #feature layers, text hidden)."""
        n_layers = 1 if isinstance(self.vision_feature_layer, int) else len(self.vision_feature_layer)
        return self.vision_config.hidden_size * n_layers, self.text_config.hidden_size

    # ---- validation ---------------------------------------------------------------------
    def _validate(self) -> None:
        # vision_config is always a CLIPVisionConfig here (the sub-config spec converts it), and transformers'
        # strict fields already reject an unknown vision_feature_select_strategy.
        if not isinstance(self.text_config, Qwen2Config):
            raise TypeError(
                f"LlavaFAConfig.text_config must be a Qwen2Config (or its dict), got {type(self.text_config).__name__}."
            )
        n_states = self.vision_config.num_hidden_layers + 1  # embeddings + each layer
        layers = [self.vision_feature_layer] if isinstance(self.vision_feature_layer, int) else list(
            self.vision_feature_layer
        )
        for layer in layers:
            if not -n_states <= layer < n_states:
                raise ValueError(
                    f"vision_feature_layer={layer} is out of range for a vision tower with "
                    f"{self.vision_config.num_hidden_layers} layers (valid: {-n_states}..{n_states - 1}); "
                    f"LLaVA uses -2."
                )
        if self.projector_hidden_act not in ACT2FN:
            raise ValueError(
                f"projector_hidden_act={self.projector_hidden_act!r} is not a transformers activation; "
                f"LLaVA's mlp2x_gelu uses 'gelu'."
            )
        if self.vision_config.image_size % self.vision_config.patch_size:
            raise ValueError(
                f"vision_config.image_size={self.vision_config.image_size} is not a multiple of "
                f"patch_size={self.vision_config.patch_size}."
            )
        if not 0 <= self.image_token_index < self.text_config.vocab_size:
            raise ValueError(
                f"image_token_id={self.image_token_index} is outside the language model's vocabulary "
                f"(text_config.vocab_size={self.text_config.vocab_size}); add '<image>' to the tokenizer and "
                f"resize the embeddings, or pick an id < vocab_size."
            )

    # ---- presets ------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> LlavaFAConfig:
        """Build a config from a named preset ("tiny", "qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-3b", "qwen2.5-7b").

        `overrides` are top-level config fields (e.g. `vision_feature_layer=-1`); nested dicts
        for `vision_config` / `text_config` update the preset's sub-config values.
        """
        if name not in PRESETS:
            raise ValueError(f"Unknown LlavaFAConfig preset {name!r}; choose one of {sorted(PRESETS)}.")
        kwargs = copy.deepcopy(PRESETS[name])
        for key in ("vision_config", "text_config"):
            if isinstance(overrides.get(key), dict):
                kwargs[key].update(overrides.pop(key))
        kwargs.update(overrides)
        return cls(**kwargs)


LlavaFAConfig.register_for_auto_class("AutoConfig")

__all__ = ["LlavaFAConfig", "PRESETS", "QWEN25_IMAGE_TOKEN_ID", "TINY_IMAGE_TOKEN_ID", "TINY_VOCAB_SIZE"]

"""LLaVA-FA modeling: config, model, processor, Auto-class registration and tiny builders.

Importing this package registers `llava_fa` with AutoConfig, AutoModel,
AutoModelForImageTextToText and AutoProcessor (idempotent).
"""

from .configuration_llava_fa import PRESETS, QWEN25_IMAGE_TOKEN_ID, LlavaFAConfig
from .modeling_llava_fa import LlavaFAForConditionalGeneration, LlavaFAModel, LlavaFAPreTrainedModel
from .processing_llava_fa import CHAT_TEMPLATE, LlavaFAProcessor, build_image_processor
from .registration import register_auto_classes
from .remote_code import SHIPPED_MODULES, register_shipped_module, write_remote_code
from .tiny import build_tiny_llava_fa, build_tiny_processor, build_tiny_tokenizer, save_tiny_llava_fa

register_auto_classes()

__all__ = [
    "CHAT_TEMPLATE",
    "PRESETS",
    "QWEN25_IMAGE_TOKEN_ID",
    "SHIPPED_MODULES",
    "LlavaFAConfig",
    "LlavaFAForConditionalGeneration",
    "LlavaFAModel",
    "LlavaFAPreTrainedModel",
    "LlavaFAProcessor",
    "build_image_processor",
    "build_tiny_llava_fa",
    "build_tiny_processor",
    "build_tiny_tokenizer",
    "register_auto_classes",
    "register_shipped_module",
    "save_tiny_llava_fa",
    "write_remote_code",
]

"""LLaVA-FA modeling: config, model, processor, Auto-class registration.

Importing this package registers `llava_fa` with AutoConfig, AutoModel,
AutoModelForImageTextToText and AutoProcessor (idempotent).
"""

from .configuration_llava_fa import PRESETS, QWEN25_IMAGE_TOKEN_ID, LlavaFAConfig
from .modeling_llava_fa import LlavaFAForConditionalGeneration, LlavaFAModel, LlavaFAPreTrainedModel
from .processing_llava_fa import CHAT_TEMPLATE, LlavaFAProcessor, build_image_processor
from .registration import register_auto_classes

register_auto_classes()
# A quantized LLaVA-FA folder names quant_method="fourier_approx": register the quantizer too (the
# quantization package does not import this one, so there is no cycle).
import llava_fa.quantization  # noqa: E402,F401

__all__ = [
    "CHAT_TEMPLATE",
    "PRESETS",
    "QWEN25_IMAGE_TOKEN_ID",
    "LlavaFAConfig",
    "LlavaFAForConditionalGeneration",
    "LlavaFAModel",
    "LlavaFAPreTrainedModel",
    "LlavaFAProcessor",
    "build_image_processor",
    "register_auto_classes",
]

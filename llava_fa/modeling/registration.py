"""Register LLaVA-FA with transformers' Auto classes (safe to call any number of times)."""

from __future__ import annotations

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor

from .configuration_llava_fa import LlavaFAConfig
from .modeling_llava_fa import LlavaFAForConditionalGeneration, LlavaFAModel
from .processing_llava_fa import LlavaFAProcessor


def register_auto_classes() -> None:
    """AutoConfig["llava_fa"], AutoModel, AutoModelForImageTextToText and AutoProcessor -> LLaVA-FA classes.

    Uses `exist_ok=True` so a repeat (or a second import of the package) does not raise.
    """
    AutoConfig.register(LlavaFAConfig.model_type, LlavaFAConfig, exist_ok=True)
    AutoModel.register(LlavaFAConfig, LlavaFAModel, exist_ok=True)
    AutoModelForImageTextToText.register(LlavaFAConfig, LlavaFAForConditionalGeneration, exist_ok=True)
    AutoProcessor.register(LlavaFAConfig, LlavaFAProcessor, exist_ok=True)


__all__ = ["register_auto_classes"]

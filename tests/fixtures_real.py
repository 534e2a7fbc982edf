"""Fixtures on the real all-MiniLM-L6-v2 weights (loaded once per session)."""

from __future__ import annotations

import pytest

from llava_fa.reference import SENTENCES, minilm_linear_inputs, minilm_linear_weights

LAYER = "encoder.layer.0.intermediate.dense.weight"


@pytest.fixture(scope="session")
def minilm_weights():
    return minilm_linear_weights()


@pytest.fixture(scope="session")
def minilm_weight(minilm_weights):
    return minilm_weights["encoder.layer.0.attention.self.query.weight"]


@pytest.fixture(scope="session")
def minilm_layer(minilm_weights):
    """(weight (1536, 384), calibration inputs, held-out inputs) of a real FFN layer."""
    cal = minilm_linear_inputs(SENTENCES[:8])[LAYER]
    held_out = minilm_linear_inputs(SENTENCES[8:])[LAYER]
    return minilm_weights[LAYER], cal, held_out

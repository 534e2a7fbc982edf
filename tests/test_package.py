"""Package-level contracts: import costs and layering, the public API."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _fresh(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_core_does_not_import_transformers():
    code = "import sys, llava_fa, llava_fa.fourier; print(sorted(m for m in sys.modules if m.startswith(('transformers', 'peft'))))"
    assert _fresh(code) == "[]"


def test_top_level_names_are_lazy_and_complete():
    import llava_fa

    for name in llava_fa.__all__:
        assert getattr(llava_fa, name) is not None, name
    assert "build_tiny_llava_fa" not in llava_fa.__all__  # test helpers live in llava_fa.testing
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        llava_fa.nope  # noqa: B018


def test_modeling_and_quantization_import_in_either_order():
    for first, second in (("modeling", "quantization"), ("quantization", "modeling")):
        out = _fresh(f"import llava_fa.{first}, llava_fa.{second}; from transformers.quantizers.auto import "
                     "AUTO_QUANTIZER_MAPPING as m; print('fourier_approx' in m)")
        assert out == "True", (first, second)

"""Remote code: auto_map + flat shipped files; loading in a process where llava_fa is not importable."""

from __future__ import annotations

import ast
import json
import subprocess

import pytest
import torch
from conftest import gradient_image

from llava_fa import shipping
from llava_fa.shipping import flatten_source, write_remote_code
from llava_fa.testing.isolation import run_without_package

# A plain (not quantized) LLaVA-FA folder ships exactly these: no quantization or core module.
SHIPPED = {"configuration_llava_fa.py", "modeling_llava_fa.py", "processing_llava_fa.py", "shipping.py"}


def test_saved_folder_has_auto_maps_and_flat_code(tiny_folder):
    config = json.loads((tiny_folder / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_llava_fa.LlavaFAConfig",
        "AutoModel": "modeling_llava_fa.LlavaFAModel",
        "AutoModelForImageTextToText": "modeling_llava_fa.LlavaFAForConditionalGeneration",
    }
    processor = json.loads((tiny_folder / "processor_config.json").read_text())
    assert processor["auto_map"] == {"AutoProcessor": "processing_llava_fa.LlavaFAProcessor"}
    tokenizer = json.loads((tiny_folder / "tokenizer_config.json").read_text())
    assert tokenizer.get("processor_class") == "LlavaFAProcessor"
    shipped = {p.name for p in tiny_folder.glob("*.py")}
    assert shipped == SHIPPED
    for name in shipped:  # only installed libraries and flat siblings are imported
        tree = ast.parse((tiny_folder / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.level in (0, 1) and not (node.module or "").startswith("llava_fa"), (name, node.module)
                if node.level == 1:
                    assert f"{node.module}.py" in shipped, (name, node.module)
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("llava_fa") for a in node.names), name


REMOTE_SCRIPT = """
import json, sys, torch
from PIL import Image
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor
folder, image_path, out_path = sys.argv[1:4]
config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the image?"}]}]
text = processor.apply_chat_template(messages, add_generation_prompt=True)
inputs = processor(images=Image.open(image_path), text=text, return_tensors="pt")
with torch.no_grad():
    logits = model(**inputs).logits
generated = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
try:
    cut = int((inputs["input_ids"][0] == config.image_token_id).nonzero()[1]) + 1  # keep 2 of 4 image tokens
    model(input_ids=inputs["input_ids"][:, :cut], pixel_values=inputs["pixel_values"])
    error = None
except ValueError as e:
    error = str(e)
base = AutoModel.from_pretrained(folder, trust_remote_code=True)
torch.save({"logits": logits, "generated": generated, "input_ids": inputs["input_ids"],
            "pixel_values": inputs["pixel_values"]}, out_path)
print(json.dumps({
    "config": type(config).__module__ + "." + type(config).__name__,
    "model": type(model).__module__ + "." + type(model).__name__,
    "base": type(base).__name__,
    "processor": type(processor).__module__ + "." + type(processor).__name__,
    "gradient_checkpointing": model.supports_gradient_checkpointing,
    "error": error,
    "llava_fa_loaded": any(m == "llava_fa" or m.startswith("llava_fa.") for m in sys.modules),
}))
"""


def test_remote_code_loads_without_package_and_gives_same_logits(tiny_folder, tiny_model_and_processor, tmp_path):
    model, processor = tiny_model_and_processor
    image_path = tmp_path / "image.png"
    gradient_image(seed=4).save(image_path)
    out_path = tmp_path / "remote.pt"
    proc = run_without_package(REMOTE_SCRIPT, [str(tiny_folder), str(image_path), str(out_path)])
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["config"].startswith("transformers_modules.") and report["config"].endswith("LlavaFAConfig")
    assert report["model"].startswith("transformers_modules.")
    assert report["model"].endswith("modeling_llava_fa.LlavaFAForConditionalGeneration")
    assert report["processor"].endswith("processing_llava_fa.LlavaFAProcessor") and report["base"] == "LlavaFAModel"
    assert report["gradient_checkpointing"] is True and report["llava_fa_loaded"] is False
    assert "need 4 image tokens (4 each), but input_ids hold 2" in report["error"]  # the shipped model keeps the clear input errors

    remote = torch.load(out_path)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the image?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    from PIL import Image

    local = processor(images=Image.open(image_path), text=text, return_tensors="pt")
    assert torch.equal(local["input_ids"], remote["input_ids"])
    assert torch.equal(local["pixel_values"], remote["pixel_values"])
    with torch.no_grad():
        assert torch.equal(model(**local).logits, remote["logits"])
    generated = model.generate(**local, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert torch.equal(generated, remote["generated"])


def test_isolation_really_hides_the_package():
    proc = run_without_package("import importlib.util; print(importlib.util.find_spec('transformers') is not None)")
    assert proc.stdout.strip() == "True"
    with pytest.raises(subprocess.CalledProcessError) as info:
        run_without_package("import llava_fa")
    assert "No module named 'llava_fa'" in info.value.stderr


# ---------------------------------------------------------------- the shipping mechanism
NAMES = {"configuration_llava_fa", "modeling_llava_fa", "polar", "hf_quantizer"}


def test_flatten_source_rewrites_package_imports_only():
    source = '''"""Doc.

    from llava_fa.fourier.nothing import x   (docstrings are left alone)
    """
import torch
from transformers import PreTrainedModel
from llava_fa.fourier.polar import polar_quantize
from ..quantization.hf_quantizer import (
    FourierQuantizer,
)
from .configuration_llava_fa import LlavaFAConfig
try:
    from llava_fa.fourier.polar import other
except ImportError:
    pass
'''
    flat = flatten_source(source, "m", NAMES)
    assert "from .polar import polar_quantize" in flat
    assert "from .hf_quantizer import (\n    FourierQuantizer,\n)" in flat
    assert "from .configuration_llava_fa import LlavaFAConfig" in flat
    assert "    from .polar import other" in flat
    assert "from llava_fa.fourier.nothing import x   (docstrings" in flat
    assert "from transformers import PreTrainedModel" in flat and "import torch" in flat


@pytest.mark.parametrize(
    "line, match",
    [
        ("from llava_fa.fourier.missing import f", r"flat module `missing.py` is not shipped"),
        ("from llava_fa import fourier", "imports a package"),
        ("from .. import fourier", "imports a package"),
        ("import llava_fa.fourier.polar", "cannot be shipped as remote code"),
    ],
)
def test_flatten_source_rejects_unshippable_imports(line, match):
    with pytest.raises(ValueError, match=match):
        flatten_source(line + "\n", "m", NAMES)


def test_write_remote_code_ships_the_import_closure_once(tmp_path, monkeypatch):
    written = write_remote_code(tmp_path, ["llava_fa.quantization.fourier_linear"])
    names = {p.name for p in written}
    assert {"fourier_linear.py", "approximate.py", "polar_quant.py", "settings.py", "shipping.py"} <= names
    assert "modeling_llava_fa.py" not in names and "fourier_quantizer.py" not in names
    writes = []
    monkeypatch.setattr(shipping.os, "replace", lambda a, b: writes.append(b))
    write_remote_code(tmp_path, ["llava_fa.quantization.fourier_linear"])  # same content: nothing rewritten
    assert writes == []


def test_write_remote_code_rejects_unknown_and_ambiguous_modules(tmp_path):
    with pytest.raises(ValueError, match="'no_such_module' has no source file"):
        write_remote_code(tmp_path, ["llava_fa.nowhere.no_such_module"])
    assert not list(tmp_path.iterdir())  # nothing half-written

"""Model cards (`llava_fa.hub.card`): metadata checked offline (YAML parses, required keys, pipeline_tag a
transformers task, tags, license from the base's card, model-index from eval results), size table
arithmetic, eval-results parsing, and `ensure_model_card` (what `push_to_hub` relies on)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from hub_fixtures import BASE_MODEL, compressed_tiny

from llava_fa.hub import card as card_mod
from llava_fa.hub.card import (
    CARD_TAGS,
    build_model_card,
    check_model_card,
    ensure_model_card,
    load_eval_results,
    pipeline_tag_for,
    size_by_part,
    write_model_card,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compressed(tmp_path_factory, tiny_folder):
    return compressed_tiny(tmp_path_factory, tiny_folder)


@pytest.fixture(scope="module")
def model(compressed):
    from llava_fa.hub.checkpoint import load_checkpoint

    return load_checkpoint(compressed.folder)


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


def test_documented_template_is_the_packaged_one():
    assert (REPO_ROOT / "model_cards" / "llava_fa_template.md").read_text() == card_mod.template_text()


def test_card_metadata_and_body(model, compressed):
    card = build_model_card(model, base_model="org/dense", license="mit", repo_id="me/tiny-fourier",
                            folder=compressed.folder)
    meta = front_matter(str(card))
    assert meta["base_model"] == "org/dense" and meta["base_model_relation"] == "quantized"
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "image-text-to-text"
    assert meta["license"] == "mit"
    assert set(CARD_TAGS) <= set(meta["tags"]) and "rank-2" in meta["tags"]
    assert "model-index" not in meta  # no eval results given
    assert check_model_card(str(card)) == meta
    text = card.text
    for needle in ("| rank (complex, per matrix) | 2 |", "| codebook | `uniform` |", "| calibration | none |",
                   "`vision_tower`", "`language_model`", "**whole model**", "trust_remote_code=True",
                   'from_pretrained("me/tiny-fourier"', "Not evaluated yet", "Not measured", "@misc{zheng2026llavafa"):
        assert needle in text, needle


def test_size_table_matches_the_report(model):
    from llava_fa.quantization import compression_report

    report = compression_report(model)
    parts = size_by_part(model, report)
    total = parts[-1]
    assert [p.part for p in parts] == ["vision_tower", "multi_modal_projector", "language_model", "lm_head", "total"]
    assert total.stored_bytes == report.model_stored_bytes and total.bf16_bytes == report.model_bf16_bytes
    assert total.modules == len(report.modules) == 28
    assert sum(p.stored_bytes for p in parts[:-1]) == total.stored_bytes
    lm_head = parts[3]
    weight = model.lm_head.weight
    assert lm_head.modules == 0 and lm_head.parameters == weight.numel()
    assert lm_head.stored_bytes == weight.numel() * weight.element_size() and lm_head.bf16_bytes == 2 * weight.numel()
    assert lm_head.bits_per_parameter == pytest.approx(8 * weight.element_size())
    assert total.ratio == pytest.approx(report.model_ratio)


def test_eval_results_become_model_index_and_table(model, tmp_path):
    from huggingface_hub import ModelCard

    results = {"model": "x", "llava_fa_version": "0.1.0", "results": {
        "pope_random": {"task": "pope_random", "split": "test", "n_samples": 6, "metric": "f1",
                        "scores": {"accuracy": 0.5, "f1": 0.4, "yes_ratio": 0.5, "n": 6,
                                   "per_category": {"random": {"f1": 0.4}}},
                        "predictions": [{"id": 1, "prediction": "yes"}]},
        "mme": {"task": "mme", "split": "test", "n_samples": 4, "scores": {"perception": 1200.5}}}}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(results))
    fidelity = tmp_path / "f.json"
    fidelity.write_text(json.dumps({"model": "x", "reference": "y", "token_agreement": 0.75, "mean_kl": 0.125,
                                    "n_prompts": 8, "per_prompt": []}))
    folder = tmp_path / "card"
    folder.mkdir()
    dest = write_model_card(folder, model, base_model="org/dense", eval_results=[path, fidelity])
    card = ModelCard.load(dest)
    got = sorted((r.dataset_name, r.dataset_type, r.metric_type, r.metric_value, r.task_type) for r in card.data.eval_results)
    assert got == [("mme", "lmms-lab/MME", "perception", 1200.5, "image-text-to-text"),
                   ("pope_random", "lmms-lab/POPE", "accuracy", 0.5, "image-text-to-text"),
                   ("pope_random", "lmms-lab/POPE", "f1", 0.4, "image-text-to-text"),
                   ("pope_random", "lmms-lab/POPE", "yes_ratio", 0.5, "image-text-to-text")]
    assert "| pope_random | test | 6 | f1 | 0.4 |" in card.text
    assert "token_agreement = 0.75, mean_kl = 0.125" in card.text
    assert "Measured with llava-fa eval 0.1.0" in card.text
    assert check_model_card(dest)["model-index"][0]["name"] == "card"


@pytest.mark.parametrize("payload", [
    [{"task": "gqa", "split": "testdev", "n_samples": 3, "scores": {"accuracy": 0.25}}],
    {"gqa": {"split": "testdev", "n_samples": 3, "scores": {"accuracy": 0.25}}},
    {"task": "gqa", "split": "testdev", "n_samples": 3, "scores": {"accuracy": 0.25}},
])
def test_load_eval_results_shapes(payload):
    summary = load_eval_results(payload)
    assert [(r.task, r.metric, r.value, r.split, r.n_samples) for r in summary.rows] == [
        ("gqa", "accuracy", 0.25, "testdev", 3)]


def test_load_eval_results_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such evaluation results file"):
        load_eval_results(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_eval_results(bad)
    with pytest.raises(ValueError, match="no numeric scores"):
        load_eval_results({"results": [{"task": "pope", "scores": {"note": "text"}}]})


def test_pipeline_tags_are_transformers_tasks(model):
    from transformers import CLIPVisionConfig, Qwen2Config

    tasks = card_mod.transformers_tasks()
    assert pipeline_tag_for(model) == "image-text-to-text"
    text_config = Qwen2Config(architectures=["Qwen2ForCausalLM"])
    vision_config = CLIPVisionConfig(architectures=["CLIPVisionModel"])
    assert pipeline_tag_for(text_config) == "text-generation"
    assert pipeline_tag_for(vision_config) == "image-feature-extraction"
    assert {"image-text-to-text", "text-generation", "image-feature-extraction"} <= tasks


@pytest.mark.parametrize("edit, problem", [
    (lambda m: m.pop("base_model"), "missing key 'base_model'"),
    (lambda m: m.update(base_model_relation="finetune"), "expected 'quantized'"),
    (lambda m: m.update(pipeline_tag="image-to-poem"), "not a transformers task"),
    (lambda m: m.update(tags=["llava-fa"]), "tags lack"),
    (lambda m: m.update(library_name="diffusers"), "expected 'transformers'"),
])
def test_check_model_card_rejects(edit, problem):
    meta = {"base_model": "o/d", "base_model_relation": "quantized", "library_name": "transformers",
            "pipeline_tag": "image-text-to-text", "tags": list(CARD_TAGS)}
    check_model_card("---\n" + yaml.safe_dump(meta) + "---\nbody\n")
    edit(meta)
    with pytest.raises(ValueError, match=problem):
        check_model_card("---\n" + yaml.safe_dump(meta) + "---\nbody\n")


def test_check_model_card_rejects_broken_yaml():
    with pytest.raises(ValueError, match="does not parse"):
        check_model_card("---\nbase_model: [unclosed\n---\nbody\n")
    with pytest.raises(ValueError, match="no YAML metadata"):
        check_model_card("# just a title\n")


def test_license_copied_from_base_card_via_hub(model, tmp_path):
    from fake_hub import FakeHub

    hub = FakeHub()
    hub.repos["org/dense"] = {"main": {"README.md": b"---\nlicense: apache-2.0\ntags: [llava]\n---\n# dense\n"}}
    hub.private["org/dense"] = False
    with hub.install(cache_dir=str(tmp_path / "cache")):
        card = build_model_card(model, base_model="org/dense")
    assert front_matter(str(card))["license"] == "apache-2.0"
    assert any(r.route == "resolve" and r.path.endswith("/README.md") for r in hub.requests)
    # offline (the default in tests): the license stays unknown and the key is left out
    assert "license" not in front_matter(str(build_model_card(model, base_model="org/dense")))


def test_license_copied_from_local_base_folder(model, tmp_path):
    base = tmp_path / "dense"
    base.mkdir()
    (base / "README.md").write_text("---\nlicense: llama3\n---\n")
    assert card_mod.base_model_license("org/dense", local_folder=base) == "llama3"
    assert card_mod.base_model_license("org/dense") is None  # offline, no local card


def test_ensure_model_card_replaces_generic_card_and_keeps_ours(compressed, model, tmp_path):
    from huggingface_hub import ModelCard, ModelCardData

    folder = tmp_path / "staging"
    shutil.copytree(compressed.folder, folder)
    generic = ModelCard.from_template(ModelCardData(library_name="transformers", tags=["my-tag"]),
                                      model_description="generic")
    generic.save(folder / "README.md")
    model.name_or_path = str(compressed.folder)  # loaded from a folder whose card names the base model
    dest = ensure_model_card(folder, model)
    meta = check_model_card(dest)
    assert meta["base_model"] == BASE_MODEL and "my-tag" in meta["tags"] and "llava-fa" in meta["tags"]
    before = dest.read_text()
    assert ensure_model_card(folder, model) == dest and dest.read_text() == before  # ours is kept as is


def test_ensure_model_card_ignores_dense_models(tiny_model_and_processor, tmp_path):
    dense, _ = tiny_model_and_processor
    assert ensure_model_card(tmp_path, dense) is None
    assert not (tmp_path / "README.md").exists()


def test_card_for_uncompressed_model_fails(tiny_model_and_processor):
    dense, _ = tiny_model_and_processor
    with pytest.raises(ValueError, match="not compressed"):
        build_model_card(dense, base_model="o/d")


def test_speed_section_names_the_hardware(model):
    text = build_model_card(model, base_model="o/d", speed={"hardware": "1x NVIDIA H200, torch 2.11",
                                                            "load + compress": "13.8 s"}).text
    assert "Measured on 1x NVIDIA H200, torch 2.11:" in text and "| load + compress | 13.8 s |" in text
    assert "Not measured for this checkpoint" not in text

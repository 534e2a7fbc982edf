"""`llava-fa` command line: every subcommand's success path and each documented failure (exit status +
one-line reason), on the tiny LLaVA-FA model. The one real compression runs once per session
(`hub_fixtures.compressed_tiny`, a subprocess `python -m llava_fa.cli compress`)."""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import pytest
from hub_fixtures import BASE_MODEL, FAST_FLAGS, compressed_tiny, tree_state

from llava_fa.cli import build_parser, config_defaults, main, parse_overrides, parse_value

COMMANDS = ["compress", "calibrate", "report", "card", "push", "eval"]


@pytest.fixture(scope="module")
def compressed(tmp_path_factory, tiny_folder):
    return compressed_tiny(tmp_path_factory, tiny_folder)


def run(argv, capsys):
    """main(argv) -> (exit status, stdout, stderr)."""
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_line_error(code, err, command, *needles):
    assert code == 1, err
    lines = [line for line in err.strip().splitlines() if line.startswith(f"llava-fa {command}: error:")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]


# ------------------------------------------------------------------------------------ help / parsing
@pytest.mark.parametrize("command", COMMANDS)
def test_each_subcommand_help_shows_an_example(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "example:" in out and f"llava-fa {command} " in out.split("example:")[1]


def test_top_level_help_lists_commands_and_example(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert command in out
    assert "example:" in out


def test_compress_defaults_are_the_config_defaults(capsys):
    from llava_fa.quantization import FourierApproxConfig

    defaults = config_defaults()
    assert defaults["rank"] == FourierApproxConfig().rank and defaults["codebook"] == FourierApproxConfig().codebook
    args = build_parser().parse_args(["compress", "in", "out"])
    assert not hasattr(args, "rank") and not hasattr(args, "group_size")  # unset -> FourierApproxConfig's defaults
    with pytest.raises(SystemExit):
        main(["compress", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"(default {defaults['rank']})" in help_text
    assert f"(default {defaults['phase_bits']})" in help_text


def test_compress_flags_reach_the_config(monkeypatch, tiny_folder, tmp_path, capsys):
    import llava_fa.hub.checkpoint as checkpoint
    from llava_fa.quantization import FourierApproxConfig

    seen = {}

    def fake_load(folder, trust_remote_code=False, **kwargs):
        seen.update(kwargs, trust_remote_code=trust_remote_code)
        raise RuntimeError("stop here")

    monkeypatch.setattr(checkpoint, "load_checkpoint", fake_load)
    code, _, err = run(["compress", str(tiny_folder), str(tmp_path / "o1")], capsys)
    assert code == 1 and "stop here" in err
    assert seen["quantization_config"].to_dict() == FourierApproxConfig().to_dict()
    assert "device_map" not in seen and "dtype" not in seen

    code, _, err = run(["compress", str(tiny_folder), str(tmp_path / "o2"), "--rank", "3", "--amplitude-bits", "4",
                        "--phase-bits", "4", "--group-size", "none", "--codebook", "vq", "--transform", "rfft2",
                        "--override", "vision_tower.rank=8", "--override", r"layers\.0\..*.phase_aware=false",
                        "--device-map", "cpu", "--dtype", "bfloat16", "--trust-remote-code"], capsys)
    q = seen["quantization_config"]
    assert (q.rank, q.amplitude_bits, q.phase_bits, q.group_size, q.codebook, q.transform) == (3, 4, 4, None, "vq", "rfft2")
    assert q.overrides == {"vision_tower": {"rank": 8}, r"layers\.0\..*": {"phase_aware": False}}
    assert seen["device_map"] == "cpu" and seen["dtype"] == "bfloat16" and seen["trust_remote_code"] is True
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_parse_overrides_and_values():
    assert parse_overrides(["vision_tower.rank=32", "a.b.codebook=vq"]) == {"vision_tower": {"rank": 32},
                                                                            "a.b": {"codebook": "vq"}}
    assert [parse_value(v) for v in ["3", "0.5", "true", "None", "lloyd"]] == [3, 0.5, True, None, "lloyd"]


@pytest.mark.parametrize("item, needle", [("rank=3", "PATTERN.FIELD=VALUE"), ("vision_tower.rank", "PATTERN.FIELD=VALUE"),
                                          ("vision_tower.colour=3", "'colour' cannot be set per module")])
def test_compress_bad_override_fails(item, needle, tiny_folder, tmp_path, capsys):
    code, _, err = run(["compress", str(tiny_folder), str(tmp_path / "o"), "--override", item], capsys)
    assert_one_line_error(code, err, "compress", needle)
    assert not (tmp_path / "o").exists()


def test_compress_bad_value_fails_with_config_reason(tiny_folder, tmp_path, capsys):
    code, _, err = run(["compress", str(tiny_folder), str(tmp_path / "o"), "--amplitude-bits", "9"], capsys)
    assert_one_line_error(code, err, "compress", "amplitude_bits")


# ------------------------------------------------------------------------------------ compress
def test_compress_writes_checkpoint_card_and_side_files(compressed):
    from llava_fa.hub.card import check_model_card

    folder = compressed.folder
    names = {p.name for p in folder.iterdir()}
    for required in ("config.json", "model.safetensors", "README.md", "tokenizer.json", "processor_config.json",
                     "chat_template.jinja", "modeling_llava_fa.py", "configuration_llava_fa.py", "generation_config.json",
                     "processing_llava_fa.py"):
        assert required in names, required
    config = json.loads((folder / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "fourier_approx"
    assert config["quantization_config"]["rank"] == 2 and config["quantization_config"]["codebook"] == "uniform"
    assert "AutoModelForImageTextToText" in config["auto_map"]
    meta = check_model_card(folder / "README.md")
    assert meta["base_model"] == BASE_MODEL and meta["base_model_relation"] == "quantized"
    assert meta["model_name"] == folder.name and f"# {folder.name}\n" in (folder / "README.md").read_text()
    # atomic write: no temporary folder left next to OUTPUT
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]
    assert "wrote" in compressed.stdout and "bits per weight" in compressed.stdout
    assert "LlavaFAProcessor saved" in compressed.stdout


def test_compress_honours_hf_progress_bar_switch(compressed):
    # the fixture ran with HF_HUB_DISABLE_PROGRESS_BARS=1: neither the compression nor the loading bar shows
    assert "Fourier-compressing" not in compressed.stderr and "Loading weights" not in compressed.stderr
    assert "compressing" in compressed.stderr  # the one status line


def test_compressed_folder_reloads_in_package(compressed):
    import torch

    from llava_fa.hub.checkpoint import load_checkpoint
    from llava_fa.quantization import is_fourier_linear

    model = load_checkpoint(compressed.folder)
    assert sum(is_fourier_linear(m) for m in model.modules()) == 28
    ids = torch.tensor([[1, 5, 6, 7, 2]])
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids).logits).all()


def test_compress_missing_folder_fails(tmp_path, capsys):
    code, _, err = run(["compress", str(tmp_path / "nope"), str(tmp_path / "o")], capsys)
    assert_one_line_error(code, err, "compress", "no such folder")


def test_compress_not_a_checkpoint_fails(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(["compress", str(empty), str(tmp_path / "o")], capsys)
    assert_one_line_error(code, err, "compress", "not a checkpoint folder", "config.json")
    (empty / "config.json").write_text("{}")
    code, _, err = run(["compress", str(empty), str(tmp_path / "o")], capsys)
    assert_one_line_error(code, err, "compress", "no model.safetensors")


def test_compress_already_compressed_input_fails(compressed, tmp_path, capsys):
    code, _, err = run(["compress", str(compressed.folder), str(tmp_path / "o")], capsys)
    assert_one_line_error(code, err, "compress", "already compressed")
    assert not (tmp_path / "o").exists()


def test_compress_nonempty_output_fails_and_keeps_it(tiny_folder, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = run(["compress", str(tiny_folder), str(out)], capsys)
    assert_one_line_error(code, err, "compress", "exists and is not empty", "--overwrite")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    target = tmp_path / "file"
    target.write_text("x")
    code, _, err = run(["compress", str(tiny_folder), str(target)], capsys)
    assert_one_line_error(code, err, "compress", "not a folder")


def test_compress_failure_leaves_nothing_half_written(monkeypatch, tiny_folder, tmp_path, capsys):
    from llava_fa.modeling import LlavaFAForConditionalGeneration

    original = LlavaFAForConditionalGeneration.save_pretrained

    def failing_save(self, save_directory, *args, **kwargs):
        original(self, save_directory, *args, **kwargs)  # files are written, then the "disk fills up"
        raise OSError("No space left on device")

    monkeypatch.setattr(LlavaFAForConditionalGeneration, "save_pretrained", failing_save)
    out = tmp_path / "sub" / "o"
    code, _, err = run(["compress", str(tiny_folder), str(out), *FAST_FLAGS], capsys)
    assert_one_line_error(code, err, "compress", "No space left on device")
    assert not out.exists() and list((tmp_path / "sub").iterdir()) == []


def test_compress_overwrite_replaces_folder(monkeypatch, tiny_folder, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    code, stdout, err = run(["compress", str(tiny_folder), str(out), *FAST_FLAGS, "--overwrite", "--no-card"], capsys)
    assert code == 0, err
    names = {p.name for p in out.iterdir()}
    assert "stale.txt" not in names and "README.md" not in names and "model.safetensors" in names
    assert [p.name for p in tmp_path.iterdir()] == ["o"]


def test_compress_local_model_without_base_model_notes_it(monkeypatch, tiny_folder, tmp_path, capsys):
    code, _, err = run(["compress", str(tiny_folder), str(tmp_path / "o"), *FAST_FLAGS], capsys)
    assert code == 0, err
    assert "no base_model" in err
    from llava_fa.hub.card import check_model_card

    meta = check_model_card(tmp_path / "o" / "README.md", require_base=False)
    assert "base_model" not in meta and "llava-fa" in meta["tags"]


# ------------------------------------------------------------------------------------ report
def test_report_table_and_json(compressed, capsys):
    code, out, err = run(["report", str(compressed.folder)], capsys)
    assert code == 0, err
    for part in ("vision_tower", "multi_modal_projector", "language_model", "lm_head", "total"):
        assert part in out
    code, out, _ = run(["report", str(compressed.folder), "--json"], capsys)
    data = json.loads(out)
    assert "modules" not in data and data["total"]["modules"] == 28
    total = data["parts"][-1]
    assert total["part"] == "total" and total["stored_bytes"] == data["model"]["stored_bytes"]
    assert total["bf16_bytes"] == data["model"]["bf16_bytes"]
    assert sum(p["stored_bytes"] for p in data["parts"][:-1]) == data["model"]["stored_bytes"]
    assert data["folder_weight_bytes"] == (compressed.folder / "model.safetensors").stat().st_size
    code, out, _ = run(["report", str(compressed.folder), "--json", "--per-module"], capsys)
    modules = json.loads(out)["modules"]
    assert len(modules) == 28 and all(m["rank"] == 2 for m in modules)
    code, out, _ = run(["report", str(compressed.folder), "--per-module"], capsys)
    assert "converted modules (28)" in out


def test_report_failures(tiny_folder, tmp_path, capsys):
    code, _, err = run(["report", str(tiny_folder)], capsys)
    assert_one_line_error(code, err, "report", "not a llava-fa compressed checkpoint")
    code, _, err = run(["report", str(tmp_path / "missing")], capsys)
    assert_one_line_error(code, err, "report", "no such folder")


# ------------------------------------------------------------------------------------ card
def test_card_with_eval_results(compressed, tmp_path, capsys):
    from huggingface_hub import ModelCard

    folder = tmp_path / "c"
    shutil.copytree(compressed.folder, folder)
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"model": str(folder), "package_version": "0.1.0", "results": [
        {"task": "pope_adversarial", "split": "test", "n_samples": 6,
         "scores": {"accuracy": 0.5, "f1": 0.25, "per_category": {"x": 1.0}}, "reference": {"accuracy": 0.75}}]}))
    code, out, err = run(["card", str(folder), "--base-model", "org/dense", "--eval-results", str(results),
                          "--license", "apache-2.0", "--repo-id", "me/tiny-fourier"], capsys)
    assert code == 0, err
    card = ModelCard.load(folder / "README.md")
    assert card.data.base_model == "org/dense" and card.data.license == "apache-2.0"
    assert [(r.dataset_name, r.metric_type, r.metric_value) for r in card.data.eval_results] == [
        ("pope_adversarial", "accuracy", 0.5), ("pope_adversarial", "f1", 0.25)]
    assert "| pope_adversarial | test | 6 | accuracy | 0.5 | 0.75 | 66.7 % |" in card.text
    assert 'from_pretrained("me/tiny-fourier", trust_remote_code=True' in card.text


def test_card_failures(compressed, tiny_folder, tmp_path, capsys):
    code, _, err = run(["card", str(compressed.folder), "--base-model", "o/d", "--eval-results",
                        str(tmp_path / "none.json")], capsys)
    assert_one_line_error(code, err, "card", "no such evaluation results file")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"results": [{"task": "pope", "scores": {"note": "n/a"}}]}))
    code, _, err = run(["card", str(compressed.folder), "--base-model", "o/d", "--eval-results", str(bad)], capsys)
    assert_one_line_error(code, err, "card", "no numeric scores")
    code, _, err = run(["card", str(tiny_folder), "--base-model", "o/d"], capsys)
    assert_one_line_error(code, err, "card", "not a llava-fa compressed checkpoint")
    with pytest.raises(SystemExit) as exc:
        main(["card", str(compressed.folder)])
    assert exc.value.code == 2
    assert "--base-model" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ calibrate
def _llava_json(folder: Path) -> Path:
    from conftest import gradient_image

    (folder / "images").mkdir(parents=True)
    records = []
    for i in range(3):
        gradient_image(seed=i).save(folder / "images" / f"{i}.png")
        records.append({"id": str(i), "image": f"{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat is in the image?"}, {"from": "gpt", "value": "A cat."}]})
    path = folder / "data.json"
    path.write_text(json.dumps(records))
    return path


def test_calibrate_images_folder_and_llava_json(tiny_folder, tmp_path, capsys):
    from conftest import gradient_image
    from safetensors import safe_open

    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(3):
        gradient_image(seed=i).save(images / f"{i}.png")
    stats = tmp_path / "stats.safetensors"
    code, out, err = run(["calibrate", str(tiny_folder), str(images), str(stats), "--samples", "2"], capsys)
    assert code == 0, err
    with safe_open(stats, "pt") as f:
        keys = set(f.keys())
        channel = f.get_tensor("model.language_model.layers.0.mlp.down_proj.channel")
    assert "model.vision_tower.encoder.layers.0.mlp.fc1.channel" in keys
    assert "model.multi_modal_projector.linear_1.channel" in keys
    assert channel.ndim == 1 and bool((channel > 0).all())
    assert "2 samples" in out

    stats2 = tmp_path / "stats2.safetensors"
    code, out, err = run(["calibrate", str(tiny_folder), str(_llava_json(tmp_path / "llava")), str(stats2)], capsys)
    assert code == 0, err
    assert "3 samples" in out and stats2.is_file()
    code, _, err = run(["calibrate", str(tiny_folder), str(images), str(stats)], capsys)
    assert_one_line_error(code, err, "calibrate", "exists", "--overwrite")

    # the statistics file feeds `compress --calibration`; the card records its SHA-256 (configs keep no path)
    from llava_fa.fourier.calibration import file_sha256

    out = tmp_path / "calibrated"
    code, _, err = run(["compress", str(tiny_folder), str(out), *FAST_FLAGS, "--calibration", str(stats2),
                        "--base-model", BASE_MODEL], capsys)
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert config["calibration_sha256"] == file_sha256(stats2)
    assert f"statistics file sha256 `{file_sha256(stats2)[:12]}" in (out / "README.md").read_text()


def test_calibrate_second_moment_then_compress_with_error_feedback(tiny_folder, tmp_path, capsys):
    from safetensors import safe_open

    stats = tmp_path / "stats.safetensors"
    code, out, err = run(["calibrate", str(tiny_folder), str(_llava_json(tmp_path / "llava")), str(stats),
                          "--second-moment"], capsys)
    assert code == 0, err
    assert "--error-feedback" in out
    with safe_open(stats, "pt") as f:
        sigma = f.get_tensor("model.multi_modal_projector.linear_1.second_moment")
    assert sigma.ndim == 2 and sigma.shape[0] == sigma.shape[1] and bool((sigma.diagonal() >= 0).all())

    out_dir = tmp_path / "ef"
    code, _, err = run(["compress", str(tiny_folder), str(out_dir), *FAST_FLAGS, "--calibration", str(stats),
                        "--error-feedback", "--feedback-damp", "0.05", "--base-model", BASE_MODEL], capsys)
    assert code == 0, err
    config = json.loads((out_dir / "config.json").read_text())["quantization_config"]
    assert config["error_feedback"] is True and config["feedback_damp"] == 0.05
    assert "| error-feedback rounding | yes (dampening 0.05) |" in (out_dir / "README.md").read_text()

    vq_dir = tmp_path / "vq"  # the fixed Gaussian table and least-squares refits, uncalibrated
    code, _, err = run(["compress", str(tiny_folder), str(vq_dir), *FAST_FLAGS, "--codebook", "vq", "--table-fit",
                        "gaussian", "--refit-rounds", "2", "--base-model", BASE_MODEL], capsys)
    assert code == 0, err
    config = json.loads((vq_dir / "config.json").read_text())["quantization_config"]
    assert config["table_fit"] == "gaussian" and config["refit_rounds"] == 2
    card = (vq_dir / "README.md").read_text()
    assert "`vq` (fixed Gaussian table)" in card and "| least-squares refit rounds | 2 |" in card
    code, _, err = run(["compress", str(tiny_folder), str(tmp_path / "bad"), "--table-fit", "gaussian"], capsys)
    assert_one_line_error(code, err, "compress", "table_fit")

    code, _, err = run(["compress", str(tiny_folder), str(tmp_path / "no"), "--error-feedback"], capsys)
    assert_one_line_error(code, err, "compress", "error_feedback", "calibrat")
    assert not (tmp_path / "no").exists()


def test_calibrate_failures(compressed, tiny_folder, tmp_path, capsys):
    code, _, err = run(["calibrate", str(tiny_folder), str(tmp_path / "nodata"), str(tmp_path / "s.safetensors")], capsys)
    assert_one_line_error(code, err, "calibrate", "no such file or folder")
    (tmp_path / "empty").mkdir()
    code, _, err = run(["calibrate", str(tiny_folder), str(tmp_path / "empty"), str(tmp_path / "s.safetensors")], capsys)
    assert_one_line_error(code, err, "calibrate", "no samples")
    code, _, err = run(["calibrate", str(compressed.folder), str(tmp_path / "empty"), str(tmp_path / "s.safetensors")],
                       capsys)
    assert_one_line_error(code, err, "calibrate", "already compressed")
    assert not (tmp_path / "s.safetensors").exists()


def test_compress_with_calibration_file_missing_fails(tiny_folder, tmp_path, capsys):
    code, _, err = run(["compress", str(tiny_folder), str(tmp_path / "o"), "--calibration", str(tmp_path / "x.st")], capsys)
    assert_one_line_error(code, err, "compress", "--calibration", "no such file")


# ------------------------------------------------------------------------------------ eval
@pytest.fixture
def fake_evaluation(monkeypatch):
    """Replace llava_fa.evaluation's entry points with recorders (argument handling only)."""
    calls = {}
    module = types.ModuleType("llava_fa.evaluation")
    module.TASKS = {"pope": None, "mme": None, "gqa": None}

    def evaluate_path(model_path, tasks, data_dir, **kwargs):
        calls["evaluate"] = (Path(model_path), list(tasks), data_dir, kwargs)
        if kwargs.get("output"):
            Path(kwargs["output"]).write_text("{}")
        return {"results": [{"task": t, "scores": {"accuracy": 1.0}} for t in tasks]}

    def fidelity_path(model_path, reference_path, prompts=None, **kwargs):
        calls["fidelity"] = (Path(model_path), Path(reference_path), prompts, kwargs)
        return {"token_agreement": 0.9, "mean_kl": 0.01, "per_prompt": [1, 2]}

    module.evaluate_path, module.fidelity_path = evaluate_path, fidelity_path
    module.default_prompts = lambda: [{"text": f"p{i}"} for i in range(8)]
    monkeypatch.setitem(sys.modules, "llava_fa.evaluation", module)
    import llava_fa

    monkeypatch.setattr(llava_fa, "evaluation", module, raising=False)
    return calls


def test_eval_passes_arguments(fake_evaluation, compressed, tiny_folder, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    out_file = tmp_path / "r.json"
    code, out, err = run(["eval", str(compressed.folder), "--tasks", "pope,mme", "--data", str(data), "--limit", "5",
                          "--batch-size", "2", "--output", str(out_file), "--device", "cpu"], capsys)
    assert code == 0, err
    model_path, tasks, data_dir, kwargs = fake_evaluation["evaluate"]
    assert model_path == compressed.folder and tasks == ["pope", "mme"] and data_dir == str(data)
    assert kwargs == {"limit": 5, "batch_size": 2, "output": str(out_file), "device": "cpu"}
    assert json.loads(out)["results"][1]["task"] == "mme"
    code, out, err = run(["eval", str(compressed.folder), "--reference", str(tiny_folder), "--limit", "3"], capsys)
    assert code == 0, err
    model_path, reference, prompts, kwargs = fake_evaluation["fidelity"]
    assert reference == Path(tiny_folder) and prompts == [{"text": "p0"}, {"text": "p1"}, {"text": "p2"}]
    assert kwargs == {"output": None, "device": None}
    assert json.loads(out) == {"token_agreement": 0.9, "mean_kl": 0.01}  # per-prompt details not printed


def test_eval_failures(fake_evaluation, compressed, tmp_path, capsys):
    code, _, err = run(["eval", str(compressed.folder), "--tasks", "pope,nosuch"], capsys)
    assert_one_line_error(code, err, "eval", "unknown task(s) nosuch", "known: gqa, mme, pope")
    code, _, err = run(["eval", str(compressed.folder), "--tasks", "pope"], capsys)
    assert_one_line_error(code, err, "eval", "missing data", "--data DIR")
    code, _, err = run(["eval", str(compressed.folder), "--tasks", "pope", "--data", str(tmp_path / "nodata")], capsys)
    assert_one_line_error(code, err, "eval", "--data", "no such folder")
    code, _, err = run(["eval", str(compressed.folder)], capsys)
    assert_one_line_error(code, err, "eval", "--tasks")
    code, _, err = run(["eval", str(tmp_path / "nomodel"), "--tasks", "pope", "--data", str(tmp_path)], capsys)
    assert_one_line_error(code, err, "eval", "no such folder")
    assert "evaluate" not in fake_evaluation


def test_eval_reports_missing_data_from_the_evaluator(monkeypatch, fake_evaluation, compressed, tmp_path, capsys):
    def missing(*args, **kwargs):
        raise FileNotFoundError("pope: no data under /x (expected pope/test.parquet)")

    monkeypatch.setattr(sys.modules["llava_fa.evaluation"], "evaluate_path", missing)
    code, _, err = run(["eval", str(compressed.folder), "--tasks", "pope", "--data", str(tmp_path)], capsys)
    assert_one_line_error(code, err, "eval", "pope: no data")


# ------------------------------------------------------------------------------------ push (CLI failures only;
# the round trip through the fake Hub is in test_push.py)
def test_push_without_token_fails_before_any_request(compressed, monkeypatch, tmp_path, capsys):
    from fake_hub import FakeHub
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    before = tree_state(compressed.folder)
    hub = FakeHub()
    with hub.install():
        code, _, err = run(["push", str(compressed.folder), "me/x"], capsys)
    assert_one_line_error(code, err, "push", "no Hugging Face token", "hf auth login")
    assert hub.requests == [] and tree_state(compressed.folder) == before


# ------------------------------------------------------------------------------------ eval -> card, real evaluator
def test_eval_real_evaluator_then_card(compressed, tiny_folder, tmp_path, capsys):
    """The real llava_fa.evaluation on a generated POPE fixture, its results on the card, then the fidelity run."""
    from huggingface_hub import ModelCard

    from llava_fa.evaluation.synthetic import write_synthetic_task

    data = tmp_path / "data"
    write_synthetic_task("pope", data / "pope", n=4)
    results = tmp_path / "results.json"
    code, out, err = run(["eval", str(compressed.folder), "--tasks", "pope", "--data", str(data), "--limit", "2",
                          "--batch-size", "2", "--output", str(results), "--device", "cpu"], capsys)
    assert code == 0, err
    saved = json.loads(results.read_text())
    pope = saved["results"]["pope"]
    assert pope["n_samples"] == 2 and 0.0 <= pope["scores"]["accuracy"] <= 1.0
    assert "predictions" not in json.loads(out)["results"]["pope"]  # printed summary only
    fidelity = tmp_path / "fidelity.json"
    code, out, err = run(["eval", str(compressed.folder), "--reference", str(tiny_folder), "--limit", "1",
                          "--output", str(fidelity), "--device", "cpu"], capsys)
    assert code == 0, err
    agreement = json.loads(fidelity.read_text())["token_agreement"]
    assert 0.0 <= agreement <= 1.0

    folder = tmp_path / "c"
    shutil.copytree(compressed.folder, folder)
    code, _, err = run(["card", str(folder), "--base-model", BASE_MODEL, "--eval-results", str(results), str(fidelity)],
                       capsys)
    assert code == 0, err
    card = ModelCard.load(folder / "README.md")
    accuracy = next(r for r in card.data.eval_results if r.metric_type == "accuracy")
    assert accuracy.dataset_name == "pope" and accuracy.metric_value == pope["scores"]["accuracy"]
    assert f"token_agreement = {agreement:.4g}" in card.text


def test_eval_real_evaluator_unknown_task(compressed, tmp_path, capsys):
    code, _, err = run(["eval", str(compressed.folder), "--tasks", "pope,seedbench_video", "--data", str(tmp_path)],
                       capsys)
    assert_one_line_error(code, err, "eval", "unknown task(s) seedbench_video", "pope")


# ------------------------------------------------------------------------------------ a Hub id, a text-only model
def test_compress_hub_id_of_a_text_only_model(tmp_path, capsys):
    """MODEL as a Hub id (served by the fake Hub): downloaded, compressed; the card names it as base model,
    copies its license, and says text-generation; the folder ships the quantizer as remote code."""
    import torch
    from fake_hub import FakeHub
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from llava_fa.hub.card import check_model_card
    from llava_fa.testing import build_tiny_tokenizer

    source = tmp_path / "qwen"
    torch.manual_seed(0)
    Qwen2ForCausalLM(Qwen2Config(vocab_size=384, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                 num_attention_heads=4, num_key_value_heads=2)).save_pretrained(source)
    build_tiny_tokenizer().save_pretrained(source)
    (source / "README.md").write_text("---\nlicense: apache-2.0\n---\n# tiny qwen\n")
    hub = FakeHub()
    hub.repos["org/qwen-tiny"] = {"main": {p.name: p.read_bytes() for p in source.iterdir()}}
    hub.private["org/qwen-tiny"] = False
    out = tmp_path / "qwen-fourier"
    with hub.install(cache_dir=str(tmp_path / "cache")):
        code, stdout, err = run(["compress", "org/qwen-tiny", str(out), *FAST_FLAGS], capsys)
    assert code == 0, err
    assert "Qwen2Tokenizer saved" in stdout
    meta = check_model_card(out / "README.md")
    assert meta["base_model"] == "org/qwen-tiny" and meta["license"] == "apache-2.0"
    assert meta["pipeline_tag"] == "text-generation"
    names = {p.name for p in out.iterdir()}
    assert {"configuration_fourier_approx.py", "fourier_linear.py", "tokenizer.json"} <= names
    assert json.loads((out / "config.json").read_text())["quantization_config"]["quant_method"] == "fourier_approx"
    code, stdout, err = run(["report", str(out)], capsys)
    assert code == 0 and "lm_head" in stdout and "model" in stdout


def test_compress_unreachable_hub_id_fails(tmp_path, capsys):
    code, _, err = run(["compress", "org/not-cached", str(tmp_path / "o")], capsys)  # offline in tests
    assert_one_line_error(code, err, "compress", "org/not-cached", "could not be fetched from the Hub")

"""Pushing to the Hub without network: `llava-fa push` and `model.push_to_hub` against the in-process fake
Hub (`fake_hub.FakeHub`, huggingface_hub's own client through an httpx2 MockTransport), then the
uploaded files are downloaded into a fresh folder and loaded with `trust_remote_code=True` in a process
that cannot import llava_fa: identical logits, the file list, the card's metadata, the options
(--private, --revision, --create-pr, --commit-message) as recorded requests, and failed uploads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from fake_hub import FakeHub
from hub_fixtures import BASE_MODEL, compressed_tiny, tree_state

from llava_fa.cli import main
from llava_fa.hub.card import check_model_card
from llava_fa.hub.push import IGNORE_PATTERNS, PushError, push_folder, upload_files

REPO = "me/tiny-fourier"


@pytest.fixture(scope="module")
def compressed(tmp_path_factory, tiny_folder):
    return compressed_tiny(tmp_path_factory, tiny_folder)


@pytest.fixture
def folder(compressed, tmp_path):
    """A private copy of the compressed folder (with its card), plus junk that must not be uploaded."""
    dest = tmp_path / "tiny-fourier"
    shutil.copytree(compressed.folder, dest)
    (dest / ".cache").mkdir()
    (dest / ".cache" / "junk").write_text("x")
    (dest / "half.tmp").write_text("x")
    return dest


@pytest.fixture
def token(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_fake_token")
    return "hf_fake_token"


def push(argv, capsys):
    code = main(["push", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def chat_batch(processor_dir: Path):
    """Fixed inputs (one image + question) built with the in-package processor."""
    from conftest import gradient_image
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(processor_dir)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the image?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    return dict(processor(images=gradient_image(), text=text, return_tensors="pt"))


_REMOTE = """
import json, sys, torch
from transformers import AutoModelForImageTextToText, AutoProcessor
folder, inputs_path, out_path = sys.argv[1:4]
model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True).eval()
AutoProcessor.from_pretrained(folder, trust_remote_code=True)
inputs = torch.load(inputs_path)
with torch.no_grad():
    torch.save(model(**inputs).logits, out_path)
n_fourier = sum(type(m).__name__ == "FourierLinear" for m in model.modules())
print(json.dumps({"module": type(model).__module__, "fourier": n_fourier}))
"""


def test_cli_push_round_trip_reloads_without_package(folder, token, capsys, tmp_path):
    from huggingface_hub import snapshot_download

    from llava_fa.hub.checkpoint import load_checkpoint
    from llava_fa.testing import run_without_package

    before = tree_state(folder)
    hub = FakeHub()
    with hub.install(cache_dir=str(tmp_path / "cache")):
        code, out, err = push([str(folder), REPO, "--private", "--commit-message", "rank 2 test"], capsys)
        assert code == 0, err
        downloaded = Path(snapshot_download(REPO, local_dir=tmp_path / "downloaded"))
    assert tree_state(folder) == before  # the push changed nothing locally
    assert f"https://huggingface.co/{REPO}/commit/" in out

    # exactly the local files minus the ignored ones, byte for byte
    local = upload_files(folder)
    assert ".cache/junk" not in local and "half.tmp" not in local and "README.md" in local
    remote = hub.files(REPO)
    assert sorted(remote) == sorted([*local, ".gitattributes"])
    for name in local:
        assert remote[name] == (folder / name).read_bytes(), name
    for needed in ("config.json", "model.safetensors", "modeling_llava_fa.py", "configuration_llava_fa.py",
                   "processing_llava_fa.py", "fourier_linear.py", "tokenizer.json", "processor_config.json"):
        assert needed in remote, needed
    commit = hub.commits[-1]
    assert commit["summary"] == "rank 2 test" and commit["revision"] == "main" and not commit["create_pr"]
    assert hub.private[REPO] is True
    create = next(r for r in hub.requests if r.route == "create")
    assert create.json()["visibility"] == "private"
    assert all(r.headers.get("authorization") == f"Bearer {token}" for r in hub.requests if r.route != "unknown")

    # our card landed, with its metadata
    meta = check_model_card(remote["README.md"].decode())
    assert meta["base_model"] == BASE_MODEL and meta["base_model_relation"] == "quantized"
    assert meta["pipeline_tag"] == "image-text-to-text" and "custom_code" in meta["tags"]

    # the downloaded folder holds what was uploaded (plus the Hub's .gitattributes), and loads without llava_fa
    got = sorted(p.relative_to(downloaded).as_posix() for p in downloaded.rglob("*")
                 if p.is_file() and ".cache" not in p.parts)
    assert got == sorted(remote)
    inputs = chat_batch(folder)
    torch.save(inputs, tmp_path / "inputs.pt")
    proc = run_without_package(_REMOTE, [str(downloaded), str(tmp_path / "inputs.pt"), str(tmp_path / "logits.pt")])
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["module"].startswith("transformers_modules") and info["fourier"] == 28
    with torch.no_grad():
        expected = load_checkpoint(folder)(**inputs).logits
    assert torch.equal(torch.load(tmp_path / "logits.pt"), expected)


def test_push_revision_creates_branch_and_commits_there(folder, token, capsys):
    hub = FakeHub()
    with hub.install():
        code, out, err = push([str(folder), REPO, "--revision", "dev"], capsys)
    assert code == 0, err
    branch = next(r for r in hub.requests if r.route == "branch")
    assert branch.path == f"/api/models/{REPO}/branch/dev"
    assert hub.commits[-1]["revision"] == "dev" and "README.md" in hub.files(REPO, "dev")
    assert "README.md" not in hub.files(REPO, "main")
    assert hub.private[REPO] is False  # no --private: the payload asks for no visibility
    assert "visibility" not in next(r for r in hub.requests if r.route == "create").json()


def test_push_create_pr_opens_a_pull_request(folder, token, capsys):
    hub = FakeHub()
    with hub.install():
        code, out, err = push([str(folder), REPO, "--create-pr"], capsys)
    assert code == 0, err
    assert "discussion" in hub.routes() and hub.commits[-1]["revision"] == "refs/pr/1"
    assert "README.md" in hub.files(REPO, "refs/pr/1") and "README.md" not in hub.files(REPO, "main")
    assert f"https://huggingface.co/{REPO}/discussions/1" in out


@pytest.mark.parametrize("route, status", [("commit", 401), ("create", 500), ("preupload", 403)])
def test_failed_upload_says_why_and_changes_nothing(folder, token, capsys, route, status):
    before = tree_state(folder)
    hub = FakeHub(fail={route: status})
    with hub.install():
        code, _, err = push([str(folder), REPO], capsys)
    assert code == 1
    line = err.strip().splitlines()[-1]
    assert line.startswith("llava-fa push: error: upload to me/tiny-fourier failed")
    assert f"HTTP {status}" in line and f"{route} failed on purpose" in line
    assert tree_state(folder) == before
    assert hub.commits == []


def test_push_checks_before_any_request(folder, compressed, tiny_folder, token, capsys, tmp_path):
    hub = FakeHub()
    with hub.install():
        code, _, err = push([str(folder), REPO, "--create-pr", "--revision", "dev"], capsys)
        assert code == 1 and "--create-pr" in err and "--revision" in err
        (folder / "README.md").unlink()
        code, _, err = push([str(folder), REPO], capsys)
        assert code == 1 and "no README.md" in err and "llava-fa card" in err
        code, _, err = push([str(tiny_folder), REPO], capsys)
        assert code == 1 and "not a llava-fa compressed checkpoint" in err
        code, _, err = push([str(tmp_path / "missing"), REPO], capsys)
        assert code == 1 and "no such folder" in err
        broken = tmp_path / "broken"
        shutil.copytree(compressed.folder, broken)
        (broken / "modeling_llava_fa.py").unlink()
        code, _, err = push([str(broken), REPO], capsys)
        assert code == 1 and "remote code is incomplete" in err and "modeling_llava_fa.py" in err
        generic = tmp_path / "generic"
        shutil.copytree(compressed.folder, generic)
        (generic / "README.md").write_text("---\nlibrary_name: transformers\n---\n# generic\n")
        code, _, err = push([str(generic), REPO], capsys)
        assert code == 1 and "missing key 'base_model'" in err
    assert hub.requests == []


def test_push_refuses_offline_mode(folder, token):
    # outside FakeHub.install the tests run with HF_HUB_OFFLINE=1
    with pytest.raises(PushError, match="offline mode"):
        push_folder(folder, REPO)


def test_ignore_patterns_cover_hidden_and_temporary_files(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("config.json", "a/b.py", ".hidden", "a/.x", "w.tmp", "a/__pycache__/m.pyc"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    assert upload_files(tmp_path) == ["a/b.py", "config.json"]
    assert ".*" in IGNORE_PATTERNS


def test_model_push_to_hub_lands_our_card(compressed, token, monkeypatch, tmp_path):
    """transformers' push_to_hub writes a generic card when the repo has none; with the upload hook
    (`ensure_model_card` on the staging folder) ours lands, its base model taken from the card of the
    folder the model was loaded from."""
    from llava_fa.hub.card import ensure_model_card
    from llava_fa.hub.checkpoint import load_checkpoint
    from llava_fa.modeling import LlavaFAForConditionalGeneration

    hooked = any("_upload_modified_files" in vars(c) for c in LlavaFAForConditionalGeneration.__mro__
                 if c.__module__.startswith("llava_fa"))
    if not hooked:  # until the modeling class calls it itself (see llava_fa.hub.card.ensure_model_card)
        original = LlavaFAForConditionalGeneration._upload_modified_files

        def with_card(self, working_dir, *args, **kwargs):
            ensure_model_card(working_dir, self)
            return original(self, working_dir, *args, **kwargs)

        monkeypatch.setattr(LlavaFAForConditionalGeneration, "_upload_modified_files", with_card, raising=False)
    model = load_checkpoint(compressed.folder)
    hub = FakeHub()
    with hub.install(cache_dir=str(tmp_path / "cache")):
        model.push_to_hub("me/pushed", commit_message="via push_to_hub", tags=["extra-tag"])
    files = hub.files("me/pushed")
    meta = check_model_card(files["README.md"].decode())
    assert meta["base_model"] == BASE_MODEL and "extra-tag" in meta["tags"] and "llava-fa" in meta["tags"]
    for needed in ("config.json", "model.safetensors", "modeling_llava_fa.py", "fourier_linear.py"):
        assert needed in files, needed
    assert hub.commits[-1]["summary"] == "via push_to_hub"
    validate = [r for r in hub.requests if r.route == "validate-yaml"]
    assert validate and "base_model_relation: quantized" in validate[-1].json()["content"]

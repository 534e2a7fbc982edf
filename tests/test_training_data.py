"""load_llava_dataset: LLaVA JSON / JSONL, lazy image paths, text-only records, bad records (raise or skip+count)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import gradient_image

from llava_fa.training import LoadReport, load_llava_dataset, load_llava_dataset_with_report
from llava_fa.training.data import BadRecordError, conversation_to_messages


def _turns(*values):
    return [{"from": "human" if i % 2 == 0 else "gpt", "value": v} for i, v in enumerate(values)]


GOOD = [
    {"id": "img1", "image": "a.png", "conversations": _turns("<image>\nWhat is it?", "A gradient.")},
    {"id": 7, "conversations": _turns("Hello", "Hi.", "How are you?", "Fine.")},  # text-only, int id
    {"id": "img2", "image": "sub/b.png", "conversations": _turns("Describe <image> please", "Colours.")},
]


def _write(folder: Path, records, jsonl: bool = False, name: str = "data") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sub").mkdir(exist_ok=True)
    for rel in ("a.png", "sub/b.png"):
        if not (folder / rel).exists():
            gradient_image(seed=len(rel)).save(folder / rel)
    path = folder / (f"{name}.jsonl" if jsonl else f"{name}.json")
    if jsonl:
        path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    else:
        path.write_text(json.dumps(records, indent=1))
    return path


@pytest.mark.parametrize("jsonl", [False, True])
def test_loads_llava_json_and_jsonl(tmp_path, jsonl):
    path = _write(tmp_path, GOOD, jsonl=jsonl)
    ds = load_llava_dataset(path)
    assert ds.column_names == ["id", "images", "conversations"] and len(ds) == 3
    assert ds["id"] == ["img1", "7", "img2"]
    assert ds[0]["images"] == [str((tmp_path / "a.png").resolve())]
    assert ds[1]["images"] == []  # text-only
    assert ds[2]["images"] == [str((tmp_path / "sub" / "b.png").resolve())]
    assert ds[1]["conversations"] == _turns("Hello", "Hi.", "How are you?", "Fine.")
    # nothing decoded into the dataset: only path strings
    assert ds.features["images"].feature.dtype == "string"


def test_image_folder_is_separate_from_data_file(tmp_path):
    images = tmp_path / "imgs"
    _write(images, [])
    path = tmp_path / "meta" / "d.json"
    path.parent.mkdir()
    path.write_text(json.dumps(GOOD))
    with pytest.raises(ValueError, match=r"record 'img1' \(#0\): image file .*a.png' does not exist"):
        load_llava_dataset(path)  # default folder is the data file's folder
    ds = load_llava_dataset(path, image_folder=images)
    assert ds[0]["images"] == [str((images / "a.png").resolve())]


def test_roles_user_assistant_are_normalised(tmp_path):
    rec = {"id": "u", "conversations": [{"from": "user", "value": "Hi"}, {"from": "assistant", "value": "Yo"}]}
    ds = load_llava_dataset(_write(tmp_path, [rec]))
    assert [t["from"] for t in ds[0]["conversations"]] == ["human", "gpt"]


def test_multiple_images_per_record(tmp_path):
    rec = {"id": "m", "image": ["a.png", "sub/b.png"],
           "conversations": _turns("<image>\n<image>\nCompare.", "Same.")}
    ds = load_llava_dataset(_write(tmp_path, [rec]))
    assert [Path(p).name for p in ds[0]["images"]] == ["a.png", "b.png"]


BAD = [
    ("missing_image", {"id": "x", "image": "nope.png", "conversations": _turns("<image>\nQ", "A")},
     r"record 'x' \(#1\): image file .*nope.png' does not exist"),
    ("image_token_mismatch", {"id": "x", "image": "a.png", "conversations": _turns("What is it?", "A")},
     r"record 'x' \(#1\): has an image but no <image> in the first human turn"),
    ("image_token_mismatch", {"id": "x", "conversations": _turns("<image>\nQ", "A")},
     r"record 'x' \(#1\): has 1 <image> placeholder\(s\) but no image"),
    ("image_token_mismatch", {"id": "x", "image": "a.png", "conversations": _turns("<image><image>Q", "A")},
     r"has 2 <image> placeholder\(s\) but 1 image\(s\)"),
    ("image_token_mismatch", {"id": "x", "image": "a.png", "conversations": _turns("<image>Q", "A <image>")},
     r"gpt turn 1 contains <image>"),
    ("empty_conversation", {"id": "x", "conversations": []}, r"record 'x' \(#1\): has an empty conversation"),
    ("bad_roles", {"id": "x", "conversations": [{"from": "gpt", "value": "A"}, {"from": "human", "value": "Q"}]},
     r"record 'x' \(#1\): turn 0 is 'gpt' but roles must alternate human, gpt"),
    ("bad_roles", {"id": "x", "conversations": _turns("Q", "A") + [{"from": "gpt", "value": "B"}]},
     r"turn 2 is 'gpt' but roles must alternate"),
    ("bad_roles", {"id": "x", "conversations": [{"from": "bot", "value": "Q"}]}, r"turn 0 has role 'bot'"),
    ("bad_roles", {"id": "x", "conversations": _turns("Q", "A", "Q2")}, r"ends with a human turn"),
    ("bad_value", {"id": "x", "conversations": [{"from": "human", "value": 3}, {"from": "gpt", "value": "A"}]},
     r"record 'x' \(#1\): turn 0 \(human\) has a int value; values must be strings"),
    ("bad_value", {"id": "x", "conversations": _turns("Q", "  ")}, r"turn 1 is an empty gpt reply"),
    ("bad_record", {"id": "x"}, r"record 'x' \(#1\): has no 'conversations' list"),
    ("bad_record", {"id": ["x"], "conversations": _turns("Q", "A")}, r"record #1: 'id' must be a string"),
    ("bad_record", "just a string", r"record #1: is a str, expected a JSON object"),
    ("bad_record", {"id": "x", "image": 5, "conversations": _turns("<image>Q", "A")}, r"'image' must be a path"),
    ("bad_record", {"id": "x", "conversations": ["Q", "A"]}, r"turn 0 must be an object with 'from' and 'value'"),
]


@pytest.mark.parametrize("reason, bad, match", BAD, ids=[f"{r}-{i}" for i, (r, _, _) in enumerate(BAD)])
def test_bad_record_raises_naming_id_or_is_skipped_and_counted(tmp_path, reason, bad, match):
    path = _write(tmp_path, [GOOD[0], bad, GOOD[1]])
    with pytest.raises(BadRecordError, match=match) as info:
        load_llava_dataset(path)
    assert isinstance(info.value, ValueError) and info.value.reason == reason
    assert "skip_bad_records=True" in str(info.value)

    ds, report = load_llava_dataset_with_report(path, skip_bad_records=True)
    assert ds["id"] == ["img1", "7"]
    assert report == LoadReport(n_records=3, n_kept=2, skipped={reason: 1},
                                skipped_ids={reason: [info.value.record_id]})
    with pytest.warns(UserWarning, match=rf"skipped 1 of 3 records: {reason}=1"):
        assert len(load_llava_dataset(path, skip_bad_records=True)) == 2


def test_skip_counts_several_reasons(tmp_path):
    bad = [BAD[0][1], BAD[5][1], dict(BAD[5][1], id="y"), BAD[6][1]]
    _, report = load_llava_dataset_with_report(_write(tmp_path, GOOD + bad), skip_bad_records=True)
    assert (report.n_records, report.n_kept, report.n_skipped) == (7, 3, 4)
    assert report.skipped == {"missing_image": 1, "empty_conversation": 2, "bad_roles": 1}
    assert report.skipped_ids["empty_conversation"] == ["'x' (#4)", "'y' (#5)"]


def test_all_records_bad_gives_empty_dataset_with_schema(tmp_path):
    ds, report = load_llava_dataset_with_report(_write(tmp_path, [BAD[5][1]]), skip_bad_records=True)
    assert len(ds) == 0 and ds.column_names == ["id", "images", "conversations"] and report.n_kept == 0


def test_undecodable_image_is_caught_up_front(tmp_path):
    path = _write(tmp_path, GOOD)
    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    with pytest.raises(BadRecordError, match=r"record 'img1' \(#0\): image file .*a.png' cannot be read") as info:
        load_llava_dataset(path)
    assert info.value.reason == "unreadable_image"
    ds, report = load_llava_dataset_with_report(path, skip_bad_records=True)
    assert ds["id"] == ["7", "img2"] and report.skipped == {"unreadable_image": 1}
    # existence-only checking keeps it (the collator then names it when opening, see test_collator)
    assert len(load_llava_dataset(path, image_check="exists")) == 3


def test_file_level_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_llava_dataset(tmp_path / "missing.json")
    with pytest.raises(TypeError, match="path must be a str or os.PathLike, got int"):
        load_llava_dataset(3)
    path = _write(tmp_path, GOOD)
    with pytest.raises(FileNotFoundError, match="image_folder .* is not a directory"):
        load_llava_dataset(path, image_folder=tmp_path / "nowhere")
    bad_line = tmp_path / "broken.jsonl"
    bad_line.write_text(json.dumps(GOOD[1]) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"broken.jsonl:2: invalid JSON line"):
        load_llava_dataset(bad_line)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="no records"):
        load_llava_dataset(tmp_path / "empty.jsonl")
    (tmp_path / "obj.json").write_text(json.dumps({"id": 1, "conversations": []}, indent=1))
    with pytest.raises(ValueError, match=r"obj.json:1: invalid JSON line .* expected a JSON list or JSON Lines"):
        load_llava_dataset(tmp_path / "obj.json")
    (tmp_path / "list.json").write_text("[1, 2")
    with pytest.raises(ValueError, match=r"list.json: invalid JSON"):
        load_llava_dataset(tmp_path / "list.json")


def test_conversation_to_messages_moves_image_to_turn_start():
    record = {"conversations": _turns("Look <image> here", "Ok.", "More?", "No.")}
    msgs = conversation_to_messages(record, ["IMG"], system_prompt="Be brief.")
    assert msgs == [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "image", "image": "IMG"}, {"type": "text", "text": "Look  here"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Ok."}]},
        {"role": "user", "content": [{"type": "text", "text": "More?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "No."}]},
    ]


def test_byte_order_mark_is_tolerated(tmp_path):
    path = _write(tmp_path, GOOD)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert load_llava_dataset(path)["id"] == ["img1", "7", "img2"]


def test_truncated_jpeg_passes_verify_but_not_decode(tmp_path, monkeypatch):
    import io

    import numpy as np
    from PIL import Image, ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as lmms-eval sets it: the check ignores it

    path = _write(tmp_path, [{"id": "j", "image": "t.jpg", "conversations": _turns("<image>\nQ", "A")}, GOOD[1]])
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    (tmp_path / "t.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    assert len(load_llava_dataset(path)) == 2  # "verify" reads the header only
    with pytest.raises(BadRecordError, match=r"record 'j' \(#0\): image file .*t.jpg' cannot be read .*truncated"):
        load_llava_dataset(path, image_check="decode")
    ds, report = load_llava_dataset_with_report(path, skip_bad_records=True, image_check="decode")
    assert ds["id"] == ["7"] and report.skipped == {"unreadable_image": 1}
    with pytest.raises(ValueError, match="image_check must be one of"):
        load_llava_dataset(path, image_check="full")

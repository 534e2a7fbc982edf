"""LLaVA conversation data -> a validated `datasets.Dataset` whose images stay on disk.

Input format (LLaVA's, a JSON list or JSON Lines, one record per element / line)::

    {"id": "000001", "image": "coco/train2017/000001.jpg",
     "conversations": [{"from": "human", "value": "<image>\\nWhat is shown?"},
                       {"from": "gpt", "value": "A cat."}, ...]}

* "image" is optional (text-only record), a path string, or a list of path strings (one per
  "<image>"); relative paths are resolved against `image_folder` (default: the data file's folder).
* roles alternate "human", "gpt", "human", "gpt", ... and end with "gpt" ("user"/"assistant" are
  accepted as aliases); every value is a string; a "gpt" value must not be empty.
* "<image>" appears once per image, only in "human" turns, at least once in the first one; a
  record without images contains no "<image>".

Every record (and, per `image_check`, every image file) is checked before the `Dataset` is
built, so a bad record never stops training mid-epoch: by default the first bad record raises
`ValueError` naming its id and what is wrong; with `skip_bad_records=True` bad records are
dropped and counted per reason (`LoadReport.skipped`, returned by
`load_llava_dataset_with_report`, and a warning from `load_llava_dataset`).

Dataset columns: `id` (str), `images` (list of absolute image paths, empty for text-only) and
`conversations` (list of {"from": "human"|"gpt", "value": str}). Images are opened by
`LlavaCollator` when a batch is built.
"""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from datasets import Dataset, Features, List, Value

IMAGE_TOKEN = "<image>"
ImageCheck = Literal["exists", "verify", "decode"]
HUMAN, GPT = "human", "gpt"
ROLE_ALIASES = {"human": HUMAN, "user": HUMAN, "gpt": GPT, "assistant": GPT}

# Reasons a record is rejected (keys of `LoadReport.skipped`).
BAD_RECORD = "bad_record"            # not a JSON object / missing or malformed fields / bad id
EMPTY_CONVERSATION = "empty_conversation"
BAD_ROLES = "bad_roles"              # unknown role, roles not alternating human/gpt, not ending with gpt
BAD_VALUE = "bad_value"              # a turn value that is not a string, or an empty gpt reply
IMAGE_TOKEN_MISMATCH = "image_token_mismatch"  # "<image>" count/placement does not match the images
MISSING_IMAGE = "missing_image"      # the image file does not exist
UNREADABLE_IMAGE = "unreadable_image"  # the image file exists but PIL cannot read it
SKIP_REASONS = (BAD_RECORD, EMPTY_CONVERSATION, BAD_ROLES, BAD_VALUE, IMAGE_TOKEN_MISMATCH, MISSING_IMAGE,
                UNREADABLE_IMAGE)

LLAVA_FEATURES = Features({
    "id": Value("string"),
    "images": List(Value("string")),
    "conversations": List({"from": Value("string"), "value": Value("string")}),
})


class BadRecordError(ValueError):
    """A LLaVA record is invalid. `reason` is one of `SKIP_REASONS`, `record_id` names the record."""

    def __init__(self, record_id: str, reason: str, message: str):
        self.record_id = record_id
        self.reason = reason
        self.detail = message
        super().__init__(f"record {record_id}: {message}")


@dataclass(frozen=True)
class LoadReport:
    """What `load_llava_dataset_with_report` read.

    `n_records`: records in the file; `n_kept`: rows of the returned dataset; `skipped`: reason ->
    number of dropped records (only reasons that occurred); `skipped_ids`: reason -> their ids.
    """

    n_records: int
    n_kept: int
    skipped: dict[str, int] = field(default_factory=dict)
    skipped_ids: dict[str, list[str]] = field(default_factory=dict)

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())


def _describe_id(record: Any, index: int) -> str:
    rid = record.get("id") if isinstance(record, dict) else None
    return f"{rid!r} (#{index})" if isinstance(rid, (str, int)) and not isinstance(rid, bool) else f"#{index}"


def validate_record(record: Any, index: int, image_folder: Path, *, image_check: ImageCheck = "verify") -> dict[str, Any]:
    """Check one LLaVA record and return it normalised (`id`, absolute `images`, `conversations`).

    Raises `BadRecordError` (a `ValueError`) naming the record and the problem. Its image files
    are checked as `image_check` says (see `check_image_file`).
    """
    name = _describe_id(record, index)
    if not isinstance(record, dict):
        raise BadRecordError(name, BAD_RECORD, f"is a {type(record).__name__}, expected a JSON object with "
                                               f"'id' and 'conversations'.")
    rid = record.get("id", index)
    if isinstance(rid, bool) or not isinstance(rid, (str, int)):
        raise BadRecordError(name, BAD_RECORD, f"'id' must be a string or an integer, got {type(rid).__name__}.")
    raw = record.get("image")
    if raw is None:
        raw_images = []
    elif isinstance(raw, str):
        raw_images = [raw]
    elif isinstance(raw, list) and all(isinstance(x, str) for x in raw):
        raw_images = list(raw)
    else:
        raise BadRecordError(name, BAD_RECORD, f"'image' must be a path string or a list of path strings, got "
                                               f"{raw!r:.80}.")
    turns = validate_conversation(record.get("conversations"), len(raw_images), name)
    images = []
    for rel in raw_images:
        path = (image_folder / rel).resolve()
        if not path.is_file():
            raise BadRecordError(name, MISSING_IMAGE, f"image file {str(path)!r} does not exist (image "
                                                      f"{rel!r} under image_folder {str(image_folder)!r}).")
        if image_check != "exists":
            check_image_file(path, name, image_check)
        images.append(str(path))
    return {"id": str(rid), "images": images, "conversations": turns}


def validate_conversation(conversations: Any, n_images: int, name: str = "?") -> list[dict[str, str]]:
    """Check a record's turns against its number of images; return them with roles normalised.

    Rules: a non-empty list of {"from", "value"} objects, roles alternating human/gpt from a
    human turn and ending with gpt, string values, non-empty gpt replies, "<image>" only in human
    turns, `n_images` placeholders in all, at least one in the first turn when there are images.
    Raises `BadRecordError` (a `ValueError`) naming record `name` and the problem.
    """
    if conversations is None:
        raise BadRecordError(name, BAD_RECORD, "has no 'conversations' list.")
    if not isinstance(conversations, list):
        raise BadRecordError(name, BAD_RECORD, f"'conversations' must be a list of turns, got "
                                               f"{type(conversations).__name__}.")
    if not conversations:
        raise BadRecordError(name, EMPTY_CONVERSATION, "has an empty conversation; it needs at least one "
                                                       "human turn and one gpt turn.")
    turns = []
    for t, turn in enumerate(conversations):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise BadRecordError(name, BAD_RECORD, f"turn {t} must be an object with 'from' and 'value', "
                                                   f"got {turn!r:.80}.")
        role = ROLE_ALIASES.get(turn["from"]) if isinstance(turn["from"], str) else None
        if role is None:
            raise BadRecordError(name, BAD_ROLES, f"turn {t} has role {turn['from']!r}; roles must be "
                                                  f"'human' or 'gpt' (aliases 'user', 'assistant').")
        expected = HUMAN if t % 2 == 0 else GPT
        if role != expected:
            raise BadRecordError(name, BAD_ROLES, f"turn {t} is {role!r} but roles must alternate human, gpt, "
                                                  f"human, gpt, ... (expected {expected!r}).")
        value = turn["value"]
        if not isinstance(value, str):
            raise BadRecordError(name, BAD_VALUE, f"turn {t} ({role}) has a {type(value).__name__} value; "
                                                  f"values must be strings.")
        if role == GPT and not value.strip():
            raise BadRecordError(name, BAD_VALUE, f"turn {t} is an empty gpt reply.")
        turns.append({"from": role, "value": value})
    if turns[-1]["from"] != GPT:
        raise BadRecordError(name, BAD_ROLES, "ends with a human turn; the conversation must end with a gpt "
                                              "reply (the trained-on part).")

    counts = [turn["value"].count(IMAGE_TOKEN) for turn in turns]
    in_gpt = [t for t, c in enumerate(counts) if c and turns[t]["from"] == GPT]
    if in_gpt:
        raise BadRecordError(name, IMAGE_TOKEN_MISMATCH, f"gpt turn {in_gpt[0]} contains {IMAGE_TOKEN}; only "
                                                         f"human turns may hold image placeholders.")
    if n_images and counts[0] == 0:
        raise BadRecordError(name, IMAGE_TOKEN_MISMATCH, f"has an image but no {IMAGE_TOKEN} in the first human "
                                                         f"turn; put '{IMAGE_TOKEN}\\n' before the question.")
    if sum(counts) != n_images:
        what = "no image" if not n_images else f"{n_images} image(s)"
        raise BadRecordError(name, IMAGE_TOKEN_MISMATCH, f"has {sum(counts)} {IMAGE_TOKEN} placeholder(s) but "
                                                         f"{what}; use one {IMAGE_TOKEN} per image.")
    return turns


IMAGE_CHECKS = ("exists", "verify", "decode")


def check_image_file(path: str | os.PathLike, record_name: str = "?", mode: str = "verify") -> None:
    """Raise `BadRecordError` (reason `unreadable_image`) unless PIL can read image `path`.

    `mode="verify"`: PIL identifies the format and runs `Image.verify` (header and structure;
    PNG checksums; fast, but a truncated JPEG passes). `mode="decode"`: decode every pixel
    (catches truncated files too; slowest).
    """
    from PIL import Image, UnidentifiedImageError

    if mode not in ("verify", "decode"):
        raise ValueError(f"mode must be 'verify' or 'decode', got {mode!r}.")
    from PIL import ImageFile

    tolerant = ImageFile.LOAD_TRUNCATED_IMAGES  # some libraries (lmms-eval) set it globally; the check must not
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with Image.open(path) as im:
            im.verify() if mode == "verify" else im.load()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise BadRecordError(record_name, UNREADABLE_IMAGE, f"image file {str(path)!r} cannot be read as an image "
                                                            f"({type(exc).__name__}: {exc}).") from exc
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = tolerant


def read_llava_records(path: str | os.PathLike) -> list[Any]:
    """Parse a LLaVA data file: a JSON list, or JSON Lines (one object per non-empty line).

    Raises `FileNotFoundError` for a missing file and `ValueError` (with the line number) for text
    that is neither.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LLaVA data file {str(path)!r} does not exist.")
    text = path.read_text(encoding="utf-8-sig")  # tolerate a byte-order mark
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: invalid JSON ({exc}); expected a JSON list of LLaVA records.") from exc
        return data
    records = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{lineno}: invalid JSON line ({exc}); expected a JSON list or JSON Lines "
                             f"with one LLaVA record per line.") from exc
    if not records:
        raise ValueError(f"{path}: no records (empty file).")
    return records


def records_to_dataset(
    records: Iterable[Any],
    image_folder: str | os.PathLike,
    *,
    skip_bad_records: bool = False,
    image_check: ImageCheck = "verify",
) -> tuple[Dataset, LoadReport]:
    """Validate in-memory LLaVA records (see module docstring) and build the dataset and its report."""
    if image_check not in IMAGE_CHECKS:
        raise ValueError(f"image_check must be one of {IMAGE_CHECKS}, got {image_check!r}.")
    folder = Path(image_folder)
    rows: list[dict[str, Any]] = []
    skipped: Counter[str] = Counter()
    skipped_ids: dict[str, list[str]] = {}
    n = 0
    for n, record in enumerate(records, 1):
        try:
            rows.append(validate_record(record, n - 1, folder, image_check=image_check))
        except BadRecordError as exc:
            if not skip_bad_records:
                raise BadRecordError(exc.record_id, exc.reason, exc.detail + " (or pass skip_bad_records=True "
                                                                             "to drop such records)") from None
            skipped[exc.reason] += 1
            skipped_ids.setdefault(exc.reason, []).append(exc.record_id)
    if rows:
        dataset = Dataset.from_list(rows, features=LLAVA_FEATURES)
    else:
        dataset = Dataset.from_dict({k: [] for k in LLAVA_FEATURES}, features=LLAVA_FEATURES)
    return dataset, LoadReport(n_records=n, n_kept=len(rows), skipped=dict(skipped), skipped_ids=skipped_ids)


def _check_path_arg(value: Any, name: str, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or os.PathLike, got {type(value).__name__}.")


def load_llava_dataset_with_report(
    path: str | os.PathLike,
    image_folder: str | os.PathLike | None = None,
    *,
    skip_bad_records: bool = False,
    image_check: ImageCheck = "verify",
) -> tuple[Dataset, LoadReport]:
    """`load_llava_dataset`, also returning the `LoadReport` (records read, kept, skipped per reason)."""
    _check_path_arg(path, "path")
    _check_path_arg(image_folder, "image_folder", optional=True)
    folder = Path(path).parent if image_folder is None else Path(image_folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image_folder {str(folder)!r} is not a directory; pass the folder the records' "
                                f"'image' paths are relative to.")
    records = read_llava_records(path)
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of LLaVA records, got a {type(records).__name__}.")
    return records_to_dataset(records, folder, skip_bad_records=skip_bad_records, image_check=image_check)


def load_llava_dataset(
    path: str | os.PathLike,
    image_folder: str | os.PathLike | None = None,
    *,
    skip_bad_records: bool = False,
    image_check: ImageCheck = "verify",
) -> Dataset:
    """Load LLaVA conversation data (JSON list or JSON Lines) as a validated `datasets.Dataset`.

    Args:
        path: the .json / .jsonl file.
        image_folder: folder the records' "image" paths are relative to (default: `path`'s folder).
        skip_bad_records: drop invalid records (counted per reason, see `load_llava_dataset_with_report`,
            and reported in a `UserWarning`) instead of raising `ValueError` on the first one.
        image_check: how image files are checked up front, so that a bad file is reported (or
            skipped) here rather than in the middle of an epoch: "exists" (only existence; fastest),
            "verify" (PIL reads the header and structure; a truncated JPEG still passes) or
            "decode" (every image fully decoded; slowest, catches everything PIL would hit later).
            Images the checks miss fail in `LlavaCollator` with `ValueError` naming the record.

    Returns a `Dataset` with columns `id`, `images` (absolute paths), `conversations`; images are
    not read into it (the collator opens them).
    """
    dataset, report = load_llava_dataset_with_report(path, image_folder, skip_bad_records=skip_bad_records,
                                                     image_check=image_check)
    if report.n_skipped:
        warnings.warn(f"{path}: skipped {report.n_skipped} of {report.n_records} records: "
                      + ", ".join(f"{r}={c}" for r, c in sorted(report.skipped.items())), stacklevel=2)
    return dataset


def conversation_to_messages(
    record: dict[str, Any], images: Sequence[Any] = (), system_prompt: str | None = None
) -> list[dict[str, Any]]:
    """Convert a (validated) LLaVA record's turns into chat-template messages.

    As LLaVA's `preprocess_multimodal`: the "<image>" placeholders of a human turn are removed
    from its text and the turn starts with that many image items (the chat template renders each
    as "<image>\\n"). `images` (PIL images, in order) are put into the image items; with none, the
    items carry no image (for text rendering only). `system_prompt` adds a system message (else
    the template's default system prompt is used).
    """
    messages: list[dict[str, Any]] = []
    if system_prompt is not None:
        messages.append({"role": "system", "content": [{"type": "text", "text": system_prompt}]})
    it = iter(images)
    for turn in record["conversations"]:
        role = ROLE_ALIASES[turn["from"]]
        value = turn["value"]
        if role == GPT:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": value}]})
            continue
        k = value.count(IMAGE_TOKEN)
        content: list[dict[str, Any]] = []
        for _ in range(k):
            image = next(it, None)
            content.append({"type": "image", "image": image} if image is not None else {"type": "image"})
        text = value.replace(IMAGE_TOKEN, "").strip() if k else value
        content.append({"type": "text", "text": text})
        messages.append({"role": "user", "content": content})
    return messages


__all__ = [
    "BadRecordError",
    "LLAVA_FEATURES",
    "LoadReport",
    "SKIP_REASONS",
    "IMAGE_CHECKS",
    "check_image_file",
    "conversation_to_messages",
    "load_llava_dataset",
    "load_llava_dataset_with_report",
    "read_llava_records",
    "records_to_dataset",
    "validate_conversation",
    "validate_record",
]

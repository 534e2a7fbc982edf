"""The benchmark tasks: which data, which prompt, which scorer (``TASKS``, :class:`TaskSpec`).

Prompts follow LLaVA-1.5's evaluation prompts (the model sees the image, then this text):

* short answers (POPE, MME, GQA, TextVQA, VizWiz): ``question + "\\nAnswer the question using a
  single word or phrase."``; TextVQA adds LLaVA-1.5's ``"\\nReference OCR token: ..."`` line
  (``textvqa_noocr``: without it, lmms-eval's default); VizWiz adds LLaVA's "Unanswerable" hint;
* ScienceQA-IMG: ``"Context: <hint>\\n" + question + "\\nA. ...\\nB. ..." + "\\nAnswer with the
  option's letter from the given choices directly."``.

Task keys and where their data comes from (Hub repo, config, split; the folder under ``data_dir``):

=================== ============== ============================================ ==========
key                 folder         Hub data                                     main metric
=================== ============== ============================================ ==========
pope                pope           lmms-lab/POPE (default) test, 3 categories    f1
pope_adversarial    pope           same, rows with category "adversarial"        f1
pope_popular        pope           same, category "popular"                      f1
pope_random         pope           same, category "random"                       f1
mme                 mme            lmms-lab/MME test                             perception_score
gqa                 gqa            lmms-lab/GQA testdev_balanced_instructions    accuracy
                                   + testdev_balanced_images, split testdev
textvqa             textvqa        lmms-lab/textvqa validation (OCR tokens)      accuracy
textvqa_noocr       textvqa        same, question only                          accuracy
vizwiz              vizwiz         lmms-lab/VizWiz-VQA val                       accuracy
scienceqa_img       scienceqa_img  lmms-lab/ScienceQA ScienceQA-IMG test         accuracy
=================== ============== ============================================ ==========
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .normalize import OPTION_LETTERS
from .scorers import score_gqa, score_mme, score_pope, score_scienceqa, score_vqa

__all__ = ["TaskSpec", "TASKS", "get_task", "SHORT_ANSWER_PROMPT", "OPTION_PROMPT"]

SHORT_ANSWER_PROMPT = "Answer the question using a single word or phrase."
OPTION_PROMPT = "Answer with the option's letter from the given choices directly."
VIZWIZ_HINT = "When the provided information is insufficient, respond with 'Unanswerable'."


@dataclass(frozen=True)
class TaskSpec:
    """One benchmark task.

    ``folder``: sub-folder of ``data_dir`` holding the data; ``config`` / ``split``: the Hub config
    and split to read there; ``category``: keep only rows of this ``category`` (POPE variants);
    ``images_config``: a second config holding the images, joined on ``image_key`` -> ``id`` (GQA);
    ``prompt(record) -> str``; ``scorer(records, predictions) -> dict``; ``main_metric``: the
    headline key of the scores (for tables and model cards); ``id_field``: the record's id column
    (``None``: the row number).
    """

    name: str
    folder: str
    split: str
    prompt: Callable[[Mapping[str, Any]], str]
    scorer: Callable[..., dict]
    main_metric: str
    id_field: str | None = "question_id"
    config: str | None = None
    category: str | None = None
    images_config: str | None = None
    image_key: str | None = None
    max_new_tokens: int = 16
    hub_repo: str = ""


def short_answer_prompt(record: Mapping[str, Any]) -> str:
    """``question`` + LLaVA's short-answer instruction."""
    return f"{record['question']}\n{SHORT_ANSWER_PROMPT}"


def textvqa_prompt(record: Mapping[str, Any]) -> str:
    """LLaVA-1.5's TextVQA prompt: the question, the OCR tokens (when the record has them), the instruction."""
    tokens = record.get("ocr_tokens") or []
    ocr = f"\nReference OCR token: {', '.join(tokens)}" if tokens else ""
    return f"{record['question']}{ocr}\n{SHORT_ANSWER_PROMPT}"


def vizwiz_prompt(record: Mapping[str, Any]) -> str:
    """LLaVA-1.5's VizWiz prompt (asks for "Unanswerable" when the image does not tell)."""
    return f"{record['question']}\n{VIZWIZ_HINT}\n{SHORT_ANSWER_PROMPT}"


def scienceqa_prompt(record: Mapping[str, Any]) -> str:
    """Context (``hint``), question, lettered ``choices``, then the letter instruction."""
    choices = list(record["choices"])
    if not 1 <= len(choices) <= len(OPTION_LETTERS):
        raise ValueError(f"ScienceQA record has {len(choices)} choices; expected 1..{len(OPTION_LETTERS)}.")
    context = f"Context: {record['hint']}\n" if record.get("hint") else ""
    options = "\n".join(f"{letter}. {choice}" for letter, choice in zip(OPTION_LETTERS, choices))
    return f"{context}{record['question']}\n{options}\n{OPTION_PROMPT}"


def _pope(name: str, category: str | None) -> TaskSpec:
    return TaskSpec(name=name, folder="pope", split="test", prompt=short_answer_prompt, scorer=score_pope,
                    main_metric="f1", category=category, hub_repo="lmms-lab/POPE")


TASKS: dict[str, TaskSpec] = {
    "pope": _pope("pope", None),
    "pope_adversarial": _pope("pope_adversarial", "adversarial"),
    "pope_popular": _pope("pope_popular", "popular"),
    "pope_random": _pope("pope_random", "random"),
    "mme": TaskSpec(name="mme", folder="mme", split="test", prompt=short_answer_prompt, scorer=score_mme,
                    main_metric="perception_score", hub_repo="lmms-lab/MME"),
    "gqa": TaskSpec(name="gqa", folder="gqa", split="testdev", prompt=short_answer_prompt, scorer=score_gqa,
                    main_metric="accuracy", id_field="id", config="testdev_balanced_instructions",
                    images_config="testdev_balanced_images", image_key="imageId", hub_repo="lmms-lab/GQA"),
    "textvqa": TaskSpec(name="textvqa", folder="textvqa", split="validation", prompt=textvqa_prompt,
                        scorer=score_vqa, main_metric="accuracy", hub_repo="lmms-lab/textvqa"),
    "textvqa_noocr": TaskSpec(name="textvqa_noocr", folder="textvqa", split="validation",
                              prompt=short_answer_prompt, scorer=score_vqa, main_metric="accuracy",
                              hub_repo="lmms-lab/textvqa"),
    "vizwiz": TaskSpec(name="vizwiz", folder="vizwiz", split="val", prompt=vizwiz_prompt, scorer=score_vqa,
                       main_metric="accuracy", hub_repo="lmms-lab/VizWiz-VQA"),
    "scienceqa_img": TaskSpec(name="scienceqa_img", folder="scienceqa_img", split="test", prompt=scienceqa_prompt,
                              scorer=score_scienceqa, main_metric="accuracy", id_field=None,
                              config="ScienceQA-IMG", hub_repo="lmms-lab/ScienceQA"),
}


def get_task(task: str | TaskSpec) -> TaskSpec:
    """The :class:`TaskSpec` for a task key (``ValueError`` naming the known keys if unknown)."""
    if isinstance(task, TaskSpec):
        return task
    if not isinstance(task, str):
        raise TypeError(f"task must be a task name (str), got {type(task).__name__}.")
    spec = TASKS.get(task.strip().lower())
    if spec is None:
        raise ValueError(f"Unknown task {task!r}; known tasks: {', '.join(TASKS)}.")
    return spec

"""Small synthetic task data in the Hub's record formats, for demos and tests (generated images).

``write_synthetic_task("pope", "data/pope", n=6)`` writes ``data/pope/data/test-00000-of-00001.parquet``
laid out like the Hub snapshot of lmms-lab/POPE (fields ``id, question_id, question, answer,
image_source, image, category``), readable by :func:`llava_fa.evaluation.evaluate`. The answers
are arbitrary: the data checks plumbing, not a model's accuracy.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from .tasks import get_task

__all__ = ["synthetic_records", "write_synthetic_task"]


def _png(seed: int, size: int = 32) -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size + seed % 7, size), ((seed * 53) % 256, (seed * 97) % 256, (seed * 31) % 256))
    ImageDraw.Draw(image).rectangle([4, 4, 4 + seed % 20, 20], fill=(255 - (seed * 53) % 256, 40, 200))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def synthetic_records(task: str, n: int = 6, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` records of ``task`` in its Hub field layout; ``image`` is ``{"bytes": png, "path": None}``."""
    spec = get_task(task)
    rows = []
    for i in range(n):
        k = seed + i
        image = {"bytes": _png(k), "path": None}
        if spec.folder == "pope":
            category = spec.category or ("adversarial", "popular", "random")[i % 3]
            thing = ("cat", "dog", "cup")[k % 3]
            rows.append({"id": str(i), "question_id": str(k), "question": f"Is there a {thing} in the image?",
                         "answer": ("yes", "no")[k % 2], "image_source": f"COCO_val2014_{k:012d}",
                         "image": image, "category": category})
        elif spec.folder == "mme":
            category = ("existence", "count", "code_reasoning")[(i // 2) % 3]
            rows.append({"question_id": f"{category}/{k // 2:04d}.png", "image": image,
                         "question": "Is there a square in the picture? Please answer yes or no.",
                         "answer": ("Yes", "No")[i % 2], "category": category})
        elif spec.folder == "gqa":
            rows.append({"id": f"q{k}", "imageId": f"n{k // 2}", "question": "What color is the square?",
                         "answer": ("red", "blue", "left")[k % 3], "image": image})
        elif spec.folder in ("textvqa", "vizwiz"):
            answers = [("stop", "2", "unanswerable")[k % 3]] * 7 + ["yes"] * 3
            row = {"question_id": k, "question": "What does the sign say?", "image": image, "answers": answers}
            if spec.folder == "textvqa":
                row.update({"image_id": f"img{k}", "ocr_tokens": ["stop", "main"]})
            else:
                row["category"] = "other"
            rows.append(row)
        elif spec.folder == "scienceqa_img":
            rows.append({"image": image, "question": "Which animal is shown?", "choices": ["cat", "dog", "bird"],
                         "answer": k % 3, "hint": "" if k % 2 else "A photo.", "task": "closed choice",
                         "grade": "grade2", "subject": "natural science", "topic": "biology",
                         "category": "Classification", "skill": "Identify animals", "lecture": "", "solution": ""})
        else:  # pragma: no cover - every TASKS folder is handled above
            raise ValueError(f"No synthetic records for task {task!r}.")
    return rows


def write_synthetic_task(task: str, folder: str | os.PathLike, n: int = 6, seed: int = 0) -> Path:
    """Write ``n`` synthetic rows of ``task`` under ``folder`` in the Hub snapshot layout (parquet).

    GQA gets its two configs (``testdev_balanced_instructions/`` without images and
    ``testdev_balanced_images/`` with ``id, image``). Returns ``folder``.
    """
    import datasets

    spec = get_task(task)
    folder = Path(folder)
    rows = synthetic_records(task, n, seed)

    def dump(records: list[dict[str, Any]], subdir: str) -> None:
        table = datasets.Dataset.from_list(records)
        if "image" in table.column_names:
            table = table.cast_column("image", datasets.Image())
        out = folder / subdir / f"{spec.split}-00000-of-00001.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        table.to_parquet(str(out))

    if spec.images_config is not None:
        images = {r["imageId"]: r["image"] for r in rows}
        dump([{k: v for k, v in r.items() if k != "image"} for r in rows], spec.config)
        dump([{"id": key, "image": value} for key, value in images.items()], spec.images_config)
    else:
        dump(rows, spec.config or "data")
    return folder

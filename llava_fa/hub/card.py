"""Model cards for compressed checkpoints (``README.md`` with Hub metadata), rendered with
huggingface_hub's `ModelCard` / `ModelCardData` from the template `model_card_template.md`
(package data of `llava_fa.hub`; `model_cards/llava_fa_template.md` in the repository is the same text).

Metadata (YAML front matter): ``base_model``, ``base_model_relation: quantized``,
``library_name: transformers``, ``pipeline_tag`` (a transformers pipeline task), ``license`` (copied
from the base model's card when it can be read), ``tags`` (:data:`CARD_TAGS` + the base's tags when
given), and ``model-index`` when evaluation results are given.

Body: compression settings, a size table (dense bf16 against stored bytes, whole model and per part,
bits per parameter), speed/memory when measured, the evaluation table, how to load it with and without
the package, fine-tuning, the paper reference.

Public functions: :func:`build_model_card`, :func:`write_model_card`, :func:`ensure_model_card`,
:func:`check_model_card`, :func:`size_by_part`, :func:`load_eval_results`, :func:`pipeline_tag_for`,
:func:`base_model_license`.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from torch import nn

TEMPLATE_NAME = "model_card_template.md"
#: Tags every card carries.
CARD_TAGS: tuple[str, ...] = ("llava-fa", "fourier-approx", "quantized", "custom_code")
#: Keys `check_model_card` requires in the metadata.
REQUIRED_KEYS: tuple[str, ...] = ("base_model", "base_model_relation", "library_name", "pipeline_tag", "tags")
#: Named parts of a LLaVA-style model, in table order; other tensors are grouped by their first name component.
PARTS: tuple[str, ...] = ("vision_tower", "multi_modal_projector", "language_model", "lm_head")
#: Hub dataset ids of the benchmarks (lmms-lab copies) for `model-index`; unknown tasks use the task name.
TASK_DATASETS: dict[str, str] = {
    "pope": "lmms-lab/POPE", "mme": "lmms-lab/MME", "gqa": "lmms-lab/GQA", "textvqa": "lmms-lab/textvqa",
    "vizwiz": "lmms-lab/VizWiz-VQA", "scienceqa": "lmms-lab/ScienceQA", "mmbench": "lmms-lab/MMBench",
    "seedbench": "lmms-lab/SEED-Bench",
}
BF16_BYTES = 2
PathLike = Union[str, os.PathLike]


# --------------------------------------------------------------------------------------------- sizes
@dataclass
class PartSize:
    """Storage of one part of the model. `parameters`: dense parameter count (converted weights + the rest)."""

    part: str
    parameters: int = 0
    modules: int = 0
    bf16_bytes: int = 0
    stored_bytes: int = 0

    @property
    def ratio(self) -> float:
        """Dense bf16 bytes / stored bytes."""
        return self.bf16_bytes / max(self.stored_bytes, 1)

    @property
    def bits_per_parameter(self) -> float:
        """Stored bits per dense parameter."""
        return 8 * self.stored_bytes / max(self.parameters, 1)


def _part_of(name: str) -> str:
    parts = name.split(".")
    return next((p for p in PARTS if p in parts), parts[0])


def size_by_part(model: nn.Module, report: Any = None) -> list[PartSize]:
    """Per-part storage of a compressed model; the last row, ``"total"``, equals the report's model totals.

    Counts like `compression_report`: a converted module costs its stored tensors (its report row)
    and stands for ``out * in`` dense bf16 weights; every other parameter/buffer costs its bytes as
    held and, if floating point, ``numel * 2`` dense bf16 bytes (shared tensors once).
    """
    from llava_fa.quantization import compression_report

    report = report if report is not None else compression_report(model)
    rows: dict[str, PartSize] = {}

    def row(name: str) -> PartSize:
        part = _part_of(name)
        return rows.setdefault(part, PartSize(part))

    converted = set()
    for m in report.modules:
        converted.add(m.name)
        r = row(m.name)
        r.modules += 1
        r.parameters += m.shape[0] * m.shape[1]
        r.bf16_bytes += m.bf16_bytes
        r.stored_bytes += m.stored_bytes
    seen: set[int] = set()
    for name, tensor in list(model.named_parameters(remove_duplicate=False)) + list(model.named_buffers()):
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        if name.rsplit(".", 1)[0] in converted and not name.endswith(".bias"):
            continue
        r = row(name)
        r.stored_bytes += tensor.numel() * tensor.element_size()
        if tensor.is_floating_point():
            r.bf16_bytes += tensor.numel() * BF16_BYTES
            r.parameters += tensor.numel()
    order = {p: i for i, p in enumerate(PARTS)}
    out = sorted(rows.values(), key=lambda r: (order.get(r.part, len(PARTS)), r.part))
    total = PartSize("total", sum(r.parameters for r in out), sum(r.modules for r in out),
                     sum(r.bf16_bytes for r in out), sum(r.stored_bytes for r in out))
    return out + [total]


def human_bytes(n: float) -> str:
    """`1536` -> `"1.5 KiB"` (binary units)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError


def folder_weight_bytes(folder: PathLike) -> int:
    """Bytes of the weight files (``*.safetensors``, ``*.bin``) in `folder`."""
    return sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file() and p.suffix in (".safetensors", ".bin"))


# --------------------------------------------------------------------------------------------- tasks
def pipeline_tag_for(model_or_config: Any) -> str:
    """The transformers pipeline task of a model or config: ``image-text-to-text`` for LLaVA-style models,
    ``text-generation`` for causal LMs, ``image-feature-extraction`` for vision encoders, else ``feature-extraction``."""
    from transformers.models.auto import modeling_auto as ma

    config = getattr(model_or_config, "config", model_or_config)
    arch = (getattr(config, "architectures", None) or [type(model_or_config).__name__])[0]
    if getattr(config, "vision_config", None) is not None and getattr(config, "text_config", None) is not None:
        return "image-text-to-text"
    if arch in ma.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES.values():
        return "image-text-to-text"
    if arch in ma.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values() or arch.endswith("ForCausalLM"):
        return "text-generation"
    if "Vision" in arch or getattr(config, "model_type", "").endswith("vision_model"):
        return "image-feature-extraction"
    return "feature-extraction"


def transformers_tasks() -> set[str]:
    """Task names transformers' `pipeline()` accepts (what a `pipeline_tag` should be)."""
    from transformers.pipelines import SUPPORTED_TASKS

    return set(SUPPORTED_TASKS)


def auto_class_for(pipeline_tag: str) -> str:
    """The Auto class name a user loads a model of `pipeline_tag` with."""
    return {"image-text-to-text": "AutoModelForImageTextToText", "text-generation": "AutoModelForCausalLM"}.get(
        pipeline_tag, "AutoModel")


# --------------------------------------------------------------------------------------------- evaluation
@dataclass
class EvalRow:
    """One score: `task` (our task name), `metric`, `value`; `reference` = the dense parent's score if known."""

    task: str
    metric: str
    value: float
    split: Optional[str] = None
    n_samples: Optional[int] = None
    reference: Optional[float] = None

    @property
    def dataset_id(self) -> str:
        key = re.split(r"[_\-]", self.task.lower())[0]
        return TASK_DATASETS.get(key, self.task)


@dataclass
class EvalSummary:
    """Parsed evaluation results: rows plus the tool (name, version) and the model they were measured on."""

    rows: list[EvalRow] = field(default_factory=list)
    tool: str = "llava-fa eval"
    tool_version: Optional[str] = None
    model: Optional[str] = None
    fidelity: dict[str, float] = field(default_factory=dict)


#: Agreement measures of `llava-fa eval --reference` shown on the card.
FIDELITY_KEYS: tuple[str, ...] = ("token_agreement", "mean_kl", "n_prompts", "n_tokens")

#: Counts that scorers report next to their metrics (not metrics themselves).
_COUNT_KEYS = {"n", "tp", "fp", "tn", "fn", "n_samples", "count"}
_META_KEYS = {"task", "name", "split", "n_samples", "num_samples", "samples", "n", "limit", "model", "version",
              "tool", "package_version", "llava_fa_version", "reference", "dataset", "time", "seconds", "created"}


def _scores_of(entry: dict[str, Any]) -> dict[str, float]:
    scores = entry.get("scores", entry.get("metrics"))
    if not isinstance(scores, dict):
        scores = {k: v for k, v in entry.items() if k not in _META_KEYS}
    return {k: float(v) for k, v in scores.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in _COUNT_KEYS}


def load_eval_results(source: Union[PathLike, dict, list]) -> EvalSummary:
    """Parse the results of `llava-fa eval` (a JSON file path, or the loaded object) into an :class:`EvalSummary`.

    Accepted shapes: ``{"results": [entry, ...], ...}``, ``{"results": {task: entry}}``, a list of entries,
    or one entry; an entry has ``task``, ``split``, ``n_samples`` (or ``num_samples``), ``scores`` (metric ->
    number; nested dicts such as per-category scores are skipped) and optionally ``reference`` (the dense
    parent's scores, same keys). Top-level ``tool``/``version``/``package_version``/``model`` are kept;
    ``fidelity`` (``--reference`` runs: e.g. ``greedy_agreement``, ``mean_kl``) goes to `fidelity`.
    A fidelity result (``llava-fa eval --reference``: top-level ``token_agreement``, ``mean_kl``) fills
    `fidelity`. A list of paths merges the files. Raises `ValueError` when no numeric score is found,
    `FileNotFoundError` for a missing file.
    """
    if isinstance(source, (list, tuple)) and source and all(isinstance(s, (str, os.PathLike)) for s in source):
        merged = EvalSummary()
        for item in source:
            part = load_eval_results(item)
            merged.rows += part.rows
            merged.fidelity.update(part.fidelity)
            merged.tool_version = merged.tool_version or part.tool_version
            merged.model = merged.model or part.model
        return merged
    obj: Any = source
    origin = "eval results"
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        origin = str(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such evaluation results file "
                                    f"(write one with `llava-fa eval ... --output FILE`).")
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc}).") from None
    summary = EvalSummary()
    top = obj if isinstance(obj, dict) else {}
    summary.tool = str(top.get("tool") or top.get("evaluator") or summary.tool)
    summary.tool_version = top.get("tool_version") or top.get("package_version") or top.get("llava_fa_version") \
        or top.get("version")
    summary.model = top.get("model")
    fidelity = top.get("fidelity") if isinstance(top.get("fidelity"), dict) else top
    summary.fidelity = {k: float(fidelity[k]) for k in FIDELITY_KEYS
                        if isinstance(fidelity.get(k), (int, float)) and not isinstance(fidelity.get(k), bool)}
    if top and top is fidelity and summary.fidelity:
        return summary  # a --reference result: no task entries
    entries: list[tuple[Optional[str], Any]]
    results = top.get("results", obj) if isinstance(obj, dict) else obj
    if isinstance(results, list):
        entries = [(None, e) for e in results]
    elif isinstance(results, dict) and ("task" in results or "scores" in results):
        entries = [(None, results)]
    elif isinstance(results, dict):
        entries = list(results.items())
    else:
        entries = []
    for key, entry in entries:
        if not isinstance(entry, dict):
            continue
        task = str(entry.get("task") or entry.get("name") or key or "task")
        n = entry.get("n_samples", entry.get("num_samples", entry.get("samples")))
        reference = entry.get("reference") if isinstance(entry.get("reference"), dict) else {}
        reference = _scores_of(reference) if reference else {}
        for metric, value in _scores_of(entry).items():
            summary.rows.append(EvalRow(task, metric, value, entry.get("split"), int(n) if isinstance(n, int) else None,
                                        reference.get(metric)))
        summary.tool_version = summary.tool_version or entry.get("package_version") or entry.get("version")
        summary.model = summary.model or entry.get("model")
    if not summary.rows and not summary.fidelity:
        raise ValueError(f"{origin}: no numeric scores found; expected llava-fa eval output "
                         f"({{'results': [{{'task', 'split', 'n_samples', 'scores': {{metric: value}}}}]}}).")
    return summary


def _eval_markdown(summary: Optional[EvalSummary]) -> str:
    if summary is None:
        return ("Not evaluated yet. Run `llava-fa eval MODEL --tasks ... --output results.json`, then "
                "`llava-fa card PATH --base-model ID --eval-results results.json`.")
    lines = []
    if summary.rows:
        with_ref = any(r.reference is not None for r in summary.rows)
        head = "| task | split | samples | metric | this model |" + (" dense parent | recovery |" if with_ref else "")
        lines += [head, "|---|---|---:|---|---:|" + ("---:|---:|" if with_ref else "")]
        for r in summary.rows:
            n = r.n_samples if r.n_samples is not None else ""
            line = f"| {r.task} | {r.split or ''} | {n} | {r.metric} | {r.value:.4g} |"
            if with_ref:
                rec = f"{100 * r.value / r.reference:.1f} %" if r.reference else ""
                line += f" {'' if r.reference is None else f'{r.reference:.4g}'} | {rec} |"
            lines.append(line)
    if summary.fidelity:
        if lines:
            lines.append("")
        lines.append("Agreement with the dense parent (no labels): " +
                     ", ".join(f"{k} = {v:.4g}" for k, v in summary.fidelity.items()) + ".")
    version = f" {summary.tool_version}" if summary.tool_version else ""
    named = summary.model and not os.path.isabs(summary.model) and not os.path.exists(summary.model)
    on = f" on `{summary.model}`" if named else ""
    lines += ["", f"Measured with {summary.tool}{version}{on}."]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- license
def _front_matter(text: str) -> dict[str, Any]:
    m = re.match(r"^\s*---\s*\n(.*?)\n---\s*(\n|$)", text, re.S)
    if m is None:
        return {}
    data = yaml.safe_load(m.group(1))
    return data if isinstance(data, dict) else {}


def base_model_license(base_model: str, local_folder: Optional[PathLike] = None) -> Optional[str]:
    """The base model's ``license`` from its card: `local_folder`/README.md if given, else the Hub
    (only when not offline). None when unknown; never raises for an unreachable card."""
    from huggingface_hub import constants

    candidates = [Path(local_folder) / "README.md"] if local_folder else []
    if os.path.isdir(base_model):
        candidates.append(Path(base_model) / "README.md")
    for readme in candidates:
        if readme.is_file():
            try:
                value = _front_matter(readme.read_text(encoding="utf-8")).get("license")
            except yaml.YAMLError:
                value = None
            if value:
                return str(value)
    if constants.HF_HUB_OFFLINE or os.path.isdir(base_model):
        return None
    try:
        value = ModelCard.load(base_model).data.get("license")
    except Exception:  # network, missing card, gated repo: the license stays unknown
        return None
    return str(value) if value else None


# --------------------------------------------------------------------------------------------- card
def template_text() -> str:
    """The card template shipped with the package (Jinja2, rendered by `ModelCard.from_template`)."""
    return importlib.resources.files("llava_fa.hub").joinpath(TEMPLATE_NAME).read_text(encoding="utf-8")


def _quant_dict(model: nn.Module) -> dict[str, Any]:
    config = getattr(model, "config", None)
    qc = getattr(config, "quantization_config", None)
    if qc is None:
        raise ValueError(f"{type(model).__name__} is not compressed (no quantization_config); compress it first "
                         f"(`llava-fa compress MODEL OUTPUT`).")
    return qc.to_dict() if hasattr(qc, "to_dict") else dict(qc)


def _calibration_text(q: dict[str, Any]) -> str:
    """Calibration as recorded in the config: the statistics file's SHA-256 (saved configs keep no path)."""
    sha, path = q.get("calibration_sha256"), q.get("calibration")
    if not sha and not path:
        return "none"
    what = f"statistics file sha256 `{sha[:12]}…`" if sha else f"statistics file `{Path(str(path)).name}`"
    return f"{what} ({', '.join(q.get('calibration_stats') or [])}; channel alpha {q.get('channel_alpha')})"


def _settings_markdown(q: dict[str, Any], parts: list[str]) -> tuple[str, str]:
    rows = [
        ("quant_method", f"`{q.get('quant_method')}`"),
        ("compressed parts", ", ".join(f"`{p}`" for p in parts) or "none"),
        ("kept dense", ", ".join(f"`{m}`" for m in q.get("modules_to_not_convert") or []) or "none"),
        ("rank (complex, per matrix)", q.get("rank")),
        ("amplitude / phase bits", f"{q.get('amplitude_bits')} + {q.get('phase_bits')}"),
        ("codebook", f"`{q.get('codebook')}`" + (" (fixed Gaussian table)" if q.get("table_fit") == "gaussian" else "")),
        ("least-squares refit rounds", q.get("refit_rounds") or 0),
        ("group size (coefficients per scale)", q.get("group_size") if q.get("group_size") is not None else "one per matrix"),
        ("transform", f"`{q.get('transform')}`"),
        ("Algorithm 1 rounds (max)", q.get("max_iters")),
        ("SVD", f"`{q.get('svd_method')}`"),
        ("phase-aware amplitude", q.get("phase_aware")),
        ("factor / scale dtype", f"{q.get('factor_dtype')} / {q.get('scale_dtype')}"),
        ("calibration", _calibration_text(q)),
        ("error-feedback rounding", f"yes (dampening {q.get('feedback_damp')})" if q.get("error_feedback") else "no"),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    overrides = q.get("overrides") or {}
    text = ("Per-module overrides (regular expression on the module name -> settings): " +
            "; ".join(f"`{p}` -> " + ", ".join(f"{k}={v}" for k, v in f.items()) for p, f in overrides.items()) + "."
            ) if overrides else "No per-module overrides."
    return table, text


def _size_markdown(sizes: list[PartSize]) -> str:
    lines = []
    for s in sizes:
        name = "**whole model**" if s.part == "total" else f"`{s.part}`"
        lines.append(f"| {name} | {s.parameters:,} | {s.modules} | {human_bytes(s.bf16_bytes)} | "
                     f"{human_bytes(s.stored_bytes)} | x{s.ratio:.2f} | {s.bits_per_parameter:.2f} |")
    return "\n".join(lines)


def _speed_markdown(speed: Optional[dict[str, Any]]) -> str:
    if not speed:
        return ("Not measured for this checkpoint. `FourierLinear` currently rebuilds each dense weight per call "
                "(correct, not fast); see the llava-fa README for measured load, memory and decode figures and "
                "the hardware they were measured on.")
    hardware = speed.get("hardware", "unnamed hardware")
    items = [f"| {k} | {v} |" for k, v in speed.items() if k != "hardware"]
    return f"Measured on {hardware}:\n\n| quantity | value |\n|---|---|\n" + "\n".join(items)


def build_model_card(
    model: nn.Module,
    *,
    base_model: Optional[str],
    eval_results: Union[None, PathLike, dict, list, EvalSummary] = None,
    license: Optional[str] = None,
    repo_id: Optional[str] = None,
    folder: Optional[PathLike] = None,
    extra_tags: Iterable[str] = (),
    quantized_by: Optional[str] = None,
    speed: Optional[dict[str, Any]] = None,
    report: Any = None,
    model_name: Optional[str] = None,
) -> ModelCard:
    """Render the card of a compressed `model` (holding FourierLinear modules).

    `base_model`: Hub id of the dense parent (None: the base keys are left out and a note says so).
    `eval_results`: output of `llava-fa eval` (path or object, see :func:`load_eval_results`).
    `license`: default `base_model_license(base_model)`. `repo_id`: where the card will live (used in the
    code snippets; default ``<user>/<folder name>``). `folder`: the saved checkpoint (for on-disk sizes).
    `speed`: measured figures ``{"hardware": ..., quantity: value}``. `model_name`: the card's title and
    model-index name (default: the repo name, else the folder name). Raises `ValueError` if `model` is not compressed.
    """
    from llava_fa import __version__
    from llava_fa.quantization import compression_report

    q = _quant_dict(model)
    report = report if report is not None else compression_report(model)
    if not report.modules:
        raise ValueError(f"{type(model).__name__} holds no compressed (FourierLinear) module; nothing to describe.")
    summary = eval_results if isinstance(eval_results, EvalSummary) or eval_results is None \
        else load_eval_results(eval_results)
    sizes = size_by_part(model, report)
    parts = [s.part for s in sizes[:-1] if s.modules]
    tag = pipeline_tag_for(model)
    name = model_name or (repo_id.split("/")[-1] if repo_id else
                          Path(folder).name if folder else f"{type(model).__name__}-fourier")
    repo_id = repo_id or f"<user>/{name}"
    if license is None and base_model:
        license = base_model_license(base_model)
    tags = list(dict.fromkeys([*CARD_TAGS, *extra_tags,
                               f"{q.get('amplitude_bits')}+{q.get('phase_bits')}-bit", f"rank-{q.get('rank')}"]))
    metadata: dict[str, Any] = {}
    if base_model:
        metadata.update(base_model=base_model, base_model_relation="quantized")
    if quantized_by:
        metadata["quantized_by"] = quantized_by
    eval_entries = None
    if summary is not None and summary.rows:
        eval_entries = [EvalResult(task_type=tag, dataset_type=r.dataset_id, dataset_name=r.task,
                                   dataset_split=r.split, metric_type=r.metric, metric_name=r.metric,
                                   metric_value=r.value)
                        for r in summary.rows]
    data = ModelCardData(library_name="transformers", pipeline_tag=tag, license=license, tags=tags,
                         model_name=name, eval_results=eval_entries, **metadata)
    settings, overrides_text = _settings_markdown(q, parts)
    folder_bytes = (f"{human_bytes(folder_weight_bytes(folder))} on disk" if folder and Path(folder).is_dir()
                    else "see the repository's file list")
    base_line = (f"[{base_model}](https://huggingface.co/{base_model})" if base_model
                 else "A model (base model not recorded: pass `--base-model ID` to `llava-fa card`)")
    return ModelCard.from_template(
        data,
        template_str=template_text(),
        model_name=name,
        base_line=base_line,
        package_version=__version__,
        parts_text=", ".join(f"`{p}`" for p in parts),
        settings_table=settings,
        overrides_text=overrides_text,
        size_table=_size_markdown(sizes),
        converted_bpw=f"{report.bits_per_weight:.2f}",
        mean_error=f"{report.mean_error:.4f}",
        folder_bytes=folder_bytes,
        speed_text=_speed_markdown(speed),
        eval_text=_eval_markdown(summary),
        auto_class=auto_class_for(tag),
        repo_id=repo_id,
        base_model_or_parent=base_model or "DENSE_PARENT",
    )


def write_model_card(folder: PathLike, model: Optional[nn.Module] = None, **kwargs: Any) -> Path:
    """Render the card (:func:`build_model_card`, `kwargs` passed on) and write ``folder/README.md`` atomically.

    `model`: the compressed model; loaded from `folder` when None.
    """
    folder = Path(folder)
    if model is None:
        from .checkpoint import load_checkpoint

        model = load_checkpoint(folder)
    card = build_model_card(model, folder=folder, **kwargs)
    dest = folder / "README.md"
    fd, tmp = tempfile.mkstemp(prefix=".README.md.", suffix=".tmp", dir=folder)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a card is a normal file
    try:
        card.save(tmp)
        check_model_card(tmp, require_base=bool(kwargs.get("base_model")))
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dest


def check_model_card(source: Union[PathLike, str], require_base: bool = True) -> dict[str, Any]:
    """Offline check of a card (a path or the card text): the YAML parses, the required keys are there,
    ``base_model_relation`` is ``quantized``, ``library_name`` is ``transformers``, ``pipeline_tag`` is a
    transformers task, the tags include :data:`CARD_TAGS`, and a ``model-index`` (if any) parses back into
    results. Returns the metadata; raises `ValueError` listing every problem.
    """
    text = Path(source).read_text(encoding="utf-8") if isinstance(source, os.PathLike) or (
        isinstance(source, str) and "\n" not in source and os.path.isfile(source)) else str(source)
    try:
        meta = _front_matter(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"model card: the YAML metadata does not parse ({exc}).") from None
    problems = []
    if not meta:
        problems.append("no YAML metadata block (--- ... ---) at the top")
    required = REQUIRED_KEYS if require_base else tuple(k for k in REQUIRED_KEYS if not k.startswith("base_model"))
    problems += [f"missing key {k!r}" for k in required if k not in meta]
    if "base_model" in meta and meta.get("base_model_relation") != "quantized":
        problems.append(f"base_model_relation is {meta.get('base_model_relation')!r}, expected 'quantized'")
    if meta and meta.get("library_name") != "transformers":
        problems.append(f"library_name is {meta.get('library_name')!r}, expected 'transformers'")
    if "pipeline_tag" in meta and meta["pipeline_tag"] not in transformers_tasks():
        problems.append(f"pipeline_tag {meta['pipeline_tag']!r} is not a transformers task")
    missing_tags = [t for t in CARD_TAGS if t not in (meta.get("tags") or [])]
    if meta and missing_tags:
        problems.append(f"tags lack {missing_tags}")
    if "model-index" in meta:
        try:
            from huggingface_hub.repocard_data import model_index_to_eval_results

            model_index_to_eval_results(meta["model-index"])
        except Exception as exc:  # malformed model-index
            problems.append(f"model-index does not parse ({exc})")
    if problems:
        raise ValueError("model card: " + "; ".join(problems) + ".")
    return meta


def is_llava_fa_card(readme: PathLike) -> bool:
    """True if `readme` exists and its metadata carries the ``llava-fa`` tag."""
    path = Path(readme)
    if not path.is_file():
        return False
    try:
        return "llava-fa" in (_front_matter(path.read_text(encoding="utf-8")).get("tags") or [])
    except yaml.YAMLError:
        return False


def _inferred_base(model: nn.Module) -> Optional[str]:
    """The base model id recorded in the card of the folder `model` was loaded from, or its Hub id if it
    was compressed on load from the Hub."""
    source = str(getattr(model, "name_or_path", "") or "")
    if not source:
        return None
    if os.path.isdir(source):
        readme = Path(source) / "README.md"
        if readme.is_file():
            try:
                return _front_matter(readme.read_text(encoding="utf-8")).get("base_model")
            except yaml.YAMLError:
                return None
        return None
    from .checkpoint import is_hub_id

    return source if is_hub_id(source) else None


def ensure_model_card(folder: PathLike, model: Optional[nn.Module] = None, *, base_model: Optional[str] = None,
                      **kwargs: Any) -> Optional[Path]:
    """Make ``folder/README.md`` our card before an upload; return its path, or None if `model` is not compressed.

    Keeps an existing llava-fa card. Otherwise (no README, or transformers' generic one) renders ours,
    keeping the existing card's tags; `base_model` defaults to the card of the folder the model was loaded
    from (its ``base_model``) or to the Hub id it was compressed from. Meant for `push_to_hub`: call it on the
    staging folder after transformers wrote its card, before the upload.
    """
    folder = Path(folder)
    readme = folder / "README.md"
    if is_llava_fa_card(readme):
        return readme
    if model is not None and getattr(getattr(model, "config", None), "quantization_config", None) is None:
        return None
    old_tags: list[str] = []
    if readme.is_file():
        try:
            old_tags = list(_front_matter(readme.read_text(encoding="utf-8")).get("tags") or [])
        except yaml.YAMLError:
            old_tags = []
    if model is None:
        from .checkpoint import load_checkpoint

        model = load_checkpoint(folder)
    base_model = base_model or _inferred_base(model)
    return write_model_card(folder, model, base_model=base_model, extra_tags=[*old_tags, *kwargs.pop("extra_tags", ())],
                            **kwargs)


__all__ = ["CARD_TAGS", "REQUIRED_KEYS", "EvalRow", "EvalSummary", "PartSize", "base_model_license",
           "build_model_card", "check_model_card", "ensure_model_card", "is_llava_fa_card", "load_eval_results",
           "pipeline_tag_for", "size_by_part", "template_text", "transformers_tasks", "write_model_card"]

"""`llava-fa`: the command line of llava-fa (argparse; console script ``llava-fa = llava_fa.cli:main``).

Subcommands: ``compress``, ``calibrate``, ``report``, ``card``, ``push``, ``eval``. Every failure exits
with status 1 (2 for argument errors, argparse's convention) and one line on stderr,
``llava-fa <command>: error: <reason>``; ``--debug`` (before the subcommand) shows the traceback
instead. Progress bars follow ``HF_HUB_DISABLE_PROGRESS_BARS`` (also for the compression bar).
The compression flags' defaults are read from ``FourierApproxConfig`` when the parser is built; the
other heavy imports (models, datasets, huggingface_hub uploads) happen inside the subcommands.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

PROG = "llava-fa"

#: Flags of `compress` that map 1:1 onto FourierApproxConfig fields (flag dest -> field).
COMPRESSION_FLAGS: dict[str, str] = {
    "rank": "rank", "amplitude_bits": "amplitude_bits", "phase_bits": "phase_bits", "group_size": "group_size",
    "codebook": "codebook", "transform": "transform", "error_feedback": "error_feedback",
    "feedback_damp": "feedback_damp", "table_fit": "table_fit", "refit_rounds": "refit_rounds",
}


class CLIError(Exception):
    """A failure with a one-line reason for the user (exit status 1)."""


# ----------------------------------------------------------------------------------------- helpers
def _progress_env() -> None:
    """Honour HF_HUB_DISABLE_PROGRESS_BARS for every bar: huggingface_hub's and transformers' read it, and
    tqdm's own bars (the compression bar) read TQDM_DISABLE."""
    value = os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS", "").strip().upper()
    if value in ("1", "ON", "YES", "TRUE"):
        os.environ.setdefault("TQDM_DISABLE", "1")


def config_defaults() -> dict[str, Any]:
    """Defaults of `FourierApproxConfig.__init__` (the single source of the compression defaults)."""
    from llava_fa.quantization.fourier_config import FourierApproxConfig

    return {name: p.default for name, p in inspect.signature(FourierApproxConfig.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _choices(module: str, name: str, fallback: tuple[str, ...]) -> tuple[str, ...]:
    try:
        return tuple(getattr(__import__(module, fromlist=[name]), name))
    except (ImportError, AttributeError):
        return fallback


def parse_value(text: str) -> Any:
    """`"16"` -> 16, `"true"` -> True, `"none"` -> None, anything else stays a string."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def parse_overrides(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["vision_tower.rank=32", "layers\\.0\\..*.phase_bits=6"]`` -> ``{pattern: {field: value}}``.

    The pattern is everything before the last dot of the left-hand side (a regular expression searched in
    module names), the field what follows it. Raises `CLIError` naming the bad item.
    """
    from llava_fa.quantization.fourier_config import PER_MODULE_FIELDS

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        left, sep, value = item.partition("=")
        pattern, dot, fieldname = left.rpartition(".")
        if not sep or not dot or not pattern or not value:
            raise CLIError(f"--override {item!r}: expected PATTERN.FIELD=VALUE, e.g. vision_tower.rank=32.")
        if fieldname not in PER_MODULE_FIELDS:
            raise CLIError(f"--override {item!r}: {fieldname!r} cannot be set per module; use one of "
                           f"{', '.join(PER_MODULE_FIELDS)}.")
        out.setdefault(pattern, {})[fieldname] = parse_value(value)
    return out


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the example epilog's line breaks."""


def _add(sub, name: str, help_: str, example: str, func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_, description=help_, formatter_class=_Formatter,
                            epilog="example:\n" + textwrap.indent(example.strip(), "  "))
    parser.set_defaults(func=func, command=name)
    return parser


# ----------------------------------------------------------------------------------------- compress
def cmd_compress(args: argparse.Namespace) -> int:
    from llava_fa.hub.checkpoint import (
        atomic_output_dir,
        check_output_dir,
        copy_side_files,
        is_hub_id,
        load_checkpoint,
        quant_method,
        resolve_checkpoint,
        save_processor,
    )

    output = check_output_dir(args.output, args.overwrite)
    source = resolve_checkpoint(args.model)
    if source.resolve() == output.resolve():
        raise CLIError(f"OUTPUT {args.output} is the input folder; choose another OUTPUT.")
    method = quant_method(source)
    if method == "fourier_approx":
        raise CLIError(f"{args.model} is already compressed (quant_method=fourier_approx); compress the dense "
                       f"parent instead, or use `llava-fa report {args.model}`.")
    if method is not None:
        raise CLIError(f"{args.model} is already quantized (quant_method={method}); compress a dense checkpoint.")
    if args.calibration is not None and not Path(args.calibration).is_file():
        raise CLIError(f"--calibration {args.calibration}: no such file (write one with `llava-fa calibrate`).")

    from llava_fa.quantization.fourier_config import FourierApproxConfig

    # unset flags are absent from `args` (argparse.SUPPRESS): FourierApproxConfig's own defaults apply
    fields = {f: getattr(args, d) for d, f in COMPRESSION_FLAGS.items() if hasattr(args, d)}
    if args.calibration is not None:
        fields["calibration"] = str(Path(args.calibration).resolve())
    if args.override:
        fields["overrides"] = parse_overrides(args.override)
    try:
        config = FourierApproxConfig(**fields)
    except (ValueError, TypeError) as exc:
        raise CLIError(_one_line(exc)) from None

    load_kwargs: dict[str, Any] = {"quantization_config": config}
    if args.device_map:
        load_kwargs["device_map"] = args.device_map
    if args.dtype:
        load_kwargs["dtype"] = args.dtype
    print(f"compressing {args.model} -> {output}", file=sys.stderr)
    model = load_checkpoint(source, trust_remote_code=args.trust_remote_code, **load_kwargs)
    base_model = args.base_model or (args.model if is_hub_id(args.model) else None)
    with atomic_output_dir(output) as tmp:
        model.save_pretrained(tmp)
        processor = save_processor(source, tmp, trust_remote_code=args.trust_remote_code)
        copied = copy_side_files(source, tmp)
        if not args.no_card:
            from llava_fa.hub.card import write_model_card

            write_model_card(tmp, model, base_model=base_model, license=args.license, model_name=output.name)
    from llava_fa.quantization import compression_report

    report = compression_report(model)
    print(f"wrote {output}: {len(report.modules)} compressed modules, {report.bits_per_weight:.2f} bits per weight, "
          f"whole model x{report.model_ratio:.2f} vs dense bf16, mean relative error {report.mean_error:.4f}"
          + (f"; {processor} saved" if processor else "") + (f"; copied {', '.join(copied)}" if copied else ""))
    if not args.no_card and not base_model:
        print(f"note: README.md has no base_model (MODEL is a local folder); run `{PROG} card {output} "
              f"--base-model ID` before pushing.", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------------------- calibrate
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
CALIBRATION_PROMPT = "Describe the image in detail."


def calibration_samples(data: Path, limit: int) -> list[tuple[Optional[Path], str, Optional[str]]]:
    """`(image path or None, prompt, answer or None)` samples from DATA, at most `limit`.

    DATA is a folder of images (each with :data:`CALIBRATION_PROMPT`) or a LLaVA-format JSON list
    (``{"image": relative path, "conversations": [{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", ...}]}``;
    images relative to the JSON's folder or an ``images/`` folder next to it).
    """
    if not data.exists():
        raise CLIError(f"DATA {data}: no such file or folder.")
    samples: list[tuple[Optional[Path], str, Optional[str]]] = []
    if data.is_dir():
        for img in sorted(p for p in data.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            samples.append((img, CALIBRATION_PROMPT, None))
    elif data.suffix.lower() in (".json", ".jsonl"):
        text = data.read_text(encoding="utf-8")
        try:
            records = [json.loads(line) for line in text.splitlines() if line.strip()] if data.suffix == ".jsonl" \
                else json.loads(text)
        except json.JSONDecodeError as exc:
            raise CLIError(f"DATA {data}: not valid JSON ({exc}).") from None
        if not isinstance(records, list):
            raise CLIError(f"DATA {data}: expected a JSON list of LLaVA-format records.")
        for rec in records:
            if not isinstance(rec, dict):
                continue
            turns = rec.get("conversations") or []
            human = next((t.get("value", "") for t in turns if t.get("from") == "human"), None)
            gpt = next((t.get("value", "") for t in turns if t.get("from") == "gpt"), None)
            if human is None:
                continue
            image = None
            if rec.get("image"):
                candidates = [data.parent / rec["image"], data.parent / "images" / rec["image"]]
                image = next((c for c in candidates if c.is_file()), None)
                if image is None:
                    raise CLIError(f"DATA {data}: image {rec['image']!r} not found next to the JSON or in images/.")
            samples.append((image, human.replace("<image>", "").strip(), gpt))
    else:
        raise CLIError(f"DATA {data}: expected a folder of images or a LLaVA-format .json/.jsonl file.")
    if not samples:
        raise CLIError(f"DATA {data}: no samples (no images, or no record with a human turn).")
    return samples[:limit]


def cmd_calibrate(args: argparse.Namespace) -> int:
    from llava_fa.hub.checkpoint import load_checkpoint, quant_method, resolve_checkpoint

    source = resolve_checkpoint(args.model)
    if quant_method(source) is not None:
        raise CLIError(f"{args.model} is already compressed; calibrate on the dense parent you will compress.")
    if args.samples < 1:
        raise CLIError(f"--samples must be >= 1, got {args.samples}.")
    output = Path(args.output)
    if output.exists() and not args.overwrite:
        raise CLIError(f"{output}: exists; choose another OUTPUT or pass --overwrite.")
    samples = calibration_samples(Path(args.data), args.samples)

    from PIL import Image
    from transformers import AutoProcessor

    from llava_fa.fourier.calibration import calibrate

    model = load_checkpoint(source, trust_remote_code=args.trust_remote_code)
    processor = AutoProcessor.from_pretrained(source, trust_remote_code=args.trust_remote_code)

    multimodal = hasattr(processor, "image_processor")
    if not multimodal and any(image is not None for image, _, _ in samples):
        raise CLIError(f"{args.model} has no image processor; calibrate it with text-only records.")

    def to_text(image: Optional[Path], prompt: str, answer: Optional[str]) -> str:
        if getattr(processor, "chat_template", None) is None:  # a bare tokenizer without a template
            return prompt + ("\n" + answer if answer else "")
        if multimodal:
            content: Any = ([{"type": "image"}] if image is not None else []) + [{"type": "text", "text": prompt}]
            reply: Any = [{"type": "text", "text": answer}]
        else:
            content, reply = prompt, answer
        messages = [{"role": "user", "content": content}]
        if answer:
            messages.append({"role": "assistant", "content": reply})
        return processor.apply_chat_template(messages, add_generation_prompt=not answer, tokenize=False)

    def batches():
        from tqdm.auto import tqdm

        for image, prompt, answer in tqdm(samples, desc="calibrating", unit="sample"):
            kwargs: dict[str, Any] = {"text": to_text(image, prompt, answer), "return_tensors": "pt"}
            if image is not None:
                kwargs["images"] = Image.open(image).convert("RGB")
            yield dict(processor(**kwargs))

    calibrate(model, batches(), output, second_moment=args.second_moment,
              second_moment_max_features=args.second_moment_max_features)
    hint = " --error-feedback" if args.second_moment else ""
    print(f"wrote {output}: input statistics of {len(samples)} samples; use `{PROG} compress MODEL OUT "
          f"--calibration {output}{hint}`")
    return 0


# ----------------------------------------------------------------------------------------- report
def _load_compressed(path: str, trust_remote_code: bool = False):
    from llava_fa.hub.checkpoint import load_checkpoint, quant_method, resolve_checkpoint

    folder = resolve_checkpoint(path)
    if quant_method(folder) != "fourier_approx":
        raise CLIError(f"{path} is not a llava-fa compressed checkpoint (no quant_method=fourier_approx in "
                       f"config.json); compress it first with `{PROG} compress`.")
    return folder, load_checkpoint(folder, trust_remote_code=trust_remote_code)


def cmd_report(args: argparse.Namespace) -> int:
    from llava_fa.hub.card import folder_weight_bytes, human_bytes, size_by_part
    from llava_fa.quantization import compression_report

    folder, model = _load_compressed(args.path)
    report = compression_report(model)
    parts = size_by_part(model, report)
    if args.json:
        out = report.to_dict()
        if not args.per_module:
            out.pop("modules")
        out["parts"] = [dict(p.__dict__, ratio=p.ratio, bits_per_parameter=p.bits_per_parameter) for p in parts]
        out["folder_weight_bytes"] = folder_weight_bytes(folder)
        print(json.dumps(out, indent=2))
        return 0
    if args.per_module:
        print(report)
        print()
    print(f"{'part':<24} {'parameters':>12} {'modules':>7} {'dense bf16':>12} {'stored':>12} {'ratio':>7} {'bits/param':>10}")
    for p in parts:
        print(f"{p.part:<24} {p.parameters:>12,d} {p.modules:>7} {human_bytes(p.bf16_bytes):>12} "
              f"{human_bytes(p.stored_bytes):>12} {p.ratio:>7.2f} {p.bits_per_parameter:>10.2f}")
    print(f"compressed modules: {report.bits_per_weight:.2f} bits per weight, mean relative error "
          f"{report.mean_error:.4f}; weight files on disk: {human_bytes(folder_weight_bytes(folder))}")
    return 0


# ----------------------------------------------------------------------------------------- card
def cmd_card(args: argparse.Namespace) -> int:
    from llava_fa.hub.card import load_eval_results, write_model_card

    summary = None
    if args.eval_results:
        try:
            summary = load_eval_results(args.eval_results)
        except (FileNotFoundError, ValueError) as exc:
            raise CLIError(_one_line(exc)) from None
    speed = None
    if args.speed is not None:
        try:
            speed = json.loads(Path(args.speed).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise CLIError(f"--speed {args.speed}: {_one_line(exc)}") from None
    folder, model = _load_compressed(args.path)
    dest = write_model_card(folder, model, base_model=args.base_model, eval_results=summary, license=args.license,
                            repo_id=args.repo_id, quantized_by=args.quantized_by, speed=speed)
    print(f"wrote {dest}")
    return 0


# ----------------------------------------------------------------------------------------- push
def cmd_push(args: argparse.Namespace) -> int:
    from llava_fa.hub.push import PushError, push_folder

    try:
        info = push_folder(args.path, args.repo_id, private=True if args.private else None, revision=args.revision,
                           create_pr=args.create_pr, commit_message=args.commit_message, token=args.token)
    except PushError as exc:
        raise CLIError(str(exc)) from None
    print(f"pushed {args.path} -> {info.url}" + (f" (pull request {info.pr_url})" if info.pr_url else ""))
    return 0


# ----------------------------------------------------------------------------------------- eval
def cmd_eval(args: argparse.Namespace) -> int:
    try:
        import llava_fa.evaluation as evaluation
    except ImportError as exc:
        raise CLIError(f"evaluation is not available ({_one_line(exc)}).") from None
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else []
    if not tasks and args.reference is None:
        raise CLIError("pass --tasks (e.g. --tasks pope,mme) and/or --reference DENSE.")
    known = getattr(evaluation, "TASKS", None)
    if known is not None:
        unknown = [t for t in tasks if t not in known]
        if unknown:
            raise CLIError(f"unknown task(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}.")
    if tasks and args.data is None:
        raise CLIError("missing data: pass --data DIR, the folder holding one sub-folder per task (e.g. DIR/pope).")
    if tasks and not Path(args.data).is_dir():
        raise CLIError(f"--data {args.data}: no such folder.")
    if args.limit is not None and args.limit < 1:
        raise CLIError(f"--limit must be >= 1, got {args.limit}.")
    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be >= 1, got {args.batch_size}.")
    from llava_fa.hub.checkpoint import resolve_checkpoint

    model_path = resolve_checkpoint(args.model)
    reference = resolve_checkpoint(args.reference) if args.reference is not None else None
    out: dict[str, Any] = {}
    if tasks:
        try:
            out = evaluation.evaluate_path(model_path, tasks, args.data, limit=args.limit, batch_size=args.batch_size,
                                           output=args.output, device=args.device)
        except (FileNotFoundError, ValueError, KeyError) as exc:
            raise CLIError(_one_line(exc)) from None
    if reference is not None:
        output = args.output
        if tasks and output is not None:  # the task results already went to --output
            output = str(Path(output).with_name(Path(output).stem + "_fidelity" + Path(output).suffix))
        prompts = evaluation.default_prompts()[:args.limit] if args.limit else None
        try:
            fidelity = evaluation.fidelity_path(model_path, reference, prompts, output=output, device=args.device)
        except (FileNotFoundError, ValueError) as exc:
            raise CLIError(_one_line(exc)) from None
        out = {**out, "fidelity": fidelity} if tasks else fidelity
    print(json.dumps(_summary(out), indent=2, default=str))
    return 0


def _summary(results: dict[str, Any]) -> dict[str, Any]:
    """The printed view of eval results: scores without per-sample predictions."""
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ("predictions", "per_prompt")}
        return value
    return strip(results)


# ----------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The `llava-fa` argument parser (defaults of compression flags shown from FourierApproxConfig)."""
    defaults = config_defaults()
    codebooks = _choices("llava_fa.fourier.settings", "CODEBOOKS", ("uniform", "lloyd", "vq"))
    transforms = _choices("llava_fa.fourier.settings", "TRANSFORMS", ("rfft", "rfft2"))
    table_fits = _choices("llava_fa.fourier.settings", "TABLE_FITS", ("kmeans", "gaussian"))
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fourier-domain compression (LLaVA-FA) of LLaVA-style and transformers models: compress, "
                    "calibrate, report, write the model card, push to the Hub, evaluate.",
        epilog=textwrap.dedent(f"""\
            example:
              {PROG} compress path/to/llava-fa out/llava-fa-fourier --rank 16 --base-model org/llava-fa
              {PROG} report out/llava-fa-fourier --per-module
              {PROG} eval out/llava-fa-fourier --tasks pope --data data/ --output results.json
              {PROG} card out/llava-fa-fourier --base-model org/llava-fa --eval-results results.json
              {PROG} push out/llava-fa-fourier me/llava-fa-fourier --private"""))
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = _add(sub, "compress", "Compress a dense checkpoint (every Linear but the kept-dense ones) and save it.",
             f"{PROG} compress Qwen/llava-qwen2.5-7b out/llava-fourier --rank 16 --override vision_tower.rank=32", cmd_compress)
    p.add_argument("model", metavar="MODEL", help="dense checkpoint: a local folder or a Hub id")
    p.add_argument("output", metavar="OUTPUT", help="folder to write (must not exist or be empty, unless --overwrite)")
    p.add_argument("--rank", type=int, default=argparse.SUPPRESS,
                   help=f"complex rank per matrix (default {defaults.get('rank')})")
    p.add_argument("--amplitude-bits", type=int, default=argparse.SUPPRESS,
                   help=f"PolarQuant amplitude bits (default {defaults.get('amplitude_bits')})")
    p.add_argument("--phase-bits", type=int, default=argparse.SUPPRESS,
                   help=f"PolarQuant phase bits (default {defaults.get('phase_bits')})")
    p.add_argument("--group-size", type=lambda s: None if s.lower() == "none" else int(s), default=argparse.SUPPRESS,
                   help=f"coefficients per amplitude scale, or 'none' for one per matrix (default {defaults.get('group_size')})")
    p.add_argument("--codebook", choices=codebooks, default=argparse.SUPPRESS, help=f"(default {defaults.get('codebook')})")
    p.add_argument("--transform", choices=transforms, default=argparse.SUPPRESS, help=f"(default {defaults.get('transform')})")
    p.add_argument("--calibration", default=None, metavar="STATS",
                   help="statistics file from `llava-fa calibrate` (default: no calibration)")
    p.add_argument("--error-feedback", action="store_true", default=argparse.SUPPRESS,
                   help="GPTQ-style error-feedback rounding (needs --calibration from `calibrate --second-moment`; "
                        "lower output error, ~10-14x the CPU compression time)")
    p.add_argument("--feedback-damp", type=float, default=argparse.SUPPRESS,
                   help=f"error-feedback dampening (default {defaults.get('feedback_damp')})")
    p.add_argument("--table-fit", choices=table_fits, default=argparse.SUPPRESS,
                   help=f"with --codebook vq: 'gaussian' uses one fixed fitted table instead of per-matrix k-means "
                        f"(default {defaults.get('table_fit')})")
    p.add_argument("--refit-rounds", type=int, default=argparse.SUPPRESS,
                   help=f"least-squares refits of scales and codebook after rounding (default "
                        f"{defaults.get('refit_rounds')}; each round costs about one more rounding pass)")
    p.add_argument("--override", action="append", default=[], metavar="PATTERN.FIELD=VALUE",
                   help="per-module setting, PATTERN a regex on module names; repeatable")
    p.add_argument("--device-map", default=None, help="e.g. 'auto' or 'cuda:0' (default: transformers' default)")
    p.add_argument("--dtype", default=None, help="dtype to load the dense weights in, e.g. bfloat16")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the checkpoint's own code")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUTPUT")
    p.add_argument("--no-card", action="store_true", help="do not write OUTPUT/README.md")
    p.add_argument("--base-model", default=None, metavar="ID",
                   help="Hub id of MODEL for the card (default: MODEL when it is a Hub id)")
    p.add_argument("--license", default=None, help="card license (default: the base model's, when known)")

    p = _add(sub, "calibrate", "Collect per-Linear input statistics for `compress --calibration`.",
             f"{PROG} calibrate path/to/llava-fa data/images/ stats.safetensors --samples 64", cmd_calibrate)
    p.add_argument("model", metavar="MODEL", help="dense checkpoint (folder or Hub id)")
    p.add_argument("data", metavar="DATA",
                   help="a folder of images (prompted with a fixed description request) or a LLaVA-format .json/.jsonl "
                        "(records with 'image' and 'conversations')")
    p.add_argument("output", metavar="OUTPUT", help="statistics file to write (.safetensors)")
    p.add_argument("--samples", type=int, default=128, help="use at most N samples (default 128)")
    p.add_argument("--second-moment", action="store_true",
                   help="also store each input's E[x x^T] (n^2 * 4 bytes per distinct input), for "
                        "`compress --error-feedback`")
    p.add_argument("--second-moment-max-features", type=lambda v: None if v.lower() == "none" else int(v),
                   default=8192, metavar="N|none",
                   help="skip second moments of inputs wider than N (default 8192; 'none': keep all)")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")

    p = _add(sub, "report", "Print the compression report of a compressed checkpoint.",
             f"{PROG} report out/llava-fourier --per-module", cmd_report)
    p.add_argument("path", metavar="PATH", help="compressed checkpoint (folder or Hub id)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--per-module", action="store_true", help="include one row per compressed module")

    p = _add(sub, "card", "Write PATH/README.md: the model card with Hub metadata.",
             f"{PROG} card out/llava-fourier --base-model org/llava-qwen2.5-7b --eval-results results.json", cmd_card)
    p.add_argument("path", metavar="PATH", help="compressed checkpoint folder")
    p.add_argument("--base-model", required=True, metavar="ID", help="Hub id of the dense parent")
    p.add_argument("--eval-results", nargs="+", default=None, metavar="FILE",
                   help="JSON written by `llava-fa eval --output` (task scores and/or --reference agreement)")
    p.add_argument("--license", default=None, help="default: the base model's license, when known")
    p.add_argument("--repo-id", default=None, help="where the card will live (used in its code snippets)")
    p.add_argument("--quantized-by", default=None, help="who compressed it (metadata `quantized_by`)")
    p.add_argument("--speed", default=None, metavar="FILE",
                   help="JSON of measured speed/memory, {'hardware': ..., 'quantity': value, ...}")

    p = _add(sub, "push", "Upload a compressed folder (weights, config, processor, remote code, card) to the Hub.",
             f"{PROG} push out/llava-fourier me/llava-fourier --private --commit-message 'rank 16, 3+5 bits'", cmd_push)
    p.add_argument("path", metavar="PATH", help="compressed checkpoint folder with README.md (see `llava-fa card`)")
    p.add_argument("repo_id", metavar="REPO_ID", help="e.g. me/llava-fourier")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--revision", default=None, help="branch to push to (created from main if missing)")
    p.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    p.add_argument("--commit-message", default=None)
    p.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or `hf auth login`)")

    p = _add(sub, "eval", "Evaluate a model on benchmarks (labels) and/or against its dense parent (--reference).",
             f"{PROG} eval out/llava-fourier --tasks pope,mme --data data/ --limit 200 --output results.json", cmd_eval)
    p.add_argument("model", metavar="MODEL", help="checkpoint folder or Hub id")
    p.add_argument("--tasks", default=None, help="comma-separated task names (see llava_fa.evaluation.TASKS)")
    p.add_argument("--data", default=None, metavar="DIR", help="folder with the local benchmark data")
    p.add_argument("--limit", type=int, default=None, help="at most N samples per task")
    p.add_argument("--batch-size", type=int, default=8, help="(default 8)")
    p.add_argument("--output", default=None, metavar="FILE", help="write the results JSON here")
    p.add_argument("--reference", default=None, metavar="DENSE",
                   help="dense parent: also measure agreement (greedy tokens, KL) with it")
    p.add_argument("--device", default=None, help="e.g. cuda:0 (default: the evaluation's choice)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run `llava-fa` with `argv` (default `sys.argv[1:]`); return the exit status (0 ok, 1 failure, 2 usage)."""
    _progress_env()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line for the user; --debug for the traceback
        if args.debug:
            raise
        from llava_fa.hub.checkpoint import CheckpointError

        known = isinstance(exc, (CLIError, CheckpointError, FileNotFoundError, ValueError, TypeError, OSError))
        reason = _one_line(exc) if known else f"{type(exc).__name__}: {_one_line(exc)}"
        print(f"{PROG} {args.command}: error: {reason}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())

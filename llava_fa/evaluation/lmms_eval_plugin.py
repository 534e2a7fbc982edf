"""lmms-eval model ``llava_fa``: run lmms-eval's task suite on a (compressed) LLaVA-FA folder.

Registered through the ``lmms_eval.models`` entry point (lmms-eval 0.7.x resolves model names
through manifests; its ``@register_model`` decorator alone does not reach the CLI)::

    [project.entry-points."lmms_eval.models"]
    llava_fa = "llava_fa.evaluation.lmms_eval_plugin:MANIFEST"

then ``lmms-eval --model llava_fa --model_args pretrained=DIR --tasks pope_full,mme``.
Without the entry point: ``lmms_eval.evaluator.simple_evaluate(model=LlavaFALmms(pretrained=DIR),
tasks=[...])``. This module imports lmms-eval; ``llava_fa.evaluation`` never imports it.

Scoring differences to keep in mind: these numbers are lmms-eval's. Its POPE ``pope_yes_ratio``
is the share of *ground-truth* yes (0.5 on balanced POPE whatever the model answers) and its
POPE accuracy/precision/recall count only an exact "yes"/"no" (so "No." is a non-answer), its
``pope`` task pools the three categories, its GQA match removes all punctuation and its MME
parser reads a bare "y"/"n" as yes/no. ``llava-fa eval`` (``llava_fa.evaluation.evaluate``) reports
LLaVA's rules instead: the predicted yes-ratio, LLaVA's yes/no parsing, per-category POPE means.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import torch
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from lmms_eval.models.registry_v2 import ModelManifest

from .runner import load_model_and_processor

__all__ = ["LlavaFALmms", "MANIFEST"]

IMAGE_TOKEN = "<image>"


class LlavaFALmms(lmms):
    """lmms-eval "simple" model around ``AutoModelForImageTextToText`` + ``AutoProcessor`` (remote code).

    ``pretrained``: folder or Hub id; ``device``: "cuda", "cpu", ... (default: CUDA if present);
    ``dtype``: "auto", "bfloat16", "float32", ...; ``batch_size``: prompts per ``generate`` call
    (left padding). Greedy unless a task asks for ``temperature > 0``.
    """

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        device: str | None = None,
        dtype: str = "auto",
        batch_size: int | str = 1,
        max_batch_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if kwargs:
            raise TypeError(f"llava_fa: unknown model_args {sorted(kwargs)}; accepted: pretrained, device, dtype, "
                            f"batch_size.")
        torch_dtype = dtype if dtype == "auto" else getattr(torch, str(dtype), None)
        if torch_dtype is None:
            raise ValueError(f"llava_fa: dtype {dtype!r} is not a torch dtype (e.g. bfloat16, float16, float32).")
        self._model, self._processor = load_model_and_processor(pretrained, device=device, dtype=torch_dtype)
        self.pretrained = pretrained
        self.batch_size_per_gpu = max(1, int(batch_size))
        self._tokenizer = self._processor.tokenizer
        self._tokenizer.padding_side = "left"

    # --- properties lmms-eval reads -------------------------------------------------------------
    @property
    def model(self):
        return self._model

    @property
    def tokenizer(self):
        return self._tokenizer

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def device(self) -> torch.device:
        return self._model.device

    # --- helpers ----------------------------------------------------------------------------------
    def _visuals(self, doc_to_visual, doc_id: int, task: str, split: str) -> list:
        visuals = doc_to_visual(self.task_dict[task][split][doc_id]) if doc_to_visual is not None else []
        return [v.convert("RGB") for v in (visuals or []) if hasattr(v, "convert")]

    def _chat(self, context: str, n_images: int) -> str:
        # Tasks that already place "<image>" in the text keep it; otherwise images go first, as in LLaVA.
        n_missing = max(0, n_images - context.count(IMAGE_TOKEN))
        content = [{"type": "image"}] * n_missing + [{"type": "text", "text": context}]
        return self._processor.apply_chat_template([{"role": "user", "content": content}],
                                                   add_generation_prompt=True, tokenize=False)

    def _encode(self, texts: list[str], images: list) -> dict[str, torch.Tensor]:
        kwargs: dict[str, Any] = {"text": texts, "padding": True, "return_tensors": "pt"}
        if images:
            kwargs["images"] = images
        return self._processor(**kwargs).to(self.device)

    # --- lmms API ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Answers for ``(context, gen_kwargs, doc_to_visual, doc_id, task, split)`` requests, in order."""
        from tqdm.auto import tqdm

        groups: dict[str, list[int]] = defaultdict(list)
        for i, request in enumerate(requests):
            groups[json.dumps(request.args[1], sort_keys=True, default=str)].append(i)
        results: list[str | None] = [None] * len(requests)
        bar = tqdm(total=len(requests), desc="llava_fa responding", disable=self.rank != 0)
        for indices in groups.values():
            gen_kwargs = dict(requests[indices[0]].args[1])
            until = gen_kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            temperature = float(gen_kwargs.get("temperature", 0) or 0)
            generate_kwargs: dict[str, Any] = {
                "max_new_tokens": int(gen_kwargs.get("max_new_tokens", 128)),
                "do_sample": temperature > 0,
                "num_beams": int(gen_kwargs.get("num_beams", 1) or 1),
            }
            if temperature > 0:
                generate_kwargs["temperature"] = temperature
                if gen_kwargs.get("top_p") is not None:
                    generate_kwargs["top_p"] = float(gen_kwargs["top_p"])
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                texts, images = [], []
                for i in chunk:
                    context, _, doc_to_visual, doc_id, task, split = requests[i].args
                    visuals = self._visuals(doc_to_visual, doc_id, task, split)
                    texts.append(self._chat(context, len(visuals)))
                    images.extend(visuals)
                inputs = self._encode(texts, images)
                output = self._model.generate(**inputs, **generate_kwargs)
                decoded = self._tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
                for i, text in zip(chunk, decoded):
                    for stop in until:
                        if stop:
                            text = text.split(stop)[0]
                    results[i] = text
                    self.cache_hook.add_partial("generate_until", (requests[i].args[0], gen_kwargs), text)
                bar.update(len(chunk))
        bar.close()
        return [r if r is not None else "" for r in results]

    @torch.inference_mode()
    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        """``(sum of log p(continuation tokens | context, images), continuation is the greedy one)``."""
        out = []
        for context, target, doc_to_visual, doc_id, task, split in [r.args for r in requests]:
            continuation = target if isinstance(target, str) else target(self.task_dict[task][split][doc_id])
            visuals = self._visuals(doc_to_visual, doc_id, task, split)
            inputs = self._encode([self._chat(context, len(visuals))], visuals)
            cont = self._tokenizer(continuation, add_special_tokens=False, return_tensors="pt")["input_ids"].to(self.device)
            n_prompt, n_cont = inputs["input_ids"].shape[1], cont.shape[1]
            inputs["input_ids"] = torch.cat([inputs["input_ids"], cont], dim=1)
            inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
            logits = self._model(**inputs).logits[0, n_prompt - 1:n_prompt - 1 + n_cont].float()
            logp = torch.log_softmax(logits, dim=-1)
            token_logp = logp.gather(-1, cont[0, :, None])[:, 0]
            out.append((float(token_logp.sum()), bool((logits.argmax(-1) == cont[0]).all())))
        return out

    def generate_until_multi_round(self, requests) -> list[str]:
        raise NotImplementedError("llava_fa does not implement multi-round generation.")


MANIFEST = ModelManifest(model_id="llava_fa", simple_class_path="llava_fa.evaluation.lmms_eval_plugin.LlavaFALmms")

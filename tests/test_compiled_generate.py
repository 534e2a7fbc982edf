"""Compiled static-cache decoding of a Fourier-compressed causal LM: transformers' own auto-compile in `generate`
(``cache_implementation="static"`` + a ``CompileConfig``) really compiles the decode step with Inductor, the
compiled graph holds one ``llava_fa_kernels::fourier_linear`` call per compressed layer (no graph break, no
dense fallback), and the generated tokens equal eager decoding's.

transformers 5.24 auto-compiles only on cuda/xpu/neuron/tpu unless ``compile_config._compile_all_devices`` is
set (``GenerationMixin._valid_auto_compile_criteria``); the CPU case sets it, as transformers' own tests do.
Also benchmarks/generate.py at toy size (its rows, ratios, skipped peers, atomic files) and its helpers.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from conftest import tiny_qwen2_lm  # noqa: E402
from transformers import AutoModelForCausalLM, CompileConfig  # noqa: E402

from llava_fa.kernels import cpu_lut  # noqa: E402
from llava_fa.quantization import FourierApproxConfig, is_fourier_linear  # noqa: E402

VOCAB = 96
#: hidden 64 -> 32 rfft columns (the C++ LUT kernel's 16-aligned case); intermediate 80 -> 40 columns in
#: down_proj (not 16-aligned: the plain-torch spectral path of the same op).
CONFIG = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=80, num_hidden_layers=2, max_position_embeddings=64)
NEW_TOKENS = 8
OP = torch.ops.llava_fa_kernels.fourier_linear


@pytest.fixture(scope="module")
def saved_lm(tmp_path_factory):
    """A seeded tiny 2-layer Qwen2 causal LM saved as a plain (dense) checkpoint folder."""
    path = tmp_path_factory.mktemp("tiny_qwen2") / "dense"
    tiny_qwen2_lm(**CONFIG).save_pretrained(path)
    return path


class RecordingInductor:
    """A ``torch.compile`` backend: Inductor (``compile_fx``) on the Dynamo graph, which it keeps in ``graphs``.

    `cudagraphs` turns on Inductor's CUDA graphs (what ``mode="reduce-overhead"`` does).
    """

    def __init__(self, cudagraphs: bool = False):
        self.graphs: list[torch.fx.GraphModule] = []
        self.cudagraphs = cudagraphs

    def __call__(self, gm: torch.fx.GraphModule, example_inputs):
        from torch._inductor.compile_fx import compile_fx

        self.graphs.append(gm)
        return compile_fx(gm, example_inputs, config_patches={"triton.cudagraphs": self.cudagraphs})

    def __deepcopy__(self, memo):  # CompileConfig.to_dict deep-copies its fields: keep this very recorder
        return self


def op_calls(gm: torch.fx.GraphModule) -> int:
    """How many nodes of `gm` call the FourierLinear custom op (packet or overload)."""
    return sum(node.op == "call_function" and node.target in (OP, OP.default) for node in gm.graph.nodes)


def compress(path, device: str) -> torch.nn.Module:
    """The checkpoint at `path` compressed through the public path (FourierApproxConfig defaults) on `device`."""
    model = AutoModelForCausalLM.from_pretrained(path, quantization_config=FourierApproxConfig()).eval().to(device)
    return model


@pytest.mark.slow  # ~40 s on 2 cores, almost all of it Inductor compiling the decode step (C++ on the CPU)
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[
    pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")])])
def test_compiled_static_cache_generate_matches_eager(saved_lm, device):
    model = compress(saved_lm, device)
    compressed = [name for name, module in model.named_modules() if is_fourier_linear(module)]
    assert len(compressed) == 14  # q/k/v/o + gate/up/down in both layers; lm_head stays dense
    if device == "cpu" and cpu_lut.kernel() is not None:  # both CPU routes of the op are inside the graph
        mlp = model.model.layers[0].mlp
        x = torch.zeros(1, 64)
        assert cpu_lut.supported(x, 8, mlp.gate_proj.n_cols, mlp.gate_proj.group_size)
        assert not cpu_lut.supported(torch.zeros(1, 80), 8, mlp.down_proj.n_cols, mlp.down_proj.group_size)
    ids = torch.randint(0, VOCAB - 1, (2, 5), generator=torch.Generator().manual_seed(1)).to(device)
    kwargs = dict(max_new_tokens=NEW_TOKENS, do_sample=False, cache_implementation="static", pad_token_id=VOCAB - 1,
                  eos_token_id=None, return_dict_in_generate=True, output_scores=True)

    with torch.no_grad():
        eager = model.generate(ids, disable_compile=True, **kwargs)
    assert not hasattr(model, "_compiled_call")  # eager really was eager

    backend = RecordingInductor(cudagraphs=device == "cuda")
    config = CompileConfig(fullgraph=True, dynamic=False, backend=backend, mode=None)
    if device == "cpu":
        config._compile_all_devices = True  # transformers auto-compiles on CPU only with this flag
    torch._dynamo.reset()
    with torch.no_grad():
        compiled = model.generate(ids, compile_config=config, **kwargs)

    assert hasattr(model, "_compiled_call"), "generate did not take its auto-compile path"
    assert len(backend.graphs) == 1  # one graph for all decode steps: fullgraph, no recompilation
    assert op_calls(backend.graphs[0]) == len(compressed)  # every compressed layer is the custom op in the graph
    traced = {str(node.target) for node in backend.graphs[0].graph.nodes if node.op == "call_function"}
    assert not any("fft" in t for t in traced)  # no dense rebuild (inverse FFT of a weight) traced around the op

    assert compiled.sequences.shape == (2, 5 + NEW_TOKENS)
    assert torch.equal(compiled.sequences, eager.sequences)
    for step_eager, step_compiled in zip(eager.scores, compiled.scores):
        torch.testing.assert_close(step_compiled, step_eager, atol=1e-4, rtol=1e-4)


# ----- benchmarks/generate.py at toy size (eager only: seconds) ---------------------------------------------
def _generate_bench():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import generate

    return generate


def test_generate_benchmark_writes_rows_ratios_and_skips(tmp_path):
    bench = _generate_bench()
    out = tmp_path / "generate_toy.json"
    meta = bench.main(["--device", "cpu", "--preset", "tiny", "--batches", "1", "2", "--new-tokens", "2", "--reps", "1",
                       "--prefill-len", "8", "--modes", "eager", "--methods", "bf16", "ours", "bnb_nf4",
                       "--workdir", str(tmp_path), "--output", str(out)])
    saved = json.loads(out.read_text())
    assert saved["rows"] == meta["rows"] and out.with_suffix(".md").read_text().count("| eager |") == 4
    assert [(r["batch"], r["method"]) for r in saved["rows"]] == [(1, "bf16"), (1, "ours"), (2, "bf16"), (2, "ours")]
    bf16 = {r["batch"]: r["tok_s"] for r in saved["rows"] if r["method"] == "bf16"}
    for row in saved["rows"]:
        assert row["tok_s"] > 0 and row["compiled"] is False and "x_eager" not in row
        assert row["x_bf16"] == pytest.approx(row["tok_s"] / bf16[row["batch"]], abs=1e-3)
    assert saved["methods"]["bnb_nf4"].startswith("skipped")  # a peer that cannot run is recorded, not fatal
    assert saved["methods"]["ours"]["weights_mib"] > 0 and saved["methods"]["ours"]["prefill_tok_s"] > 0
    assert not list(tmp_path.glob("*.tmp"))  # written atomically


def test_generate_benchmark_config_and_comparison():
    bench = _generate_bench()
    config = bench.text_config("qwen2.5-0.5b", 2)
    assert config.num_hidden_layers == 2 and len(config.layer_types) == 2 and config.hidden_size == 896
    with pytest.raises(ValueError, match="--layers"):
        bench.text_config("qwen2.5-0.5b", 25)
    assert 0.17 < bench.linear_fraction(config) < 0.19  # the dense tied head/embedding dominates 2 layers
    ids = torch.tensor([[9, 1, 2, 3], [9, 1, 2, 3]])
    logits = torch.zeros(3, 2, 4)
    logits[..., 1], logits[..., 0] = 1.0, 0.9
    other_logits = logits.clone()
    other_logits[1, 1, 0] += 0.2  # sequence 1 flips at step 1 (0.1 top-2 gap), then its inputs differ
    other_logits[2, 1, 3] = 5.0  # after divergence: not counted
    cmp = bench.compare_to_eager((ids, logits), (torch.tensor([[9, 1, 2, 3], [9, 1, 0, 3]]), other_logits), 1)
    assert cmp == dict(tokens_match_eager=False, tokens_equal_frac=pytest.approx(5 / 6, abs=1e-3),
                       logits_max_diff=pytest.approx(0.2), eager_top2_gap_at_divergence=pytest.approx(0.1))
    assert bench.compare_to_eager((ids, logits), (ids, logits), 1) == dict(
        tokens_match_eager=True, tokens_equal_frac=1.0, logits_max_diff=0.0)

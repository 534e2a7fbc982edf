"""Compiled static-cache decoding of a Fourier-compressed causal LM: transformers' own auto-compile in `generate`
(``cache_implementation="static"`` + a ``CompileConfig``) really compiles the decode step with Inductor, the
compiled graph holds one ``llava_fa_kernels::fourier_linear`` call per compressed layer (no graph break, no
dense fallback), and the generated tokens equal eager decoding's.

transformers 5.24 auto-compiles only on cuda/xpu/neuron/tpu unless ``compile_config._compile_all_devices`` is
set (``GenerationMixin._valid_auto_compile_criteria``); the CPU case sets it, as transformers' own tests do.
"""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers import AutoModelForCausalLM, CompileConfig, Qwen2Config, Qwen2ForCausalLM  # noqa: E402

from llava_fa.kernels import cpu_lut  # noqa: E402
from llava_fa.quantization import FourierApproxConfig, is_fourier_linear  # noqa: E402

VOCAB = 96
#: hidden 64 -> 32 rfft columns (the C++ LUT kernel's 16-aligned case); intermediate 80 -> 40 columns in
#: down_proj (not 16-aligned: the plain-torch spectral path of the same op).
CONFIG = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, tie_word_embeddings=False, max_position_embeddings=64)
NEW_TOKENS = 8
OP = torch.ops.llava_fa_kernels.fourier_linear


@pytest.fixture(scope="module")
def saved_lm(tmp_path_factory):
    """A seeded tiny 2-layer Qwen2 causal LM saved as a plain (dense) checkpoint folder."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_qwen2") / "dense"
    Qwen2ForCausalLM(Qwen2Config(**CONFIG)).eval().save_pretrained(path)
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

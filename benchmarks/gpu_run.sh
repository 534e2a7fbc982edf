#!/usr/bin/env bash
# One prepared GPU session for issue 9 (fast inference kernels), run through the device tool:
#   1. benchmarks/decode.py --device cuda: per-layer latency, Qwen2.5-7B shapes, batch 1/4/16/64/512,
#      CUDA graphs + L2 flush, rows bf16 / ours / ours variants / int4 tinygemm / installed peers,
#      plus a torch.compile(mode="reduce-overhead") check of two layers;
#   2. the CUDA-marked tests: kernels (fixed Triton configs: LLAVA_FA_AUTOTUNE=0, fewer compilations),
#      FourierLinear / core on CUDA, the bf16-autocast adapter training step (peft), compiled static-cache
#      generate (transformers' auto-compile, mode reduce-overhead) against eager;
#   3. benchmarks/generate.py --device cuda: end-to-end generate tokens/s, batch 1 and 16, eager and compiled
#      static-cache decoding, bf16 / ours / peers that load, prefill 512 and peak memory, for the 7B preset
#      (GEN_LAYERS_7 decoder layers, default 4; first: issue 9's end-to-end target is set on it) and the 1.5B
#      preset (GEN_LAYERS_15, default 6), half of the time left each (at most GEN_TIMEOUT=200 s together):
#      layers cut so that compilation (one Inductor compile per method and batch) fits; each JSON records its
#      layer count and the share of the weights in the cut model's compressible Linears; a run stopped by its
#      timeout keeps the rows it finished (batch 1 first, eager before compiled).
# The whole script keeps to BUDGET seconds (default 530, one device call): each step's timeout is cut to
# what is left.
# Expects the transformers, peft and accelerate wheels in .whl/ (the GPU image's transformers is older and has
# no peft; fetch them once with
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 -d .whl transformers==5.24.0 peft==0.21.2 accelerate==1.15.0
# and carry .whl). Everything lands
# in $OUT (log.txt, decode_cuda.json/.md, generate_cuda_qwen2.5-{1.5b,7b}.json/.md); copy them into
# benchmarks/results/ afterwards.
#   bash benchmarks/gpu_run.sh                 # all
#   SKIP_TESTS=1 BATCHES="1 16" bash benchmarks/gpu_run.sh
#   SKIP_DECODE=1 SKIP_TESTS=1 GEN_TIMEOUT=520 GEN_LAYERS_15=28 GEN_LAYERS_7=28 bash benchmarks/gpu_run.sh
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"; LOG="$OUT/log.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv | tee -a "$LOG"
python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)" 2>&1 | tee -a "$LOG"
python3 -c "import importlib.util as u; print({p: bool(u.find_spec(p)) for p in ('bitsandbytes', 'torchao', 'hqq', 'gemlite')})" 2>&1 | tee -a "$LOG"
BUDGET=${BUDGET:-530}
# left CAP: seconds for the next step, at most CAP and at most what is left of BUDGET (at least 1)
left() { local rest=$((BUDGET - SECONDS)); [ "$rest" -gt "$1" ] && rest=$1; [ "$rest" -lt 1 ] && rest=1; echo "$rest"; }
BATCH_ARG=${BATCHES:+--batches $BATCHES}
if [ -z "$SKIP_DECODE" ]; then
  timeout "$(left "${BENCH_TIMEOUT:-330}")" python3 benchmarks/decode.py --device cuda --compile-check $BATCH_ARG --output "$OUT/decode_cuda.json" 2>&1 | tee -a "$LOG"
fi
if [ -z "$SKIP_TESTS" ]; then
  LLAVA_FA_AUTOTUNE=0 timeout "$(left "${TEST_TIMEOUT:-150}")" python3 -m pytest -q -p no:cacheprovider -m cuda tests/test_kernels.py tests/test_fourier_linear.py tests/test_fourier_core.py tests/test_adapters.py tests/test_compiled_generate.py 2>&1 | tail -n 25 | tee -a "$LOG"
fi
if [ -z "$SKIP_GENERATE" ]; then
  GEN_LEFT=$(left "${GEN_TIMEOUT:-200}")
  echo "generate: ${GEN_LEFT} s left of BUDGET=${BUDGET}" | tee -a "$LOG"
  timeout $((GEN_LEFT / 2 + 1)) python3 benchmarks/generate.py --device cuda --preset qwen2.5-7b --layers "${GEN_LAYERS_7:-4}" --batches 1 16 --new-tokens "${GEN_TOKENS:-64}" --reps 3 --workdir /tmp/gen_ckpt --output "$OUT/generate_cuda_qwen2.5-7b.json" 2>&1 | grep --line-buffered -v -E 'it/s\]|module/s\]' | tee -a "$LOG"
  timeout "$(left "$GEN_LEFT")" python3 benchmarks/generate.py --device cuda --preset qwen2.5-1.5b --layers "${GEN_LAYERS_15:-6}" --batches 1 16 --new-tokens "${GEN_TOKENS:-64}" --reps 3 --workdir /tmp/gen_ckpt --output "$OUT/generate_cuda_qwen2.5-1.5b.json" 2>&1 | grep --line-buffered -v -E 'it/s\]|module/s\]' | tee -a "$LOG"
fi
ls -la "$OUT"

#!/usr/bin/env bash
# One prepared GPU session for issue 9 (fast inference kernels), run through the device tool:
#   1. benchmarks/decode.py --device cuda: per-layer latency, Qwen2.5-7B shapes, batch 1/4/16/64/512,
#      CUDA graphs + L2 flush, rows bf16 / ours / ours variants / int4 tinygemm / installed peers,
#      plus a torch.compile(mode="reduce-overhead") check of two layers;
#   2. the CUDA-marked tests: kernels (fixed Triton configs: LLAVA_FA_AUTOTUNE=0, fewer compilations),
#      FourierLinear / core on CUDA, and the bf16-autocast adapter training step (peft).
# Expects the transformers, peft and accelerate wheels in .whl/ (the GPU image's transformers is older and has
# no peft; fetch them once with
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 -d .whl transformers==5.24.0 peft==0.21.2 accelerate==1.15.0
# and carry .whl). Everything lands
# in $OUT (log.txt, decode_cuda.json, decode_cuda.md); copy them into benchmarks/results/ afterwards.
#   bash benchmarks/gpu_run.sh                 # all
#   SKIP_TESTS=1 BATCHES="1 16" bash benchmarks/gpu_run.sh
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"; LOG="$OUT/log.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv | tee -a "$LOG"
python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)" 2>&1 | tee -a "$LOG"
python3 -c "import importlib.util as u; print({p: bool(u.find_spec(p)) for p in ('bitsandbytes', 'torchao', 'hqq', 'gemlite')})" 2>&1 | tee -a "$LOG"
BATCH_ARG=${BATCHES:+--batches $BATCHES}
timeout ${BENCH_TIMEOUT:-330} python3 benchmarks/decode.py --device cuda --compile-check $BATCH_ARG --output "$OUT/decode_cuda.json" 2>&1 | tee -a "$LOG"
if [ -z "$SKIP_TESTS" ]; then
  LLAVA_FA_AUTOTUNE=0 timeout ${TEST_TIMEOUT:-150} python3 -m pytest -q -p no:cacheprovider -m cuda tests/test_kernels.py tests/test_fourier_linear.py tests/test_fourier_core.py tests/test_adapters.py 2>&1 | tail -n 25 | tee -a "$LOG"
fi
ls -la "$OUT"

#!/usr/bin/env bash
# One prepared GPU session (device tool): CUDA tests, GPU timings of the core, Qwen2.5-7B-preset
# quantize-on-load (lloyd and vq codebooks), FourierLinear decode latency. Expects the transformers
# wheel in .whl/ (the GPU image's transformers is older). Everything lands in $OUT (log.txt + JSON).
#   LAYERS=4 bash benchmarks/gpu_run.sh     # quick; default is the full 28-layer model
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"; LOG="$OUT/log.txt"
R=benchmarks/results
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$LOG"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$LOG"
timeout 150 python3 -m pytest -q -p no:cacheprovider -k cuda tests/test_fourier_core.py tests/test_fourier_linear.py tests/test_quantizer.py 2>&1 | tee -a "$LOG"
[ -n "$SKIP_TIMING" ] || { timeout 200 python3 benchmarks/approximation.py --device cuda --skip-quality 2>&1 | tee -a "$LOG"; cp $R/approximation_cuda_timing.json "$OUT/"; }
LAYER_ARG=${LAYERS:+--layers $LAYERS}
SUFFIX=${LAYERS:+_L$LAYERS}
for cb in lloyd vq; do
  timeout 300 python3 benchmarks/compress_model.py --preset qwen2.5-7b --device cuda $LAYER_ARG --codebook $cb --workdir /tmp/fa7b 2>&1 | grep -v "it/s\]\|module/s\]" | tee -a "$LOG"
  cp "$R/compress_qwen2.5-7b_cuda${SUFFIX}_${cb}35.json" "$OUT/"
done
timeout 120 python3 benchmarks/decode.py --device cuda 2>&1 | tee -a "$LOG"
cp $R/decode_cuda.json "$OUT/"
ls -la "$OUT"

#!/usr/bin/env bash
# One prepared GPU session (device tool): CUDA tests + GPU timings of the core + Qwen2.5-7B-preset quantize-on-load.
# Expects the transformers wheel in .whl/ (the GPU image's transformers is older); logs and results go to $OUT.
#   LAYERS=4 bash benchmarks/gpu_run.sh     # quick; default is the full 28-layer model
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"
timeout 150 python3 -m pytest -q -p no:cacheprovider -k cuda tests/test_fourier_core.py tests/test_fourier_linear.py tests/test_quantizer.py 2>&1 | tee "$OUT/gpu_tests.log"
[ -n "$SKIP_TIMING" ] || { timeout 200 python3 benchmarks/approximation.py --device cuda --skip-quality 2>&1 | tee "$OUT/approx.log"; cp benchmarks/results/approximation_cuda_timing.* "$OUT/"; }
LAYER_ARG=${LAYERS:+--layers $LAYERS}
for cb in uniform vq; do
  bits="--amplitude-bits 4 --phase-bits 4"; [ "$cb" = vq ] && bits="--amplitude-bits 3 --phase-bits 5"
  timeout 300 python3 benchmarks/compress_model.py --preset qwen2.5-7b --device cuda $LAYER_ARG --codebook $cb $bits --workdir /tmp/fa7b 2>&1 | grep -v "it/s\]\|module/s\]" | tee "$OUT/compress_$cb.log"
done
cp benchmarks/results/compress_*cuda* "$OUT/" 2>/dev/null
ls -la "$OUT"

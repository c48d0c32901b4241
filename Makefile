# Two commands a newcomer needs:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The pinned CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[test,bench]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m eenet_sklearn demo

test: $(STAMP)
	$(BIN)/ruff check eenet_sklearn tests benchmarks
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/budget_accuracy.py
	$(BIN)/python benchmarks/speed.py
	$(BIN)/python benchmarks/paper_comparison.py all

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache

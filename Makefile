# Two commands do all the set-up: `make quickstart` and `make test` (`make test-fast`: the unit tests alone).
# torch==2.13.0 is installed first: a CPU build of it lies on the development machines' disk, while
# an unpinned install would pull a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install quickstart test test-fast clean

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

# The unit tests alone, in under a minute: every test not marked `slow` (whole runs, processes).
test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow"

clean:
	rm -rf $(VENV) experiments/quickstart .pytest_cache

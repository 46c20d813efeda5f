# Set-up is part of every target: a fresh clone needs only `make train` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# LOCK=1: install the exact versions of requirements.lock (those the tests last passed with) first.
LOCK ?=

.PHONY: install train test lint bench tensorboard lock clean

install:
ifeq ($(LOCK),1)
	rm -f $(STAMP)
endif
	$(MAKE) --no-print-directory $(STAMP) LOCK=$(LOCK)

# Reinstall whenever pyproject.toml changes (new or re-pinned dependencies).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(if $(filter 1,$(LOCK)),$(BIN)/python -m pip install --quiet -r requirements.lock)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/vl-train $(ARGS)

test: $(STAMP)
	$(MAKE) --no-print-directory lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# ruff's linter and formatter (settings in pyproject.toml): `$(BIN)/ruff format src tests bench` fixes the formatting.
lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

# requirements.lock anew from what .venv holds now: run it after `make test` has passed.
lock: $(STAMP)
	echo '# The exact versions the test suite last passed with (make lock writes it; make install LOCK=1 installs it).' > requirements.lock
	$(BIN)/python -m pip freeze --exclude-editable --all | grep -v -E '^(pip|setuptools|wheel)==' >> requirements.lock

# Every benchmark in bench/, then one table of all their rows (BENCHMARKS.md keeps the latest, section by section).
# BENCH_ARGS="--quick" for smoke runs, "--only startup,memory" for some.
bench: $(STAMP)
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

tensorboard: $(STAMP)
	$(BIN)/tensorboard --logdir outputs --host 127.0.0.1

clean:
	rm -rf $(VENV) .pytest_cache

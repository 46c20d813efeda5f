# Set-up is part of every target: a fresh clone needs only `make train` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install train test bench tensorboard clean

install: $(STAMP)

# Reinstall whenever pyproject.toml changes (new or re-pinned dependencies).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/vl-train $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Every benchmark in bench/, then one table of all their rows (BENCHMARKS.md has the last one).
# BENCH_ARGS="--quick" for smoke runs, "--only startup,memory" for some.
bench: $(STAMP)
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

tensorboard: $(STAMP)
	$(BIN)/tensorboard --logdir outputs --host 127.0.0.1

clean:
	rm -rf $(VENV) .pytest_cache

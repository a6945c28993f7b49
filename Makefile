# nodenet: every target creates .venv (python3 -m venv) and installs what it needs first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-test

# mypy resolves `nodenet.*` through this tree of symlinks (the source folders are mapped
# to import names by setuptools' package-dir, which static checkers cannot follow).
TYPEROOT := build/typecheck

.PHONY: all test lint fmt typecheck bench soak demo clean

all: test

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

$(TYPEROOT)/nodenet:
	mkdir -p $@
	ln -sfn ../../../protocol $@/protocol
	ln -sfn ../../../nodenetd $@/daemon
	ln -sfn ../../../cli $@/cli
	ln -sfn ../../../simulations $@/simulations

lint: $(STAMP) typecheck
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP) $(TYPEROOT)/nodenet
	MYPYPATH=$(TYPEROOT) $(BIN)/mypy --strict -p nodenet.protocol
	MYPYPATH=$(TYPEROOT) $(BIN)/mypy -p nodenet.daemon -p nodenet.cli -p nodenet.simulations

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/python -m pytest

# Longer fuzzing and (later) chaos runs; CI runs the short versions inside `make test`.
soak: $(STAMP)
	NODENET_FUZZ_ITERATIONS=2000000 $(BIN)/python -m pytest tests -k fuzz

bench: $(STAMP)
	$(BIN)/python benchmarks/codec.py
	$(BIN)/python benchmarks/membership.py

# Three real daemons on 127.0.0.1, watched until Ctrl-C (README: "A 60-second tour").
demo: $(STAMP)
	$(BIN)/nodenet dev --nodes 3

clean:
	rm -rf build .demo .pytest_cache .mypy_cache .ruff_cache .hypothesis

# The two set-up commands of the README: `make demo` and `make test`. Each creates .venv if missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.doreisa-installed

.PHONY: demo test test-slow test-hosts lint typecheck pytest bench bench-quick clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/heat/run_demo.py --output out/demo

test: $(STAMP) lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/pyright

pytest: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The slow cases alone (whole-run faults, 16 ranks, several hosts, terminals), the chaos test with 20 seeds.
test-slow: $(STAMP)
	DOREISA_CHAOS_SEEDS=20 $(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

# The multi-host test alone (four virtual hosts in network namespaces; needs root), with the bytes
# each host pair carried per analysed step. make test runs it too, where namespaces can be made.
test-hosts: $(STAMP)
	$(BIN)/python -m pytest tests/hosts -m hosts -s $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

bench-quick: $(STAMP)
	$(BIN)/python benchmarks/run.py --quick

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache

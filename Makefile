# The two commands: `make run` (the product on the embedded CPU model) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test check lint format typecheck imports pytest bench install prepare model clean

run: $(STAMP) model
	$(BIN)/waimai classify

test: check

check: lint typecheck imports pytest

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

prepare: $(STAMP)
	$(BIN)/waimai db upgrade
	$(BIN)/waimai data prepare

model: prepare
	$(BIN)/waimai train local --if-none-active

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(STAMP)
	$(BIN)/mypy core serving retrain cli api bot bench tests

imports: $(STAMP)
	$(BIN)/lint-imports

pytest: $(STAMP)
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python -m bench.accuracy

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

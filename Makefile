# The front door. Every target installs what it needs into .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck migrate bench install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[embedded,dev]'
	touch $(STAMP)

install: $(STAMP)

## run: embedded Postgres + Redis (unless DATABASE_URL / REDIS_URL), migrate, API + worker
run: $(STAMP)
	$(BIN)/python -m integration run

## test: the whole suite against real Postgres and Redis (TEST_DATABASE_URL / TEST_REDIS_URL, else embedded)
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check integration tests migrations
	$(BIN)/ruff format --check integration tests migrations
	$(BIN)/mypy

migrate: $(STAMP)
	$(BIN)/python -m integration migrate

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

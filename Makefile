# The front door. Every target installs what it needs into .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: run test lint typecheck migrate bench install clean chromium

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[embedded,dev]'
	touch $(STAMP)

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[embedded,dev,bench]'
	touch $(BENCH_STAMP)

install: $(STAMP)

## run: embedded Postgres + Redis (unless DATABASE_URL / REDIS_URL), migrate, API + worker
run: $(STAMP)
	$(BIN)/python -m integration run

## test: the whole suite against real Postgres and Redis (TEST_DATABASE_URL / TEST_REDIS_URL, else embedded)
test: $(STAMP) chromium
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## chromium: Debian's browser for the /docs test (Playwright drives it; no browser download).
## Where apt cannot install it, the browser tests skip and say why (outside CI).
chromium:
	@command -v chromium >/dev/null 2>&1 || apt-get install -y chromium \
		|| (apt-get update && apt-get install -y chromium) \
		|| echo "chromium could not be installed: the browser tests will be skipped"

lint: $(STAMP)
	$(BIN)/ruff check integration tests migrations bench
	$(BIN)/ruff format --check integration tests migrations bench
	$(BIN)/mypy

migrate: $(STAMP)
	$(BIN)/python -m integration migrate

## bench: the benchmark suite (wrk + Postgres/Redis: BENCH_DATABASE_URL / BENCH_REDIS_URL, else
## embedded in .data-bench/); writes bench/results/latest.md. BENCH_ARGS=--profile adds py-spy.
bench: $(BENCH_STAMP)
	@command -v wrk >/dev/null 2>&1 || apt-get install -y wrk \
		|| (apt-get update && apt-get install -y wrk)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

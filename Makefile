# The front door. Every target installs what it needs into .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench

LOCK   := requirements/dev.lock
BENCH_LOCK := requirements/bench.lock
# Every dependency pinned with its hashes (requirements/*.lock, made by `make lock`): pip
# refuses anything else, then installs this package itself without touching them.
PIP_LOCKED := $(BIN)/pip install --quiet --require-hashes --no-deps -r

.PHONY: run test lint typecheck migrate bench bench-growth install clean lock audit chromium js screenshots \
	citus citus-up citus-down test-citus bench-citus

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PIP_LOCKED) $(LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

$(BENCH_STAMP): $(STAMP) $(BENCH_LOCK)
	$(PIP_LOCKED) $(BENCH_LOCK)
	touch $(BENCH_STAMP)

install: $(STAMP)

## lock: re-resolve requirements/*.lock from pyproject.toml (UPGRADE=1: newest versions too).
## One universal resolution for Python >= 3.11 on any platform; runtime and bench are
## constrained by dev, so the three agree on every version they share.
UV_COMPILE = $(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 \
	--generate-hashes --no-header --quiet $(if $(UPGRADE),--upgrade)
lock: $(STAMP)
	$(UV_COMPILE) --extra embedded --extra dev -o $(LOCK)
	$(UV_COMPILE) -c $(LOCK) -o requirements/runtime.lock
	$(UV_COMPILE) --extra embedded --extra dev --extra bench -c $(LOCK) -o $(BENCH_LOCK)

## audit: known vulnerabilities in every locked dependency (bench.lock holds them all), from
## PyPI's per-release vulnerability data. Where that database cannot be reached (a mirror that
## does not serve it, no network) it says so and fails rather than report a clean audit;
## --strict fails too if any one package could not be looked up.
AUDIT_PROBE := https://pypi.org/pypi/pip/24.0/json
audit: $(STAMP)
	@$(BIN)/python -c "import urllib.request; urllib.request.urlopen('$(AUDIT_PROBE)', timeout=15)" \
		2>/dev/null || { echo "make audit: PyPI's vulnerability database ($(AUDIT_PROBE)) is unreachable from here: nothing was audited" >&2; exit 2; }
	$(BIN)/pip-audit --strict --progress-spinner off --disable-pip --require-hashes -r $(BENCH_LOCK)

## run: embedded Postgres + Redis (unless DATABASE_URL / REDIS_URL), migrate, API + worker
run: $(STAMP)
	$(BIN)/python -m integration run

## test: the whole suite against real Postgres and Redis (TEST_DATABASE_URL / TEST_REDIS_URL, else
## embedded), on TEST_WORKERS pytest-xdist workers: the tests mostly wait on processes, retries
## and timers, so workers overlap those waits. Each worker has its own database, queue name
## and server (tests/conftest.py). TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 3
test: $(STAMP) chromium js
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

## citus: build Citus from source and install it into this machine's Postgres 15 (Debian has no
## package). CITUS_SRC names a checkout of github.com/citusdata/citus at tag v13.2.2, the last
## line for Postgres 15. The one-line fix: Postgres 15.20 exports have_createdb_privilege(), of
## which pg_version_compat.h still defines a static copy for versions before 16; it is renamed.
CITUS_BUILD_DEPS := postgresql-server-dev-15 liblz4-dev libzstd-dev libkrb5-dev libssl-dev \
	libselinux1-dev libxslt1-dev libpam0g-dev libreadline-dev flex bison autoconf make gcc
citus:
	@test -n "$(CITUS_SRC)" || { echo "usage: make citus CITUS_SRC=/path/to/citus (tag v13.2.2)"; exit 2; }
	@dpkg -s $(CITUS_BUILD_DEPS) >/dev/null 2>&1 || apt-get install -y $(CITUS_BUILD_DEPS) \
		|| (apt-get update && apt-get install -y $(CITUS_BUILD_DEPS))
	sed -i 's/^have_createdb_privilege(void)$$/citus_have_createdb_privilege_pre16(void)/' \
		$(CITUS_SRC)/src/include/pg_version_compat.h
	cd $(CITUS_SRC) && ./configure --without-libcurl && $(MAKE) -j$$(nproc) && $(MAKE) install

## citus-up / citus-down: a local Citus cluster (a coordinator on 9700, workers on 9701 and 9702)
## under .data/citus/, from a Citus already installed into this machine's Postgres 15 (README,
## "Running at scale"); citus-up prints its DATABASE_URL. Without Citus they say so and exit 2.
CITUS := $(BIN)/python -m tests.citus_cluster
CITUS_URL := postgresql://postgres@127.0.0.1:9700
citus-up: $(STAMP)
	@$(CITUS) up

citus-down: $(STAMP)
	@$(CITUS) down

## test-citus: the whole suite against the local cluster's coordinator (each run's database is
## made on every node and distributed by `migrate`); tests that cannot apply say why they skip.
test-citus: $(STAMP)
	@$(CITUS) check || exit 2
	@$(MAKE) --no-print-directory chromium js
	@$(CITUS) up >/dev/null
	TEST_DATABASE_URL=$(CITUS_URL)/postgres $(BIN)/python -m pytest $(PYTEST_ARGS)

## js: the JavaScript clients the tests drive (Segment's analytics-node), from tests/js's lock
## with `npm ci`. Where npm is missing, the tests that need them are skipped, saying why.
JS_STAMP := tests/js/node_modules/.installed
$(JS_STAMP): tests/js/package.json tests/js/package-lock.json
	npm ci --prefix tests/js --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $(JS_STAMP)

js:
	@if command -v npm >/dev/null 2>&1; then $(MAKE) --no-print-directory $(JS_STAMP); \
	else echo "npm is not installed: the analytics-node tests will be skipped"; fi

## chromium: Debian's browser for the /docs test (Playwright drives it; no browser download).
## Where apt cannot install it, the browser tests skip and say why (outside CI).
chromium:
	@command -v chromium >/dev/null 2>&1 || apt-get install -y chromium \
		|| (apt-get update && apt-get install -y chromium) \
		|| echo "chromium could not be installed: the browser tests will be skipped"

## screenshots: every console page at 1280 pixels (and three on a phone) into docs/console, from
## the browser test that checks they fit (the README shows them). Needs what `make test` needs.
screenshots: $(STAMP) chromium
	CONSOLE_SCREENSHOTS=docs/console $(BIN)/python -m pytest tests/test_console_browser.py -q -k fits

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

## bench-citus: the bench's inbound batch and single phases on plain Postgres and on the local
## Citus cluster in the same run; writes bench/results/citus.md. Plain Postgres is, unless
## BENCH_DATABASE_URL says otherwise, a database without the extension on the coordinator's
## server (same binaries, same settings).
bench-citus: $(BENCH_STAMP)
	@$(CITUS) check || exit 2
	@command -v wrk >/dev/null 2>&1 || apt-get install -y wrk \
		|| (apt-get update && apt-get install -y wrk)
	@$(CITUS) up >/dev/null
	BENCH_DATABASE_URL=$${BENCH_DATABASE_URL:-$(CITUS_URL)/plain} \
		CITUS_DATABASE_URL=$(CITUS_URL)/postgres $(BIN)/python -m bench.citus $(BENCH_ARGS)

## bench-growth: the same measurements with 0, 2M and 10M events stored (10-20 minutes; ~15 GB
## of disk for the largest size); writes bench/results/growth.md and growth.svg.
bench-growth: $(BENCH_STAMP)
	@command -v wrk >/dev/null 2>&1 || apt-get install -y wrk \
		|| (apt-get update && apt-get install -y wrk)
	$(BIN)/python -m bench.growth $(GROWTH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

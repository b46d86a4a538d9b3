# Two commands for a newcomer: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CLIENT := $(wildcard client/package.json)
PORT   ?= 8000

.PHONY: install ui run test test-python test-client test-e2e test-system lint format bench bench-quick demo clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[dev,embedded]'
	touch $(STAMP)

install: $(STAMP)

client/node_modules/.package-lock.json: client/package-lock.json
	cd client && npm ci --no-audit --no-fund

ui: install
ifneq ($(CLIENT),)
	$(MAKE) client/node_modules/.package-lock.json
	cd client && npm run build
endif

## serve the API, WebSocket and UI on http://127.0.0.1:$(PORT) with embedded Postgres + Valkey
run: ui
	$(BIN)/leaderboard serve --port $(PORT)

## every test: Python (real Postgres + Redis), client unit tests, browser end-to-end
test: ui test-python
ifneq ($(CLIENT),)
	cd client && npm test
	cd client && npm run e2e:only
endif

test-python: install
	$(BIN)/pytest -q

## the long crash test: 5 minutes of load while servers, Redis and Postgres are killed (`make test` runs 30 s)
.PHONY: test-crash
test-crash: install
	LEADERBOARD_TEST_CRASH=long $(BIN)/pytest -q -s -m crash -rxX

## the Python suite against the machine's PostgreSQL and Redis instead of embedded ones
test-system: install
	LEADERBOARD_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \
	LEADERBOARD_TEST_REDIS_URL=redis://127.0.0.1:6379/9 $(BIN)/pytest -q

lint: install
	$(BIN)/ruff check server tests loadtest
	$(BIN)/ruff format --check server tests loadtest
	$(BIN)/mypy

format: install
	$(BIN)/ruff format server tests loadtest
	$(BIN)/ruff check --fix server tests loadtest

bench: ui
	$(BIN)/python -m loadtest.bench

bench-quick: ui
	$(BIN)/python -m loadtest.bench --quick

## live demo traffic against a running `make run`
demo: install
	$(BIN)/leaderboard demo --players 1000 --url http://127.0.0.1:$(PORT)

clean:
	rm -rf $(VENV) client/node_modules client/dist .leaderboard

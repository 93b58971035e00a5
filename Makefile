# One target per thing a person does. Each sets up what it needs on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: run test lint format bench screenshots clean

$(VENV)/.runtime: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt $(VENV)/.runtime
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

## run: the product on the embedded default (SQLite, in-process cache): prints what to open and a curl line
run: $(VENV)/.runtime
	PY=$(PY) bin/run-demo

# What the portal's JavaScript snippets import (ethers), for the tests that run them with Node.js;
# skipped, like those tests, on a machine without npm.
JS_TESTS := keys/tests/js
JS_DEPS := $(if $(shell command -v npm),$(JS_TESTS)/node_modules/.installed)

$(JS_TESTS)/node_modules/.installed: $(JS_TESTS)/package.json $(JS_TESTS)/package-lock.json
	npm ci --prefix $(JS_TESTS) --no-audit --no-fund --loglevel=error
	touch $@

## test: the whole suite (SQLite and in-process cache, or DATABASE_URL / REDIS_URL when set)
test: $(VENV)/.dev $(JS_DEPS)
	$(PY) manage.py makemigrations --check --dry-run --settings=portal.settings_test
	$(PY) -m pytest $(PYTEST_ARGS)

## screenshots: the README's pictures of the portal, taken by the browser tests (needs chromium)
screenshots: $(VENV)/.dev
	PORTAL_SCREENSHOTS=docs/screenshots $(PY) -m pytest -q keys/tests/test_portal_e2e.py

$(VENV)/.bench: bench/requirements.txt $(VENV)/.runtime
	$(PY) -m pip install -q --disable-pip-version-check -r bench/requirements.txt
	touch $@

## bench: the proxy against nginx, django-revproxy and a direct call on loopback (needs PostgreSQL and
## Redis running; installs wrk and nginx with apt-get when missing). BENCH_ARGS=--quick for about a minute
bench: $(VENV)/.bench
	@if ! command -v wrk >/dev/null || ! PATH="$$PATH:/usr/sbin:/sbin" command -v nginx >/dev/null; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -q && $$SUDO apt-get install -y -q wrk nginx-light; \
	fi
	$(PY) bench/run.py $(BENCH_ARGS)

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) db.sqlite3 staticfiles $(JS_TESTS)/node_modules

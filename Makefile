# One target per thing a person does. Each sets up what it needs on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: run test lint format bench bench-slow screenshots clean

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

# What the portal's browser-side tests import from npm (ethers for the snippets, axe-core for
# accessibility). `make test` installs it when it can; without npm or the registry those tests are
# skipped, not failed. CI insists: .ci/run makes $(JS_DEPS) on its own first.
JS_TESTS := portal/tests/js
JS_DEPS := $(JS_TESTS)/node_modules/.installed

# From the folder, not with --prefix: npm then reads the machine's own configuration (its registry and
# certificate authority), which --prefix skips.
$(JS_DEPS): $(JS_TESTS)/package.json $(JS_TESTS)/package-lock.json
	cd $(JS_TESTS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

## test: the whole suite (SQLite and in-process cache, or DATABASE_URL / REDIS_URL when set)
test: $(VENV)/.dev
	@command -v npm >/dev/null && $(MAKE) --no-print-directory $(JS_DEPS) \
	  || echo "WARNING: no npm packages for portal/tests/js: the snippet and accessibility tests will SKIP"
	$(PY) manage.py makemigrations --check --dry-run --settings=config.settings_test
	$(PY) -m pytest $(PYTEST_ARGS)

## screenshots: the README's pictures of the portal, taken by the browser tests (needs chromium)
screenshots: $(VENV)/.dev
	PORTAL_SCREENSHOTS=docs/screenshots $(PY) -m pytest -q portal/tests/test_portal_e2e.py

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

## bench-slow: slow peers (1,000 calls to a 1-s upstream against nginx; 1,000 slow-body and 1,000
## slow-reading clients), with what other callers see meanwhile and the workers' memory
bench-slow: $(VENV)/.bench
	@if ! command -v wrk >/dev/null || ! PATH="$$PATH:/usr/sbin:/sbin" command -v nginx >/dev/null; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -q && $$SUDO apt-get install -y -q wrk nginx-light; \
	fi
	$(PY) bench/concurrency.py $(BENCH_SLOW_ARGS)

## lint: ruff (rules and format), mypy, and the import contracts (pyproject.toml)
lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy keys portal proxy
	$(VENV)/bin/lint-imports

format: $(VENV)/.dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) db.sqlite3 staticfiles $(JS_TESTS)/node_modules

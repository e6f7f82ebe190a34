# make install | test | lint | sut | demo | soak SCENARIO=soak-1h | ui | report RUN=reports/...
VENV ?= .venv
PY := $(VENV)/bin/python
SOAK := $(VENV)/bin/soak
SCENARIO ?= smoke
RUN ?=

.PHONY: install provision test lint format sut demo soak ui report bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# Two pytest runs: tests that import Locust (gevent monkey-patching) live in a process of their own, without the
# anyio and schemathesis plugins (they import ssl before gevent can patch it: RecursionError in ssl).
# Redis, PostgreSQL and Chromium for the tests: started if down, installed where it can (Debian, root), else named.
provision:
	bash tests/provision.sh

# Two pytest-xdist workers: most end-to-end tests wait on a clock (a run's duration) rather than on a CPU.
PYTEST_WORKERS ?= 2

test: install provision
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup --durations=25 -m "not locust_inprocess" tests
	$(PY) -m pytest -p no:anyio -p no:schemathesis -m locust_inprocess tests; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

sut: install
	$(SOAK) sut

demo: install
	$(SOAK) run demo

soak: install
	$(SOAK) run $(SCENARIO)

ui: install
	$(SOAK) ui $(SCENARIO)

report: install
	@test -n "$(RUN)" || { echo "usage: make report RUN=reports/<run folder>"; exit 2; }
	$(SOAK) report $(RUN)

bench: install
	for script in bench/bench_*.py; do $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

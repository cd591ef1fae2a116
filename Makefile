# Set-up and checks. Every target installs what it needs: on a fresh Debian
# machine as root, `make test` and `make demo` work with nothing but Python.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# pyenv keeps each Python apart, and its shims do not pass tox's interpreter
# discovery: put the bin folders of the ones tox may use (3.10 to 3.13) on the PATH.
PYENV_BINS := $(shell command -v pyenv >/dev/null 2>&1 && pyenv versions --bare | grep -E '^3\.1[0-3]\.[0-9]+$$' | sed "s|^|$$(pyenv root)/versions/|; s|$$|/bin|" | paste -sd: -)

# Go, for the tests against Go's encoding/gob (tests/test_gob_live.py): installed
# under CI=true, where those tests must run; elsewhere they skip, saying so, without it.
GOLANG := $(if $(filter 1 true yes TRUE True YES,$(CI)),golang)

.PHONY: test lint tox demo beanstalkd golang clean

test: $(VENV)/.installed beanstalkd $(GOLANG)
	$(BIN)/pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

tox: $(VENV)/.installed beanstalkd $(GOLANG)
	$(if $(PYENV_BINS),PATH="$(PYENV_BINS):$$PATH") $(BIN)/tox

demo: $(VENV)/.installed
	@$(MAKE) --no-print-directory beanstalkd || echo "demo: could not install beanstalkd; the demo will use memory://"
	$(BIN)/queue-beanstalk demo

# Benchmarks against raw greenstalk on a beanstalkd of its own, both CPU placements,
# and against RQ, dramatiq and Celery on a Redis of the bench's own (installed here,
# never by `make test`); about ten minutes; writes BENCHMARKS.md.
# `$(BIN)/python -m bench --quick` is a smoke run; `--only handler` runs one section.
.PHONY: bench
bench: $(VENV)/.installed beanstalkd
	bash bench/peers_setup.sh $(BIN)/python
	$(BIN)/python -m bench --placement both --peers --output BENCHMARKS.md

beanstalkd:
	@command -v beanstalkd >/dev/null 2>&1 || { \
		echo "installing beanstalkd (Debian package)"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq beanstalkd >/dev/null; }

golang:
	@command -v go >/dev/null 2>&1 || { \
		echo "installing go (Debian package golang-go)"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq golang-go >/dev/null; }

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

clean:
	rm -rf $(VENV) .tox .mypy_cache .ruff_cache .pytest_cache .hypothesis *.egg-info

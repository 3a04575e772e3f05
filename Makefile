# Two commands do all set-up on a fresh machine:
#   make serve   - install into .venv (from requirements.txt) and start the server on the embedded SQLite database
#   make test    - install into .venv (from requirements.txt) and run the whole test suite
# Upgrades are deliberate:
#   make try-latest - install the newest versions allowed by pyproject.toml into .venv-latest and run the suite
#   make lock       - re-pin requirements.txt to the newest versions (commit it once try-latest is green)
VENV ?= .venv
PYTHON ?= python3
HOST ?= 127.0.0.1
PORT ?= 8080
PY := $(VENV)/bin/python
UV_VERSION := 0.13.9

.PHONY: serve test install lock try-latest

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

install: $(VENV)/.installed

serve: $(VENV)/.installed
	$(VENV)/bin/fhir-server serve --host $(HOST) --port $(PORT)

test: $(VENV)/.installed
	$(PY) -m pytest

lock: $(VENV)/.installed
	$(PY) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(PY) -m uv pip compile pyproject.toml requirements-build.in --extra test --generate-hashes \
	    --python-version 3.11 --upgrade -o requirements.txt

try-latest:
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip install --quiet --upgrade pip
	.venv-latest/bin/python -m pip install --quiet --upgrade -e '.[test]'
	.venv-latest/bin/python -m pytest

# Two commands do all set-up on a fresh machine:
#   make serve   - install into .venv and start the server on the embedded SQLite database
#   make test    - install into .venv and run the whole test suite
VENV ?= .venv
PYTHON ?= python3
HOST ?= 127.0.0.1
PORT ?= 8080
PY := $(VENV)/bin/python

.PHONY: serve test install

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

serve: $(VENV)/.installed
	$(VENV)/bin/fhir-server serve --host $(HOST) --port $(PORT)

test: $(VENV)/.installed
	$(PY) -m pytest

# Set-up is part of both targets, so each is one command on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install quickstart test lint

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -e ".[test]"
	touch $@

install: $(VENV)/.installed

quickstart: install
	$(VENV)/bin/swinkit train

test: install
	$(PY) -m ruff check swinkit tests
	$(PY) -m pytest -q --durations=15

lint: install
	$(PY) -m ruff check swinkit tests

# Set-up is part of both targets, so each is one command on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install quickstart test lint docs

SHELL := /bin/bash

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -e ".[test]"
	touch $@

install: $(VENV)/.installed

# The quick start trains into a fresh run directory, reads its best checkpoint back with `swinkit eval`, then
# classifies a validation digit that ships in examples/ with `swinkit predict`, and writes what it measured to
# docs/quickstart.md (benchmarks/quickstart_report.py): the docs' quick-start numbers come from this command.
ifndef RUN
RUN := runs/quickstart-$(shell date +%Y%m%d-%H%M%S)
endif

quickstart: install
	start=$$(date +%s) && set -o pipefail && \
	$(VENV)/bin/swinkit train --output $(RUN) && \
	$(VENV)/bin/swinkit eval --checkpoint $(RUN)/checkpoints/best && \
	$(VENV)/bin/swinkit predict --checkpoint $(RUN)/checkpoints/best examples/digit-7.png | tee $(RUN)/predict.txt && \
	$(PY) benchmarks/quickstart_report.py $(RUN) --seconds $$(( $$(date +%s) - start )) --output docs/quickstart.md

test: install
	$(PY) -m ruff check swinkit tests benchmarks
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --quiet --site-dir .site
	$(PY) -m pytest -q --durations=15

lint: install
	$(PY) -m ruff check swinkit tests benchmarks

docs: install
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs serve

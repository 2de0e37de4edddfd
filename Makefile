# Two commands do all the set-up: `make serve` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# The app closes a socket with 4413 for a frame over MAX_FRAME_BYTES; the server itself refuses
# (1009, before reading the payload) any frame more than 4 KiB over it (docs/operations.md).
MAX_FRAME_BYTES ?= 65536
WS_MAX_SIZE = $$(( $(MAX_FRAME_BYTES) + 4096 ))

.PHONY: serve test lint format install install-dev worker superuser clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

## Install, then serve on the embedded defaults (no Redis) at http://127.0.0.1:8000
serve: $(VENV)/.installed
	DEBUG=$${DEBUG:-1} $(BIN)/python manage.py migrate --noinput -v 0
	DEBUG=$${DEBUG:-1} MAX_FRAME_BYTES=$(MAX_FRAME_BYTES) $(BIN)/uvicorn voiceproject.asgi:application \
		--host $(HOST) --port $(PORT) --ws-max-size $(WS_MAX_SIZE) \
		--ws-per-message-deflate false --no-access-log --lifespan off

## An operator account for /ops/ (Django's auth tables, in SQLite)
superuser: $(VENV)/.installed
	DEBUG=$${DEBUG:-1} $(BIN)/python manage.py migrate --noinput -v 0
	DEBUG=$${DEBUG:-1} $(BIN)/python manage.py createsuperuser

## The task runner for REDIS_URL deployments (TASK_RUNNER=worker)
worker: $(VENV)/.installed
	$(BIN)/python manage.py runworker --layer tasks voice-tasks

## Install, then run the whole test suite
test: $(VENV)/.installed-dev
	$(BIN)/pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: $(VENV)/.installed-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# Everyday verbs. `make run` and `make test` are the two set-up commands of the README: each creates .venv if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= $(or $(WEBSERVER_PORT),8000)
HOST ?= 127.0.0.1

.PHONY: install install-dev run test test-sqlite test-postgres lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first and pinned: pip then takes the CPU build that lies on these machines, not a multi-GB CUDA build.
$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements-dev.txt $(VENV)/.installed
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# The demo forest (20 invented LIAR-style statements) is seeded once: --exist_ok makes later runs a no-op.
run: install
	$(BIN)/python manage.py migrate --noinput
	HF_HUB_OFFLINE=1 $(BIN)/python manage.py seed_forest --dataset_config_name liar_demo --dataset_split test \
		--forest_name_suffix demo --exist_ok
	$(BIN)/python manage.py bootstrap_admin --url http://$(HOST):$(PORT)/admin/
	WEBSERVER_HOST=$(HOST) WEBSERVER_PORT=$(PORT) $(BIN)/python -m prmsite.wsgi

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The suite on whatever DATABASE_URL names (SQLite when unset).
test: install-dev lint
	$(BIN)/python manage.py makemigrations --check --dry-run
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install-dev
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache staticfiles .test-db.sqlite3*

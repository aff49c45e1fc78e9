# Two commands matter: `make demo` and `make test`. Both create .venv when missing.
# The demo needs only the runtime dependencies; `make test` adds the project itself
# (editable) and the dev tools.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.runtime-stamp
STAMP := $(VENV)/.installed-stamp
# pip for the venv: the venv's own when it has one, else this Python's pip pointed at the venv
# (a venv made without pip skips ensurepip, about 6 s of a first `make demo`).
VENV_PIP := if [ -x $(BIN)/pip ]; then pip="$(BIN)/python -m pip"; \
	else pip="$(PY) -m pip --python $(BIN)/python"; fi; $$pip install -q

.PHONY: demo test lint bench clean

$(RUNTIME): pyproject.toml
	@$(PY) -c 'import sys; sys.exit("Python 3.11+ is required") if sys.version_info < (3, 11) else None'
	rm -f $(STAMP)
	if $(PY) -m pip --version >/dev/null 2>&1; then $(PY) -m venv --without-pip $(VENV); \
	else $(PY) -m venv $(VENV); fi
	$(PY) -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > $(VENV)/requirements.txt
	$(VENV_PIP) --no-compile -r $(VENV)/requirements.txt
	touch $@

$(STAMP): $(RUNTIME)
	$(VENV_PIP) -e '.[dev]'
	touch $@

demo: $(RUNTIME)
	$(BIN)/python -m bot demo

lint: $(STAMP)
	$(BIN)/ruff check bot tests bench
	$(BIN)/ruff format --check bot tests bench
	$(BIN)/mypy

# pytest exits 5 when it collects no test; make treats every non-zero exit as failure.
test: lint
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

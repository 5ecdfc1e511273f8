# Each target makes its own virtual environment in .venv (Python >= 3.10 as `python3`).
PYTHON ?= python3
VENV ?= .venv
# The CPU build of PyTorch; set TORCH=torch to take the default (CUDA) build instead.
TORCH ?= torch==2.13.0

.PHONY: demo lint test clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet "$(TORCH)"
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	rm -rf runs/demo
	$(VENV)/bin/aekit demo --out runs/demo

# The linter and formatter (configured in pyproject.toml) run before the tests: a finding fails `make test`.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf $(VENV) runs

# The two commands of the README: `make run` (export -> repository -> real server -> client ->
# benchmark, on CPU) and `make test`. Both build the virtual environment first when it is missing
# or older than the project's dependency files.
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.tritonize-installed

.PHONY: setup run test
setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -c constraints.txt -e ".[test]"
	touch $@

run: setup
	$(VENV)/bin/tritonize run

test: setup
	$(VENV)/bin/python -m pytest

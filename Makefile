PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch==2.13.0 first: on CPU machines it resolves to the CPU build, and the
# project's `torch>=2.4` range is then already satisfied.
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev,agents,video,eval,mllm,quant,train,onnx]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/gleekit demo

test: install
	$(PY) -m pytest -q -n 2

test-slow: install
	$(PY) -m pytest -q -m slow

bench: install
	$(PY) benchmarks/glee_speed.py

clean:
	rm -rf $(VENV) .pytest_cache gleekit-demo

# The two commands of the README: `make demo` (the main job) and `make test` (the suite).
# Each does all of its own set-up on a fresh Debian machine with Python 3.11.
# The bench extra (tf_keras, TFMOT) is installed too: the tests build tf_keras twins
# in subprocesses, never in the test process itself.

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: demo test bench-deps data clean

$(VENV)/.installed-%: setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$*]"
	@touch $@

data:
	@./tools/ensure_data.sh

demo: $(VENV)/.installed-test,bench data
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m tfcompress.cli demo

test: $(VENV)/.installed-test,bench data
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest -n 2 --durations=15 tests

bench-deps: $(VENV)/.installed-test,bench

clean:
	rm -rf $(VENV) demo_out .pytest_cache

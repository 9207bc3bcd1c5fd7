# Every target sets itself up: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXP ?= exp001_baseline
MSG ?=
export WANDB_MODE ?= offline
export PYTHONHASHSEED := 0
SHELL := /bin/bash

.PHONY: install lock test-latest test-oldest demo demo-seg demo-multilabel test submit bench soak clean

LOCK := requirements.lock
# pip-tools' own version is pinned too: another release may write the same lock differently.
PIP_TOOLS := pip-tools==7.7.0
TOOLS := .venv-tools

# Exactly the locked versions, every file checked against its hash; then kit itself, with no dependency
# resolution of its own, so nothing newer than the lock can slip in.
$(STAMP): $(LOCK) pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	touch $(STAMP)

install: $(STAMP)

# Re-resolve the lock from pyproject.toml's ranges, keeping every pin that still fits them (an unchanged
# pyproject gives an unchanged lock). UPGRADE=1 moves every package to the newest version its range allows.
lock:
	test -x $(TOOLS)/bin/pip-compile || ($(PYTHON) -m venv $(TOOLS) && $(TOOLS)/bin/pip install --quiet $(PIP_TOOLS))
	$(TOOLS)/bin/pip-compile --quiet --extra=dev --generate-hashes --allow-unsafe --strip-extras \
		--no-emit-index-url --no-emit-find-links $(if $(UPGRADE),--upgrade) --output-file=$(LOCK) pyproject.toml

# Drift check, never part of `make test`: a throw-away environment with the newest versions the ranges allow.
test-latest:
	rm -rf .venv-latest
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/pip install --quiet --upgrade -e '.[dev]'
	@echo "Versions that differ from the lock (< locked, > newest):"
	@diff <(grep -E '^[a-z0-9]' $(LOCK) | sed 's/ .*//' | sort) \
		<(.venv-latest/bin/pip freeze --exclude-editable | tr 'A-Z_' 'a-z-' | sort) || true
	.venv-latest/bin/python -m pytest -n 2 --dist loadgroup tests

# Floors check, never part of `make test`: every direct dependency at the lowest version pyproject.toml
# allows (torch and torchvision stay at the lock's: their older builds are not on the registries' CPU path).
test-oldest:
	rm -rf .venv-oldest
	$(PYTHON) -m venv .venv-oldest
	$(PYTHON) -c "import re, tomllib; d = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
		reqs = d['dependencies'] + d['optional-dependencies']['dev']; \
		print('\n'.join(re.sub(r'>=([^,]+).*', r'==\1', r) for r in reqs if '>=' in r and not r.startswith('torch')))" > .venv-oldest/floors.txt
	grep -E '^torch(vision)?==' $(LOCK) | sed 's/ .*//' >> .venv-oldest/floors.txt
	.venv-oldest/bin/pip install --quiet --prefer-binary -c .venv-oldest/floors.txt -e '.[dev]'
	.venv-oldest/bin/python -m pytest -n 2 --dist loadgroup tests

# The demo regenerates its own competition, so its 3 folds replace any earlier ones (--force).
demo: $(STAMP)
	$(BIN)/kit demo-data --out=data/demo
	$(BIN)/kit folds data/demo --n=3 --force
	$(BIN)/accelerate launch --config_file accelerate_config.yaml experiments/exp001_baseline.py --fold=all --epochs=5 --resume=never
	$(BIN)/kit submit exp001_baseline -m "demo baseline, 3 folds"
	$(BIN)/accelerate launch --config_file accelerate_config.yaml experiments/exp002_focal_cutmix.py --fold=all --epochs=8 --resume=never
	$(BIN)/kit submit exp002_focal_cutmix -m "demo test-like augmentation, 3 folds"
	$(BIN)/kit predict exp002_focal_cutmix --tta=flips
	$(BIN)/kit submit exp002_focal_cutmix -m "demo test-like augmentation, 3 folds, TTA flips"
	$(BIN)/kit ensemble exp001_baseline exp002_focal_cutmix --method=soft --name=ens_demo
	$(BIN)/kit submit ens_demo -m "demo soft ensemble of exp001 and exp002 (TTA)"
	$(BIN)/kit ledger --limit=4

demo-seg: $(STAMP)
	$(BIN)/kit demo-data --task=segmentation --out=data/demo_seg
	$(BIN)/accelerate launch --config_file accelerate_config.yaml experiments/exp_seg001_unet.py --fold=0 --resume=never
	$(BIN)/kit submit exp_seg001_unet -m "demo segmentation, fold 0"
	$(BIN)/kit ledger --comp=demo_seg

demo-multilabel: $(STAMP)
	$(BIN)/kit demo-data --task=multilabel --out=data/demo_multilabel
	$(BIN)/kit folds data/demo_multilabel --scheme=multilabel --n=3 --force
	$(BIN)/accelerate launch --config_file accelerate_config.yaml experiments/exp005_multilabel.py --fold=all --resume=never
	$(BIN)/kit submit exp005_multilabel -m "demo multilabel, 3 folds"
	$(BIN)/kit predict exp005_multilabel --tta=flips
	$(BIN)/kit submit exp005_multilabel -m "demo multilabel, 3 folds, TTA flips"
	$(BIN)/kit ledger --comp=demo_multilabel

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup tests

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_all

# 20 SIGKILLs at random moments, each run resumed; every round must end bitwise equal to an uninterrupted run
soak: $(STAMP)
	$(BIN)/python -m benchmarks.soak --kills=20

# MSG reaches kit through the environment, unexpanded ($(value)): quotes, $(...) and backticks stay text
submit: export KIT_MSG = $(value MSG)
submit: $(STAMP)
	$(BIN)/kit submit $(EXP) -m "$$KIT_MSG"

clean:
	rm -rf runs submissions/*.csv

# Every target sets itself up: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXP ?= exp001_baseline
MSG ?=
export WANDB_MODE ?= offline
export PYTHONHASHSEED := 0

.PHONY: install demo demo-seg test submit bench soak clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

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

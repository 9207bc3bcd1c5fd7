# Every target sets itself up: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXP ?= exp001_baseline
MSG ?=
export WANDB_MODE ?= offline
export PYTHONHASHSEED := 0

.PHONY: install demo demo-seg test submit clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/kit demo-data --out=data/demo
	$(BIN)/accelerate launch --config_file accelerate_config.yaml experiments/exp001_baseline.py --fold=0
	$(BIN)/kit submit exp001_baseline -m "demo baseline, fold 0"
	$(BIN)/kit ledger

demo-seg: $(STAMP)
	$(BIN)/kit demo-data --task=segmentation --out=data/demo_seg
	$(BIN)/accelerate launch --config_file accelerate_config.yaml experiments/exp_seg001_unet.py --fold=0
	$(BIN)/kit submit exp_seg001_unet -m "demo segmentation, fold 0"
	$(BIN)/kit ledger --comp=demo_seg

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup tests

submit: $(STAMP)
	$(BIN)/kit submit $(EXP) -m "$(MSG)"

clean:
	rm -rf runs submissions/*.csv

# Every target sets itself up: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXP ?= exp001_baseline
MSG ?=
export WANDB_MODE ?= offline
export PYTHONHASHSEED := 0

.PHONY: install demo test submit clean soak

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/kit demo-data --out=data/demo
	$(BIN)/accelerate launch --config_file accelerate_config.yaml experiments/exp001_baseline.py --fold=0 --resume=never
	$(BIN)/kit submit exp001_baseline -m "demo baseline, fold 0"
	$(BIN)/kit ledger

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup tests

# 20 SIGKILLs at random moments, each run resumed; every round must end bitwise equal to an uninterrupted run
soak: $(STAMP)
	$(BIN)/python -m benchmarks.soak --kills=20

submit: $(STAMP)
	$(BIN)/kit submit $(EXP) -m "$(MSG)"

clean:
	rm -rf runs submissions/*.csv

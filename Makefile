# Two entry points for a fresh machine: `make study` (the default study) and `make test` (every test).
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: install study test report clean-cache

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

install: $(VENV)/.installed

# The default study on the embedded llava-small model (trains and caches the teacher on first run).
study: install
	$(PY) -m studylib.cli study

test: install
	$(PY) -m pytest -q tests

report: install
	$(PY) -m studylib.cli report

clean-cache:
	rm -rf data/cache data/checkpoints reports/runs

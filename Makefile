# Two commands do everything on a fresh machine: `make train` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test test-fast train lint clean

setup: $(STAMP)

# Reinstalls only when the package metadata changed, so a second `make setup` takes no time.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,bench]'
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m 'not slow'

# The main job on the embedded default (scikit-image's sample photos), a few minutes on a
# CPU. Run again, it resumes the same run folder (and, when finished, just reports).
train: setup
	$(PY) -m distgan.train --config configs/default.yaml --local \
	  $(if $(wildcard runs/default/checkpoints/ckpt-*),--resume,)

lint: setup
	$(PY) -m ruff check distgan tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info

# `make train` / `make test` on a fresh machine: each creates .venv and installs first: the
# pinned requirements, then the package itself, editable (`pip install -e .`), so that
# `import npvae_tf` and the npvae-* commands work from any folder with this .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install train test bench clean

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# The recommended scheme, neighbour (README "Which scheme to use"); the paper's npVAE is
# `train.py --z_dim 500`.
train: $(STAMP)
	$(PY) train.py --scheme neighbour --z_dim 500

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile

bench: $(STAMP)
	$(PY) benchmarks/bench_train.py

clean:
	rm -rf $(VENV)

# Two entry points (README): `make demo` runs the main job on synthetic data, `make test` runs the tests.
# Both create or reuse .venv and install the pinned dependencies (requirements.lock) first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO   ?= demo_out
JOBS   ?= 2

.PHONY: demo test venv bench clean

venv: $(STAMP)

# torch/torchvision first and alone: pip takes these two from the machine's local wheel cache.
$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $$(grep -E '^(torch|torchvision)==' requirements.lock)
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# synthetic raw data -> audited store (later issues add training and the comparison)
demo: $(STAMP)
	$(VENV)/bin/spikeprep synth $(DEMO)/raw --preset demo --overwrite --workers $(JOBS)
	$(VENV)/bin/spikeprep ingest $(DEMO)/raw --out $(DEMO)/store --k 32 --crop 128 --workers $(JOBS) \
		--log-dir $(DEMO)/logs
	$(VENV)/bin/spikeprep audit $(DEMO)/store --crop 128 --overlays 6
	@echo "demo done: store in $(DEMO)/store, overlays in $(DEMO)/store/audit/overlays, align log in $(DEMO)/logs"

test: $(STAMP)
	$(PY) -m pytest -n $(JOBS) -q

bench: $(STAMP)
	$(PY) benchmarks/voxelizer.py

clean:
	rm -rf $(DEMO) outputs .pytest_cache .hypothesis

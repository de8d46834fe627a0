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

# The whole product on synthetic data (README "Set up and run"): synth -> ingest -> audit -> baselines -> train three
# arms (tiny VRT, $(DEMO_STEPS) steps each, side by side with one thread each: the spike arm with the shipped
# fusion, the spike arm with the original's literal fusion, plain VRT) -> test on the val split -> compare.
# Without VGG19 weights in torch's cache the arms train without the perceptual term (said once, and
# recorded in each run log); LPIPS reads "not computed" in every report when AlexNet's weights are absent.
DEMO_STEPS ?= 150
SP         := $(VENV)/bin/spikeprep
DEMO_CFG   := $(DEMO)/config.yaml
DEMO_LIT   := $(DEMO)/config_literal.yaml
DEMO_TRAIN  = train --max-steps $(DEMO_STEPS) --val-every $(DEMO_STEPS) --visual-every $(DEMO_STEPS) \
              --workers 0 --no-progress $$vgg

demo: $(STAMP)
	@set -e; start=$$(date +%s); mkdir -p $(DEMO)/logs; rm -rf $(DEMO)/outputs; \
	sed -e 's#demo_out/#$(DEMO)/#' configs/deblur/demo_tiny.yaml > $(DEMO_CFG); \
	echo "== 1/7 synth: 4 + 1 sequences x 12 frames, 128x192"; \
	$(SP) synth $(DEMO)/raw --preset demo --height 128 --width 192 --train-seqs 4 --overwrite --workers $(JOBS) \
		--no-progress; \
	echo "== 2/7 ingest (K=16; DATA.NORM into $(DEMO_CFG))"; \
	$(SP) ingest $(DEMO)/raw --out $(DEMO)/store --config $(DEMO_CFG) --write-config $(DEMO_CFG) \
		--workers $(JOBS) --no-progress; \
	sed -e 's#^\(    TYPE:\).*#\1 "TemporalCrossAttn"#' $(DEMO_CFG) > $(DEMO_LIT); \
	echo "== 3/7 audit"; \
	$(SP) audit $(DEMO)/store --crop 64 --overlays 6; \
	echo "== 4/7 baselines: what the spikes say without training (the floor the spike arm must clear)"; \
	$(SP) baselines $(DEMO)/store --config $(DEMO_CFG) --no-progress; \
	vgg=$$($(PY) -c "from model.losses.vgg_perceptual import vgg19_weights_path as p; print('' if p().is_file() else '--no-vgg')"); \
	if [ -n "$$vgg" ]; then echo "note: no VGG19 weights in torch's cache: every arm trains without the perceptual term (--no-vgg)"; fi; \
	echo "== 5/7 train three arms, $(DEMO_STEPS) steps each (logs: $(DEMO)/logs/train_{spike,literal,base}.log)"; \
	OMP_NUM_THREADS=1 $(SP) $(DEMO_TRAIN) --config $(DEMO_CFG) --exp spike > $(DEMO)/logs/train_spike.log 2>&1 & pid=$$!; \
	OMP_NUM_THREADS=1 $(SP) $(DEMO_TRAIN) --config $(DEMO_LIT) --exp literal > $(DEMO)/logs/train_literal.log 2>&1 & \
	lit=$$!; \
	OMP_NUM_THREADS=1 $(SP) $(DEMO_TRAIN) --config $(DEMO_CFG) --exp base --no-spike > $(DEMO)/logs/train_base.log 2>&1 \
		|| { cat $(DEMO)/logs/train_base.log; exit 1; }; \
	wait $$pid || { cat $(DEMO)/logs/train_spike.log; exit 1; }; \
	wait $$lit || { cat $(DEMO)/logs/train_literal.log; exit 1; }; \
	grep -h "val step\|sensitivity probes\|stopped" $(DEMO)/logs/train_spike.log $(DEMO)/logs/train_literal.log $(DEMO)/logs/train_base.log; \
	echo "== 6/7 test on the val split"; \
	for arm in spike literal base; do \
		$(SP) test --ckpt $(DEMO)/outputs/ckpts/$$arm/last.pth --store $(DEMO)/store --output $(DEMO)/outputs/test/$$arm \
			--no-progress; \
	done; \
	echo "== 7/7 compare: each spike arm against the base arm"; \
	for arm in spike literal; do \
		$(SP) compare $$arm base --outputs $(DEMO)/outputs --crop-size 64 --baselines $(DEMO)/store/baselines/val.json \
			|| [ $$? -eq 1 ]; \
	done; \
	echo; echo "demo done in $$(( $$(date +%s) - start )) s. Artefacts:"; \
	echo "  store + manifest + stats   $(DEMO)/store (audit overlays in $(DEMO)/store/audit/overlays, align log in $(DEMO)/store/logs)"; \
	echo "  baselines                  $(DEMO)/store/baselines/val.json"; \
	echo "  checkpoints                $(DEMO)/outputs/ckpts/{spike,literal,base}/{best,last}.pth"; \
	echo "  validation metrics         $(DEMO)/outputs/metrics/val_*.json (with the sensitivity probes), test_*.json, compare_*.{json,png}"; \
	echo "  visuals                    $(DEMO)/outputs/visuals/{spike,literal,base}/step_*/ (triptychs, {seq}/{frame}_{blur,recon,sharp}.png)"; \
	echo "  test outputs               $(DEMO)/outputs/test/{spike,literal,base}/"; \
	echo "  logs                       $(DEMO)/outputs/logs/ (TensorBoard, run_*.txt)"

test: $(STAMP)
	$(PY) -m pytest -n $(JOBS) -q

bench: $(STAMP)
	$(PY) benchmarks/voxelizer.py

clean:
	rm -rf $(DEMO) outputs .pytest_cache .hypothesis

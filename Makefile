# varlib: the two commands a fresh machine needs are `make test` and `make all` (see README).
SHELL := /bin/bash
PYTHON_BOOT ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PARAMS ?= params/default.yaml
RUN ?= $(basename $(notdir $(PARAMS)))
# results/<run>/, or $VARLIB_RESULTS_DIR/<run>/ when that is set (varlib.study reads the same variable)
RESULTS := $(or $(VARLIB_RESULTS_DIR),results)/$(RUN)
# the data directory: ../shared/data when it exists (development machines and CI)
SHARED_DATA := $(abspath ../shared/data)
ifeq ($(origin VARLIB_DATA_DIR), undefined)
  ifneq ($(wildcard $(SHARED_DATA)),)
    export VARLIB_DATA_DIR := $(SHARED_DATA)
  endif
endif

.PHONY: results-doc all test venv prior prior-faces diffusion-prior-faces prior-report-faces prior-gpu prior-gpu-carry prior-gpu-export prior-report-gpu prior-levers prior-ablation diffusion-prior diffusion-report lab clean-results report figures operators-figure prior-report bench
.DEFAULT_GOAL := help

help:
	@echo "make test             create/refresh .venv and run the tests"
	@echo "make all              regenerate every figure and table (PARAMS=$(PARAMS)): notebooks + HTML"
	@echo "make smoke            the whole study on params/smoke.yaml (2-3 min, results/smoke)"
	@echo "make benchmark | ablation-injection | ablation-guidance | runtime | report-notebook"
	@echo "                      one study notebook (PARAMS=...); make report: HTML in results/<run>/html"
	@echo "make screenshots      PNG screenshots of the HTML reports (headless chromium)"
	@echo "make prior            retrain the embedded tiny64 prior from scratch (2-core CPU, ~2.4 h)"
	@echo "make prior-faces     the face prior faces64 from tiny64 on CelebA train faces (1 CPU thread, ~1.5 h)"
	@echo "make diffusion-prior-faces  faces64-diffusion from tiny64-diffusion on them (1 CPU thread, ~1.1 h)"
	@echo "make prior-gpu        tiny64-gpu: tiny64's encoder + a decoder and a transformer trained on a CUDA device (~10 min)"
	@echo "make prior-gpu-carry  what one device call carries for it (63 MB; scripts/prior_gpu_device.sh runs there)"
	@echo "make prior-levers     tokenizer capacity levers: tiny64's tokenizer continued 4 ways, scored (2-core CPU, ~1.2 h)"
	@echo "make prior-ablation   tokenizer training choices: 11 short runs from scratch, scored (2-core CPU, ~1.6 h)"
	@echo "make diffusion-prior  retrain the embedded diffusion prior (2-core CPU, ~1 h; DIFFUSION_STEPS=...)"
	@echo "make diffusion-report its samples and held-out denoising figures (results/prior/diffusion_*)"
	@echo "make figures          operators figure + both priors' figures (results/figures, results/prior)"
	@echo "make results-doc      docs/results.md and the README results block from results/*/tables"
	@echo "make lab              JupyterLab on the project"
	@echo "make clean-results    delete results/$(RUN)"

# -- environment -----------------------------------------------------------------------------------
$(VENV)/.stamp: pyproject.toml requirements.txt
	test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: deepinv needs torchvision, which imports only beside torch 2.14.1 here
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	# the Jupyter kernel papermill runs the notebooks in: this venv's python, named python3
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (varlib)"
	touch $@

venv: $(VENV)/.stamp

# -- tests ------------------------------------------------------------------------------------------
test: $(VENV)/.stamp
	$(PY) -m pytest -q

# -- the embedded prior -----------------------------------------------------------------------------
prior: $(VENV)/.stamp
	$(PY) -m varlib.training all --out runs/tiny64

# the face priors (need $(VARLIB_DATA_DIR)/celeba10k.tar): faces64 continues tiny64's tokenizer and transformer on
# the CelebA training faces (RECIPES["faces64"]); faces64-diffusion continues tiny64-diffusion on them. Each
# is one thread, so the two run side by side on a 2-core CPU: `make -j2 prior-faces diffusion-prior-faces`.
prior-faces: $(VENV)/.stamp
	$(PY) -m varlib.training all --config faces64 --out runs/faces64 --threads 1

# figures of the face priors (results/prior/faces64): reconstructions, coarse-to-fine, curves, NLL, samples of both
prior-report-faces: $(VENV)/.stamp
	$(PY) -m varlib.prior_report --run runs/faces64 --prior faces64 --diffusion-prior faces64-diffusion \
	  --out results/prior/faces64

FACES_DIFFUSION_STEPS ?= 1000
diffusion-prior-faces: $(VENV)/.stamp
	$(PY) -m varlib.training diffusion --config faces64-diffusion --out runs/faces64-diffusion \
	  --steps $(FACES_DIFFUSION_STEPS) --warmup 100 --init-weights tiny64-diffusion --threads 1 --export

# the GPU recipe: tiny64's tokenizer side (runs/tiny64, from `make prior`) with a transformer trained on its
# token maps and tiny64's shipped decoder continued on the frozen token maps of 10,000 training images
# (GPU_DECODER_DATA; encoder, codebook and tokens unchanged), side by side on one CUDA device (6.5 min on an
# H200); then evaluated on the CPU and exported to varlib/weights/tiny64-gpu. The same three steps serve a
# device machine without the data, which a call reaches with at most 64 MiB: `make prior-gpu-carry` here
# writes GPU_CARRY (tiny64's token maps, its shipped tokenizer, the decoder's images as one tar: 63 MB), the
# call carries it and runs `bash scripts/prior_gpu_device.sh`; copy the two folders it returns into runs/,
# then `make prior-gpu-export` here.
GPU_RUN ?= runs/tiny64-gpu
GPU_DECODER_RUN ?= runs/tiny64-gpu-decoder
GPU_DECODER_DATA ?= --every 6 --limit 10000
GPU_CARRY ?= runs/gpu
prior-gpu: prior-gpu-carry
	CARRY=$(GPU_CARRY) OUT=runs PY=$(PY) bash scripts/prior_gpu_device.sh
	$(MAKE) prior-gpu-export

prior-gpu-carry: $(VENV)/.stamp
	$(PY) -m varlib.training pack --out runs/tiny64 --dest $(GPU_CARRY)
	rm -f $(GPU_CARRY)/tokenizer_ckpt.pt $(GPU_CARRY)/decoder_ckpt.pt
	$(PY) -m varlib.training pack --init-weights tiny64 --out $(GPU_CARRY)-tokenizer --dest $(GPU_CARRY)/dec
	$(PY) -m varlib.training subset $(GPU_DECODER_DATA) --dest $(GPU_CARRY)/data

prior-gpu-export: $(VENV)/.stamp
	cp $(GPU_DECODER_RUN)/decoder_ckpt.pt $(GPU_RUN)/decoder_ckpt.pt
	$(PY) -m varlib.training evaluate --config tiny64-gpu --from runs/tiny64 --out $(GPU_RUN)
	$(PY) -m varlib.training export --config tiny64-gpu --out $(GPU_RUN)

# its figures (results/prior/tiny64-gpu/; the training curves need $(GPU_RUN) from the GPU machine)
prior-report-gpu: $(VENV)/.stamp
	$(PY) -m varlib.prior_report --prior tiny64-gpu --run $(GPU_RUN) --decoder-run $(GPU_DECODER_RUN) \
		--out results/prior/tiny64-gpu

# tokenizer capacity levers (README, "Tokenizer capacity levers"): tiny64's whole tokenizer continued
# LEVER_STEPS more steps on one thread each way (about 25-35 min per run, two at a time on 2 cores),
# then scored side by side on 500 held-out images (results/prior/tokenizer_levers.*)
LEVER_RUNS ?= runs/levers
LEVER_STEPS ?= 1000
LEVER_TRAIN = OMP_NUM_THREADS=1 $(PY) -m varlib.training tokenizer --init-weights tiny64 --steps $(LEVER_STEPS) \
	--lr 3e-4 --threads 1 --crop 0
prior-levers: $(VENV)/.stamp
	$(LEVER_TRAIN) --out $(LEVER_RUNS)/ctrl & first=$$!; \
	$(LEVER_TRAIN) --out $(LEVER_RUNS)/rep16 --patch-nums 1,2,4,8,16,16 && wait $$first
	$(LEVER_TRAIN) --out $(LEVER_RUNS)/v4096 --vocab-size 4096 & first=$$!; \
	$(LEVER_TRAIN) --out $(LEVER_RUNS)/v4096_rep16 --patch-nums 1,2,4,8,16,16 --vocab-size 4096 && wait $$first
	$(PY) -m varlib.prior_report --out results/prior --levers $(LEVER_RUNS)/ctrl $(LEVER_RUNS)/rep16 \
		$(LEVER_RUNS)/v4096 $(LEVER_RUNS)/v4096_rep16

# tokenizer training choices (README, "Tokenizer training choices"): short runs from scratch on train shard 0,
# ABLATION_STEPS steps of 32 on one thread each, two at a time on 2 cores (about 12 min per run), on whole
# images (--crop 0) unless a run names its crops; the crop runs get the reference run's wall time instead of
# its step count; scored on 500 held-out images
ABLATION_RUNS ?= runs/ablate
ABLATION_STEPS ?= 600
ABLATION_TRAIN = OMP_NUM_THREADS=1 $(PY) -m varlib.training tokenizer --steps $(ABLATION_STEPS) --shards 0 --threads 1 \
	--crop 0
ABLATION_NAMES = base base_seed1 znorm cvae8 cvae32 l1 l2 const crop32 crop32f90 crop16
# the crop runs train for the reference run's wall time (1750 steps of crop32f90 take about as long)
ABLATION_BASE_MIN = $$($(PY) -c "import torch; print(torch.load('$(ABLATION_RUNS)/base/tokenizer_ckpt.pt', \
	weights_only=False)['elapsed'] / 60)")
prior-ablation: $(VENV)/.stamp
	$(ABLATION_TRAIN) --out $(ABLATION_RUNS)/base & first=$$!; \
	$(ABLATION_TRAIN) --out $(ABLATION_RUNS)/znorm --znorm && wait $$first
	$(ABLATION_TRAIN) --out $(ABLATION_RUNS)/cvae8 --cvae 8 & first=$$!; \
	$(ABLATION_TRAIN) --out $(ABLATION_RUNS)/l1 --loss l1 && wait $$first
	$(ABLATION_TRAIN) --out $(ABLATION_RUNS)/cvae32 --cvae 32 & first=$$!; \
	$(ABLATION_TRAIN) --out $(ABLATION_RUNS)/const --lr-schedule constant && wait $$first
	$(ABLATION_TRAIN) --out $(ABLATION_RUNS)/l2 --loss l2 & first=$$!; \
	$(ABLATION_TRAIN) --out $(ABLATION_RUNS)/crop32 --crop 32 --steps 100000 --minutes $(ABLATION_BASE_MIN) && wait $$first
	$(ABLATION_TRAIN) --out $(ABLATION_RUNS)/base_seed1 --seed 1 & first=$$!; \
	$(ABLATION_TRAIN) --out $(ABLATION_RUNS)/crop32f90 --crop 32 --crop-fraction 0.9 --steps 1750 && wait $$first
	$(ABLATION_TRAIN) --out $(ABLATION_RUNS)/crop16 --crop 16 --steps 100000 --minutes $(ABLATION_BASE_MIN)
	$(PY) -m varlib.prior_report --out results/prior --ablation $(addprefix $(ABLATION_RUNS)/,$(ABLATION_NAMES))

# the embedded diffusion prior for dps / diffpir (resumable; the shipped weights: see their model card)
DIFFUSION_STEPS ?= 2600
diffusion-prior: $(VENV)/.stamp
	$(PY) -m varlib.training diffusion --out runs/diffusion64 --steps $(DIFFUSION_STEPS) --threads 2 --export

diffusion-report: $(VENV)/.stamp
	OMP_NUM_THREADS=1 $(PY) -m varlib.diffusion.report --out results/prior

# -- figures outside the notebooks -------------------------------------------------------------------
operators-figure: $(VENV)/.stamp
	$(PY) -m varlib.study.figures operators --out results/figures/operators.png

# the embedded priors' figures in results/prior/ (need the Tiny ImageNet tars in $VARLIB_DATA_DIR)
# The schedule trade-off is redrawn from its committed table and the NLL of the transformers trained
# on each schedule for the same wall time (README, "The schedule trade-off"); --tradeoff re-measures.
# Both runs are 30-min transformers; the shipped one was later trained longer (model card).
# --ceiling: the tokenizer's token maps against its unquantised latent (results/prior/tokenizer_ceiling.md).
TRADEOFF_RUNS = 1,2,4,8,16=results/prior/schedule_runs/1-2-4-8-16/metrics.json \
	1,2,4,6,8,12,16=results/prior/schedule_runs/1-2-4-6-8-12-16/metrics.json
prior-report: $(VENV)/.stamp
	$(PY) -m varlib.prior_report --out results/prior --tradeoff-from-table --trained $(TRADEOFF_RUNS)
	$(PY) -m varlib.prior_report --out results/prior --ceiling

figures: operators-figure prior-report diffusion-report

# docs/results.md and the README's results block, from the committed results/*/tables
results-doc: $(VENV)/.stamp
	$(PY) -m varlib.study.results_doc

# the benchmark alone, without the notebooks
bench: $(VENV)/.stamp
	$(PY) -m varlib.study --params $(PARAMS)

lab: $(VENV)/.stamp
	$(PY) -m jupyter lab --notebook-dir=.

clean-results:
	rm -rf $(RESULTS)

# -- the study (notebooks run by papermill) ----------------------------------------------------------
include notebooks.mk

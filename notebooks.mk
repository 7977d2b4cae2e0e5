# The study: the notebooks in notebooks/ executed by papermill for $(PARAMS), then converted to HTML.
#
#   make all                          every notebook for PARAMS (default params/default.yaml), then `report`
#   make benchmark | ablation-injection | ablation-guidance | runtime | report-notebook
#                                     one notebook (and what it needs)
#   make report                       HTML of every executed notebook in $(RESULTS)/html/
#   make smoke                        `all` with params/smoke.yaml (results/smoke/)
#   make all PARAMS=... LIMIT=N       the same on the first N images only
#   make all PARAMS=... SHARDS=N      the benchmark first as N submitit jobs (SLURM when available,
#                                     else local processes; SHARD_FLAGS=... adds varlib bench options,
#                                     e.g. "--threads-per-shard 1"), then the notebooks (docs/study.md)
#   make screenshots                  PNG screenshots of the HTML reports (headless chromium)
#
# An executed notebook $(RESULTS)/notebooks/NN_x.ipynb depends on its source notebook, the params
# file, the varlib sources and the embedded weights, so it is re-executed only when one of those
# changed. papermill writes to build/papermill/<run>/ first; the notebook is moved into results/
# only when every cell succeeded. A failing cell stops make with the cell's traceback on the
# terminal; the partial notebook stays in build/papermill/<run>/ for inspection. Finished benchmark
# cases are cached (results/<run>/cache/), so running make again resumes the computation.
# Progress: a header line per notebook, then papermill's --log-output streams each cell's output as
# it comes, e.g. the runner's `[bench <run>] 37/240 cases  task=sr4  method=var  (12.3 s)` lines.
# NB_LOG_FILTER keeps off the terminal what would bury them (the notebooks keep everything): the
# blank line papermill adds after each output, its begin/end marker of every cell, and the
# placeholder text of figures, images and Markdown; papermill's own progress bar is off.

# LIMIT=N: every notebook on the first N images of the params' set (and of its ablation set)
LIMIT ?=
NB_LIMIT := $(if $(LIMIT),-p limit $(LIMIT))
NOTEBOOKS := 01_benchmark 02_ablation_injection 03_ablation_guidance 04_runtime 05_report
NB_OUT := $(RESULTS)/notebooks
NB_HTML := $(RESULTS)/html
NB_TMP := build/papermill/$(RUN)
STUDY_DEPS := $(PARAMS) $(wildcard varlib/*.py varlib/*/*.py varlib/*.json varlib/*/*.json varlib/weights/*/*)
KERNEL_SPEC := $(VENV)/share/jupyter/kernels/python3/kernel.json
PAPERMILL := MPLBACKEND=Agg PYTHONUNBUFFERED=1 $(PY) -m papermill --kernel python3 --cwd $(CURDIR) \
  --log-output --no-progress-bar
NB_LOG_FILTER := grep --line-buffered -v -E '^$$|^(Executing|Ending) Cell|^<(Figure size|IPython\.core\.display\.)'
NBCONVERT := $(PY) -m jupyter nbconvert --log-level ERROR

# SHARDS=N: the benchmark's cases as N shard jobs before notebook 01, which then finds them all cached
SHARDS ?=
SHARD_FLAGS ?=
sharded-benchmark: | $(VENV)/.stamp
	$(if $(SHARDS),$(PY) -m varlib.study --params $(PARAMS) --run $(RUN) --shards $(SHARDS) \
	  $(if $(LIMIT),--limit $(LIMIT)) $(SHARD_FLAGS),@true)
$(NB_OUT)/01_benchmark.ipynb: | sharded-benchmark

.PHONY: sharded-benchmark smoke benchmark ablation-injection ablation-guidance runtime report-notebook notebooks screenshots

all: report

notebooks: $(NOTEBOOKS:%=$(NB_OUT)/%.ipynb)

benchmark: $(NB_OUT)/01_benchmark.ipynb
ablation-injection: $(NB_OUT)/02_ablation_injection.ipynb
ablation-guidance: $(NB_OUT)/03_ablation_guidance.ipynb
runtime: $(NB_OUT)/04_runtime.ipynb
report-notebook: $(NB_OUT)/05_report.ipynb

report: $(NOTEBOOKS:%=$(NB_HTML)/%.html)
	@echo "HTML reports in $(NB_HTML)/ (start with 05_report.html)"

smoke:
	$(MAKE) all PARAMS=params/smoke.yaml

# the kernel papermill starts: the venv's python3 (ipykernel ships it; registered again if missing)
$(KERNEL_SPEC): | $(VENV)/.stamp
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (varlib)"

# runtime (04) reads the benchmark's cases; the report (05) reads every other notebook's output
$(NB_OUT)/04_runtime.ipynb: $(NB_OUT)/01_benchmark.ipynb
$(NB_OUT)/05_report.ipynb: $(patsubst %,$(NB_OUT)/%.ipynb,$(filter-out 05_report,$(NOTEBOOKS)))
$(NOTEBOOKS:%=$(NB_OUT)/%.ipynb): $(NB_OUT)/%.ipynb: notebooks/%.ipynb $(STUDY_DEPS) | $(VENV)/.stamp $(KERNEL_SPEC)
	@mkdir -p $(NB_TMP)
	@rm -f $(NB_TMP)/$*.ipynb
	@echo "== $* ($(PARAMS) -> $(RESULTS))"
	@set -o pipefail; $(PAPERMILL) $< $(NB_TMP)/$*.ipynb -p params_file $(PARAMS) -p run $(RUN) $(NB_LIMIT) 2>&1 | $(NB_LOG_FILTER) \
	  || { echo "!! notebook $* failed (traceback above); partial notebook: $(NB_TMP)/$*.ipynb" >&2; exit 1; }
	@mkdir -p $(@D) && mv -f $(NB_TMP)/$*.ipynb $@

# HTML: the report without its code cells, the others with their (short) code
$(NB_HTML)/05_report.html: NBCONVERT_FLAGS := --no-input
$(NOTEBOOKS:%=$(NB_HTML)/%.html): $(NB_HTML)/%.html: $(NB_OUT)/%.ipynb
	@mkdir -p $(NB_TMP) $(@D)
	$(NBCONVERT) --to html $(NBCONVERT_FLAGS) --output-dir $(NB_TMP) --output $*.html $<
	@mv -f $(NB_TMP)/$*.html $@

screenshots: report
	$(PY) scripts/screenshot.py $(NB_HTML) --out $(RESULTS)/screenshots

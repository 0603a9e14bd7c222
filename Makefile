# Every target runs inside .venv, made by `make setup` from constraints.txt.
VENV      := .venv
BIN       := $(VENV)/bin
DATA_DIR  ?= ../shared/data/mnist
OUTPUT_DIR ?= outputs
RUN_ARGS  ?=

# Python 3.10 is what TFX 1.16 needs: PATH first, then pyenv's versions. Each
# candidate must really run (a pyenv shim on PATH may point at no version).
PYTHON310 := $(shell for p in $$(command -v python3.10) $$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.10.*/bin/python3.10 2>/dev/null | sort -V -r); do \
	$$p -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null && { echo $$p; break; }; done)

.PHONY: setup run test bench-train bench-serve bench-data bench-score bench-iwae bench-continuous bench-drift bench-run image compile-kubeflow clean

setup: $(BIN)/vaetfx

$(BIN)/vaetfx: setup.py constraints.txt
	@test -n "$(PYTHON310)" || { echo "Python 3.10 not found on PATH or under pyenv; install it (pyenv install 3.10)"; exit 1; }
	@echo "Using $(PYTHON310)"
	test -x $(BIN)/python || $(PYTHON310) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade 'pip<25' wheel
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	@touch $@

run: setup
	$(BIN)/vaetfx run --data-dir $(DATA_DIR) --output-dir $(OUTPUT_DIR) $(RUN_ARGS)

# One worker per CPU; each test file stays on one worker, so its module fixtures (a whole
# pipeline run, the Kubeflow tasks on the emulated bucket) are built once; the slowest files
# first, in the order tests/conftest.py sets (not xdist's, by number of tests).
test: setup
	$(BIN)/python -m pytest tests -n auto --dist loadfile --no-loadscope-reorder --durations=15

clean:
	rm -rf $(OUTPUT_DIR) .pytest_cache

# Kubeflow: the image every task runs in, and the pipeline compiled for it.
# It cannot be built on machines without a Docker engine; push it where the
# cluster pulls from (docker push $(IMAGE)) before compiling.
IMAGE            ?= vaetfx:0.1.0
PIPELINE_ROOT    ?=
SERVING_DIR      ?=
DATA_ROOT        ?=
KUBEFLOW_ARGS    ?=

image:
	docker build -t $(IMAGE) .

compile-kubeflow: setup
	@test -n "$(PIPELINE_ROOT)" -a -n "$(SERVING_DIR)" -a -n "$(DATA_ROOT)" || { \
	  echo "Set PIPELINE_ROOT, SERVING_DIR and DATA_ROOT to URIs the cluster reaches, e.g. gs://bucket/..."; exit 1; }
	$(BIN)/vaetfx compile-kubeflow --image $(IMAGE) --pipeline-root $(PIPELINE_ROOT) \
	  --serving-dir $(SERVING_DIR) --data-root $(DATA_ROOT) $(KUBEFLOW_ARGS)

# Serving benchmark (not a test): `vaetfx serve` against the same model called
# in-process, on the newest version the pipeline pushed.
SERVE_MODEL_DIR ?= $(OUTPUT_DIR)/serving/vae

bench-serve: setup
	$(BIN)/python bench/serve_bench.py --model-dir $(SERVE_MODEL_DIR)

# Trainer benchmark (not a test): the Trainer's VAE with its default hyperparameters
# against the seed tutorial's own training loop, side by side on the real MNIST.
# BENCH_TRAIN_ARGS e.g. '--tutorial-epochs 3' or '--hparam batch_size=256'.
BENCH_TRAIN_ARGS ?=

bench-train: setup
	$(BIN)/python bench/train_bench.py --data-dir $(DATA_DIR) $(BENCH_TRAIN_ARGS)

# Data-half benchmark (not a test): the product's ExampleGen, StatisticsGen, SchemaGen,
# ExampleValidator and Transform against stock TFX's on the same MNIST, alternating runs.
# BENCH_DATA_ARGS e.g. '--rounds 5'.
BENCH_DATA_ARGS ?=

bench-data: setup
	$(BIN)/python bench/data_bench.py --data-dir $(DATA_DIR) $(BENCH_DATA_ARGS)

# Continuous-training benchmark (not a test), on real MNIST cut into spans (bench/make_spans.py):
# the data half of a run on a new span with the older span cached against computing both, and a
# retrain on span 2 warm-started from the span-1 model against a cold one, side by side.
# BENCH_CONTINUOUS_ARGS e.g. '--rounds 5'; BENCH_WARM_START_ARGS e.g. '--warm-epochs 2 3'.
BENCH_CONTINUOUS_ARGS ?=
BENCH_WARM_START_ARGS ?=

bench-continuous: setup
	$(BIN)/python bench/continuous_bench.py --data-dir $(DATA_DIR) $(BENCH_CONTINUOUS_ARGS)
	$(BIN)/python bench/warm_start_bench.py --data-dir $(DATA_DIR) $(BENCH_WARM_START_ARGS)

# Drift benchmark (not a test): the drift check's distances on real MNIST, drifted (digits 0-4
# after 5-9, inverted digits) and not (random re-splits), from which --drift-threshold's default
# was chosen. Trains (or finds cached) two 4-epoch models to score with, in DRIFT_MODELS.
DRIFT_MODELS ?= $(OUTPUT_DIR)/drift-bench
BENCH_DRIFT_ARGS ?=

bench-drift: setup
	$(BIN)/vaetfx run --data-dir $(DATA_DIR) --digits 5,6,7,8,9 --epochs 4 --likelihood-examples 0 \
		--output-dir $(DRIFT_MODELS)/digits-5-9
	$(BIN)/vaetfx run --data-dir $(DATA_DIR) --epochs 4 --likelihood-examples 0 \
		--output-dir $(DRIFT_MODELS)/all-digits
	$(BIN)/python bench/drift_bench.py --data-dir $(DATA_DIR) \
		--model-59 $(DRIFT_MODELS)/digits-5-9/serving/vae \
		--model-all $(DRIFT_MODELS)/all-digits/serving/vae $(BENCH_DRIFT_ARGS)

# Batch-scoring benchmark (not a test): the model's from_examples called in-process in batches
# of 256 (the floor) against `vaetfx score` and the pipeline's scorer on the same t10k images,
# alternating, medians, with peak memory and the load average. SCORE_MODEL_DIR: a SavedModel
# or a serving folder. BENCH_SCORE_ARGS e.g. '--rounds 5' or
# '--contenders command,scorer,bulk_inferrer' (TFX's BulkInferrer, as the pipeline ran before).
SCORE_MODEL_DIR ?= $(OUTPUT_DIR)/serving/vae
BENCH_SCORE_ARGS ?=

bench-score: setup
	$(BIN)/python bench/score_bench.py --model-dir $(SCORE_MODEL_DIR) --data-dir $(DATA_DIR) $(BENCH_SCORE_ARGS)

# IWAE-bound benchmark (not a test): the report's held-out log-likelihood (models/iwae.py, 200
# digits at K = 1000) against the decoder alone on as many latents (the floor), in-process,
# alternating, medians, with the load average. IWAE_MODEL_DIR: a SavedModel or a serving folder.
# BENCH_IWAE_ARGS e.g. '--mc-seeds 4' (the bound's Monte Carlo error) or '--floor-batches 500'.
IWAE_MODEL_DIR ?= $(OUTPUT_DIR)/serving/vae
BENCH_IWAE_ARGS ?=

bench-iwae: setup
	$(BIN)/python bench/iwae_bench.py --model-dir $(IWAE_MODEL_DIR) --data-dir $(DATA_DIR) $(BENCH_IWAE_ARGS)

# Whole-run benchmark (not a test): `vaetfx run` on the real MNIST in a fresh output folder,
# cold, with each component's time (ML Metadata), the Trainer's training steps (history.json),
# the time before the first component and after the last, and the fraction of the wall time
# outside the training steps. BENCH_RUN_ARGS e.g. '--rounds 3 -- --epochs 2'.
BENCH_RUN_ARGS ?=

bench-run: setup
	$(BIN)/python bench/run_bench.py --data-dir $(DATA_DIR) $(BENCH_RUN_ARGS)

#!/bin/sh
# Serves the Pusher's output with the real TensorFlow Serving image:
# gRPC on 127.0.0.1:8500 (what `vaetfx query --server` talks to), REST on :8501.
#
#   serving/deploy/docker-run.sh [SERVING_DIR]     default: outputs/serving
#   BATCHING=1 serving/deploy/docker-run.sh ...     batch concurrent requests
#
# With BATCHING=1 the `sample` signature fails (INVALID_ARGUMENT "Batching Run()
# input tensors must have at least one dimension"): TF Serving batches every
# signature, and sample's inputs are scalars.
#
# SERVING_DIR is the Pusher's serving directory, holding vae/<version>/. It is
# mounted read-only: TF Serving only polls it. Publish on 0.0.0.0 instead of
# 127.0.0.1 only behind a network you trust: the API has no authentication.
set -eu
SERVING_DIR=$(realpath "${1:-outputs/serving}")
DEPLOY_DIR=$(dirname "$(realpath "$0")")
IMAGE=${IMAGE:-tensorflow/serving:2.16.1}

set -- --model_config_file=/config/models.config --file_system_poll_wait_seconds=1
if [ "${BATCHING:-0}" = 1 ]; then
  set -- "$@" --enable_batching=true --batching_parameters_file=/config/batching_parameters.txt
fi

exec docker run --rm --init -p 127.0.0.1:8500:8500 -p 127.0.0.1:8501:8501 \
  -v "$SERVING_DIR":/models:ro -v "$DEPLOY_DIR":/config:ro \
  "$IMAGE" "$@"

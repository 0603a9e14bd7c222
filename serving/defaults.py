"""Defaults shared by the server, the client and the CLI, in a module light enough for `--help`.

Importing the server or client imports TensorFlow (seconds); the CLI builds its
parsers from these values without either.
"""
MODEL_NAME = 'vae'
HOST = '127.0.0.1'
PORT = 8500  # TF Serving's gRPC port; 8501 is its REST port.
ADDRESS = f'{HOST}:{PORT}'
TIMEOUT_SECONDS = 10.0
# Both ends raise gRPC's 4 MiB default: 64 reconstructions are 200 KB, 10,000 are 31 MB.
MAX_MESSAGE_BYTES = 64 << 20
POLL_SECONDS = 1.0  # TF Serving's --file_system_poll_wait_seconds.
MAX_LOAD_RETRIES = 5  # TF Serving's --max_num_load_retries.
LOAD_RETRY_SECONDS = 60.0  # TF Serving's --load_retry_interval_micros, 60 s.
SERVER_THREADS = 32
GRACE_SECONDS = 10.0
# Admission limits, priced on the sizes a request declares. 10,000 rows is all of MNIST's
# test set in one request (its reconstructions, 31 MB, fit in one message).
MAX_BATCH_ROWS = 10_000
MAX_DECODED_BYTES = 64 << 20
# Bytes all admitted requests may hold at once (their Price.in_memory): a request at every
# per-request limit fits, for the model `vaetfx run` trains too (latent size 32: 10,000
# reconstructions with their latents and ELBO are 34 MB, held three times, plus 64 MiB of
# inputs: 161.2 MiB, over the 160 it was), and 32 of them at once keep the server under
# 1.5 GB (docs/measurements.md).
MAX_INFLIGHT_BYTES = 192 << 20
# `sample` decodes `count` latents in one model call (its seed fixes the whole draw, so it
# cannot be sliced): 1,000 keep that call's memory near a slice's.
MAX_SAMPLE_COUNT = 1_000
# Rows per Predict the client sends: more images go in several requests (a request of 1,000
# digits is 0.8 MB, its reconstructions 3 MB).
ROWS_PER_REQUEST = 1_000
# Rows per model call: bigger requests run in slices, so a request's memory stops growing here.
SLICE_ROWS = 256
# Batches running at once under `vaetfx serve`'s default batching: with a second (and
# TensorFlow's pools) batches were half as big and the server spent 1.3 to 1.7 times the CPU
# per request; with one thread per pool, no difference beyond the noise (docs/serving.md).
BATCH_THREADS = 1
# TensorFlow's thread pools in `vaetfx serve` (TF Serving's --tensorflow_intra_op_parallelism
# and --tensorflow_inter_op_parallelism; 0 lets TensorFlow choose, one per core). With one of
# each a batch-1 Predict took 0.6 to 1.3 ms less, 0.1 to 0.3 ms over the in-process floor
# against 0.7 to 1.5 ms; a batch of 64 in-process took twice as long (one core instead of
# two), served 1.0 to 1.5 times as long (docs/measurements.md).
INTRA_OP_THREADS = 1
INTER_OP_THREADS = 1

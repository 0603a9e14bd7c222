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
LOAD_ATTEMPTS = 6  # TF Serving's first try plus --max_num_load_retries=5.
SERVER_THREADS = 32
GRACE_SECONDS = 10.0

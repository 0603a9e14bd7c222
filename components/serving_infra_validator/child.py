"""The validation server's entry point in its child process (server_process.CHILD_COMMAND).

Kept free of heavy imports until TF_USE_LEGACY_KERAS is set (TensorFlow reads it
once, at its first import). It starts the server of `vaetfx serve`
(serving/server.py) with its default limits, not the `vaetfx` command line: the
infra validator's code fingerprint (pipeline/code_fingerprint.py) then covers
the server, and components never import the command line above them.
"""
import ctypes
import gc
import os
import signal
import sys
from typing import List

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent_pid: int):
  """Linux sends this process SIGKILL when the validator dies, however it dies (a SIGKILLed
  Kubeflow task included), so no orphaned server keeps a port and memory.

  Set here, at startup, not by a preexec_fn between fork and exec (server_process
  says why); a validator that died before this ran is noticed by its pid.
  """
  ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
  if os.getppid() != parent_pid:
    sys.exit(f'the infra validator (pid {parent_pid}) that started this server has exited')


def main(argv: List[str]) -> int:
  """argv: the validator's pid, the version's folder, the model name and host:port to serve on.

  The child imports the server (TensorFlow: most of its start-up) at once, then
  waits for a line on stdin before serving: the validator starts it before the
  model's copy is ready, so the imports overlap the validator's own work
  (server_process.ServerProcess.serve). Stdin closed without a line: nothing is
  served, exit 0.

  The server loads once (no polling: nothing else will appear in the folder) and
  never retries a load: the candidate is whole on disk before the server starts,
  so a failed load is the model's fault.
  """
  parent_pid, model_dir, model_name, address = argv
  die_with_parent(int(parent_pid))
  os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
  from vaetfx.serving import server  # pylint: disable=g-import-not-at-top
  if not sys.stdin.readline():
    return 0
  host, port = address.rsplit(':', 1)
  server.serve_until_signalled(server.ServerConfig(
      model_dir=model_dir, model_name=model_name, host=host, port=int(port), poll_seconds=0,
      max_load_retries=0))
  # The exit's last collections of everything TensorFlow made took seconds that the validator
  # waits for (the same as `vaetfx`'s exit, vaetfx/cli.py command_line).
  gc.freeze()
  return 0

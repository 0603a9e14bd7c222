"""The validation server's entry point in its child process (server_process.CHILD_COMMAND).

Kept free of heavy imports: `vaetfx.cli` must be the first to import TensorFlow,
since it sets TF_USE_LEGACY_KERAS and silences TensorFlow before that import.
"""
import ctypes
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
  """argv: the validator's pid, then `vaetfx` arguments (`serve ...`)."""
  die_with_parent(int(argv[0]))
  from vaetfx import cli  # pylint: disable=g-import-not-at-top
  return cli.main(argv[1:])

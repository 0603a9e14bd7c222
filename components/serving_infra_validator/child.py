"""The validation server's entry point in its child process (server_process.CHILD_COMMAND).

Kept free of heavy imports until TF_USE_LEGACY_KERAS is set (TensorFlow reads it
once, at its first import). It parses only the `serve` command (serving/cli.py),
not the whole `vaetfx` command line: the infra validator's code fingerprint
(pipeline/code_fingerprint.py) then covers the server, not every other command.
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
  os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
  from vaetfx import flags  # pylint: disable=g-import-not-at-top
  from vaetfx.serving import cli as serving_cli  # pylint: disable=g-import-not-at-top
  parser = flags.Parser(prog='vaetfx')
  serving_cli.add_subcommands(parser.add_subparsers(dest='command', required=True))
  args = parser.parse_args(argv[1:])
  return args.handler(args)

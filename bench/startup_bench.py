"""Start-up and exit benchmark: what `vaetfx run` pays before its first component and after its
last, without running a pipeline, for several installs side by side.

For each Python given (a worktree's .venv/bin/python), a fresh process imports what `vaetfx run`
imports before the pipeline starts (vaetfx.cli and vaetfx.pipeline.local_runner), prints the
time, and exits the way the `vaetfx` program exits (vaetfx.cli.command_line when the install
has it: gc.freeze() first; else a plain exit). Measured from outside: start to imported, and
imported to exited. The installs alternate round by round, so load hits them alike; medians,
with the 1-minute load average.

  python bench/startup_bench.py --python ../wt-a/.venv/bin/python --python .venv/bin/python
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

CHILD = '''
import os, sys, time
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
from vaetfx import cli
from vaetfx.pipeline import local_runner
print(time.time(), flush=True)
if hasattr(cli, 'command_line'):
  import gc
  gc.freeze()
'''


def one_round(python: str):
  """(seconds to import, seconds from imported to exited) of one fresh process."""
  start = time.time()
  process = subprocess.Popen([python, '-c', CHILD], stdout=subprocess.PIPE, text=True)
  imported = float(process.stdout.readline())
  process.wait()
  return imported - start, time.time() - imported


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  parser.add_argument('--python', action='append', required=True,
                      help='A Python with vaetfx installed; repeat to compare.')
  parser.add_argument('--rounds', type=int, default=5)
  args = parser.parse_args(argv)
  results = {python: [] for python in args.python}
  loads = [os.getloadavg()[0]]
  for _ in range(args.rounds):
    for python in args.python:
      results[python].append(one_round(python))
    loads.append(os.getloadavg()[0])
  for python, runs in results.items():
    print(f'{python}: imports {statistics.median(r[0] for r in runs):.2f} s, exit '
          f'{statistics.median(r[1] for r in runs):.2f} s (medians of {len(runs)}; imports '
          f'{", ".join(f"{r[0]:.2f}" for r in runs)}; exits {", ".join(f"{r[1]:.2f}" for r in runs)})')
  print(f'load average (1 min) {min(loads):.2f} to {max(loads):.2f}')


if __name__ == '__main__':
  sys.exit(main())

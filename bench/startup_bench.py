"""Start-up benchmark: what `vaetfx run` imports before its first component, for several
installs side by side, without running a pipeline.

For each Python given (a worktree's .venv/bin/python), a fresh process imports what `vaetfx run`
imports before the pipeline starts (vaetfx.cli and vaetfx.pipeline.local_runner) and prints the
time; measured from outside, process start included. The installs alternate round by round, so
load hits them alike; medians, with the 1-minute load average. (The exit is measured by
`make bench-run` on real runs: a process that only imported exits quickly either way.)

  python bench/startup_bench.py --python ../wt-a/.venv/bin/python --python .venv/bin/python
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

CHILD = '''
import os, time
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
from vaetfx import cli
from vaetfx.pipeline import local_runner
print(time.time(), flush=True)
'''


def seconds_to_import(python: str) -> float:
  start = time.time()
  process = subprocess.Popen([python, '-W', 'ignore', '-c', CHILD], stdout=subprocess.PIPE,
                             text=True)
  imported = float(process.stdout.readline())
  process.wait()
  return imported - start


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
      results[python].append(seconds_to_import(python))
    loads.append(os.getloadavg()[0])
  for python, runs in results.items():
    print(f'{python}: imports {statistics.median(runs):.2f} s (median of {len(runs)}: '
          f'{", ".join(f"{r:.2f}" for r in runs)})')
  print(f'load average (1 min) {min(loads):.2f} to {max(loads):.2f}')


if __name__ == '__main__':
  sys.exit(main())

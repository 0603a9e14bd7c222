"""Whole-run benchmark: where `vaetfx run`'s wall time goes besides the Trainer's training steps.

Each round runs `vaetfx run` on the given MNIST in a fresh output folder (cold: nothing cached,
nothing served) as a child process, then reads what the run recorded:
- each component's wall time from ML Metadata (its execution's creation and last update, the
  times the run's own progress lines print);
- the Trainer's training steps, per-epoch evaluation and final held-out evaluation from the
  history.json it writes (models/trainer.py: `seconds`, `eval_seconds`, `final_eval_seconds`);
- the time from the process's start to the first component's (Python's imports, the checks,
  building the pipeline), from the last component's end to the process's exit, and between
  components (LocalDagRunner's own time from one execution's last update to the next one's
  creation: its per-node overhead outside the executions);
- the Trainer's loading (its data cached, the model built) and export, from history.json;
- the CPU seconds of each part: the run's process (and the children it waited for) polled in
  /proc every 50 ms, so each part's CPU against its wall time says whether it used one core,
  two, or waited.
The fraction outside the training steps is 1 - steps / wall. The 1-minute load average is
printed before and after each round; with several rounds, the table gives medians.

  python bench/run_bench.py --data-dir ../shared/data/mnist --rounds 3 -- --epochs 2
                                                                            (make bench-run)
Everything after `--` is passed to `vaetfx run`. To compare two versions of the code side by
side (before and after a change), give each one's `vaetfx` with --vaetfx (e.g. a second
worktree's .venv/bin/vaetfx): the rounds alternate between them, so load hits both alike.
"""
import argparse
import dataclasses
import glob
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

VAETFX = os.path.join(os.path.dirname(sys.executable), 'vaetfx')
WALL = 'wall time (process start to exit)'
BEFORE = '(process start to the first component)'
AFTER = '(last component to the process exit)'
STEPS = 'Trainer: training steps'
EPOCH_EVAL = 'Trainer: per-epoch eval'
FINAL_EVAL = 'Trainer: held-out ELBO'
TRAINER_LOAD = 'Trainer: loading (data cached, model built)'
TRAINER_EXPORT = 'Trainer: export'
TRAINER_REST = 'Trainer: the rest'
BETWEEN = '(between components: the runner)'
POLL_SECONDS = 0.05


@dataclasses.dataclass
class Round:
  """One run's seconds by part (components in the order they ran), its wall time, its loads,
  and the CPU seconds of each part (the parts the CPU record can place: not the Trainer's)."""
  wall: float
  parts: Dict[str, float]
  cpu: Dict[str, float]
  load_before: float
  load_after: float

  @property
  def outside_steps(self) -> float:
    return 1.0 - self.parts[STEPS] / self.wall


def component_times(metadata_db: str) -> List[tuple]:
  """(node id, start, end) of every execution, in ML Metadata's order, seconds since the epoch.

  Read with sqlite directly (ML Metadata's tables: Execution, Association, Context,
  ContextType), so this process never imports TensorFlow or TFX beside the run it measures.
  """
  query = """SELECT c.name, e.create_time_since_epoch, e.last_update_time_since_epoch
             FROM Execution e JOIN Association a ON a.execution_id = e.id
             JOIN Context c ON c.id = a.context_id JOIN Type t ON t.id = c.type_id
             WHERE t.name = 'node' ORDER BY e.id"""
  with sqlite3.connect(f'file:{metadata_db}?mode=ro', uri=True) as db:
    rows = db.execute(query).fetchall()
  return [(name.split('.', 1)[1], start / 1e3, end / 1e3) for name, start, end in rows]


def trainer_history(pipeline_root: str) -> Dict:
  [path] = glob.glob(os.path.join(pipeline_root, 'Trainer', 'model_run', '*', 'history.json'))
  with open(path) as f:
    return json.load(f)


def spans(metadata_db: str, started: float, ended: float) -> Dict[str, tuple]:
  """(start, end) of each part the clock can place: before the first component, each
  component, after the last; the gaps between components are BETWEEN's."""
  times = component_times(metadata_db)
  result = {BEFORE: (started, times[0][1])}
  for name, start, end in times:
    result[name] = (start, end)
  result[AFTER] = (max(end for _, _, end in times), ended)
  return result


def measure(output_dir: str, started: float, ended: float) -> Dict[str, float]:
  """Seconds by part of the run that wrote `output_dir`, from its ML Metadata and history.json."""
  placed = spans(os.path.join(output_dir, 'metadata.db'), started, ended)
  parts = {name: end - start for name, (start, end) in placed.items()}
  parts[BETWEEN] = (ended - started) - sum(parts.values())
  history = trainer_history(os.path.join(output_dir, 'pipeline_root'))
  parts[STEPS] = sum(epoch['seconds'] for epoch in history['epochs'])
  parts[EPOCH_EVAL] = sum(epoch['eval_seconds'] for epoch in history['epochs'])
  parts[FINAL_EVAL] = history['final_eval_seconds']
  # Recorded by the Trainer since issue #25's measurements (0 in an older run's history).
  parts[TRAINER_LOAD] = history.get('load_seconds', 0.0)
  parts[TRAINER_EXPORT] = history.get('export_seconds', 0.0)
  parts[TRAINER_REST] = (parts['Trainer'] - parts[STEPS] - parts[EPOCH_EVAL] - parts[FINAL_EVAL]
                         - parts[TRAINER_LOAD] - parts[TRAINER_EXPORT])
  return parts


def process_cpu_seconds(pid: int) -> float:
  """User and system CPU seconds of `pid` and of the children it has waited for (/proc)."""
  with open(f'/proc/{pid}/stat') as f:
    fields = f.read().rsplit(')', 1)[1].split()
  # After the command's closing parenthesis: utime, stime, cutime, cstime are fields 12-15.
  return sum(int(value) for value in fields[11:15]) / os.sysconf('SC_CLK_TCK')


def run_and_record_cpu(command: List[str], log) -> tuple:
  """Runs `command`; returns its exit code and [(time, CPU seconds so far)], polled every
  POLL_SECONDS while it runs, the last entry its total at exit (wait4's resource usage)."""
  child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
  record = [(time.time(), 0.0)]
  while True:
    pid, status, usage = os.wait4(child.pid, os.WNOHANG)
    if pid:
      child.returncode = os.waitstatus_to_exitcode(status)
      record.append((time.time(), usage.ru_utime + usage.ru_stime))
      return child.returncode, record
    try:
      record.append((time.time(), process_cpu_seconds(child.pid)))
    except (FileNotFoundError, ProcessLookupError, IndexError):  # exiting: wait4 gives the total
      pass
    time.sleep(POLL_SECONDS)


def cpu_between(record: List[tuple], start: float, end: float) -> float:
  """CPU seconds used from `start` to `end`, from the polled record (the nearest polls)."""
  def at(moment):
    earlier = [cpu for when, cpu in record if when <= moment]
    return earlier[-1] if earlier else 0.0
  return at(end) - at(start)


def run_once(vaetfx: str, data_dir: str, run_args: List[str], scratch: str, number: int,
             keep_output: bool) -> Round:
  output_dir = os.path.join(scratch, f'round-{number}')
  command = [vaetfx, 'run', '--data-dir', data_dir, '--output-dir', output_dir, *run_args]
  load_before = os.getloadavg()[0]
  started = time.time()
  with open(os.path.join(scratch, f'round-{number}.log'), 'w') as log:
    code, cpu_record = run_and_record_cpu(command, log)
  ended = time.time()
  if code != 0:
    sys.exit(f'round {number}: `{" ".join(command)}` exited with {code}; its output is in '
             f'{log.name}')
  placed = spans(os.path.join(output_dir, 'metadata.db'), started, ended)
  cpu = {name: cpu_between(cpu_record, start, end) for name, (start, end) in placed.items()}
  cpu[WALL] = cpu_record[-1][1]
  result = Round(ended - started, measure(output_dir, started, ended), cpu, load_before,
                 os.getloadavg()[0])
  if not keep_output:
    shutil.rmtree(output_dir)
  return result


def print_round(number: int, command: str, result: Round):
  print(f'round {number} ({command}): {result.wall:.1f} s wall, training steps {result.parts[STEPS]:.1f} s, '
        f'{100 * result.outside_steps:.1f}% outside them (load {result.load_before:.2f} before, '
        f'{result.load_after:.2f} after)', flush=True)


def print_table(rounds: Dict[str, List[Round]]):
  """Each part's median over each command's rounds, the commands side by side (with the
  second's ratio to the first when there are two) and each one's CPU seconds in the part (-
  where the CPU record cannot place it), then the wall time and the fraction."""
  names = [WALL, *dict.fromkeys(name for runs in rounds.values() for r in runs
                                for name in r.parts)]
  commands = list(rounds)
  medians = {command: {name: statistics.median(r.wall if name == WALL else r.parts.get(name, 0.0)
                                               for r in runs)
                       for name in names} for command, runs in rounds.items()}
  cpu = {command: {name: statistics.median(r.cpu[name] for r in runs)
                   for name in names if all(name in r.cpu for r in runs)}
         for command, runs in rounds.items()}
  width = max(len(name) for name in names) + 2
  for number, command in enumerate(commands, 1):
    print(f'[{number}] {command}')
  numbers = range(1, len(commands) + 1)
  header = ''.join(f'{f"[{n}] s":>9}' for n in numbers) + ''.join(f'{f"[{n}] CPU s":>11}'
                                                                   for n in numbers)
  print(f'\n{"part (medians)":<{width}}{header}' + ('    2/1' if len(commands) == 2 else ''))
  for name in names:
    values = [medians[command][name] for command in commands]
    cpus = [f'{cpu[command][name]:>11.1f}' if name in cpu[command] else f'{"-":>11}'
            for command in commands]
    ratio = (f'  {values[1] / values[0]:5.2f}' if len(commands) == 2 and values[0] >= 0.05
             else '')
    print(f'{name:<{width}}' + ''.join(f'{v:>9.1f}' for v in values) + ''.join(cpus) + ratio)
  print()
  for number, (command, runs) in enumerate(rounds.items(), 1):
    wall = statistics.median(r.wall for r in runs)
    outside = statistics.median(r.outside_steps for r in runs)
    loads = [load for r in runs for load in (r.load_before, r.load_after)]
    print(f'[{number}] wall {wall:.1f} s, training steps {medians[command][STEPS]:.1f} s: '
          f'{100 * outside:.1f}% of the wall time outside the training steps (medians of '
          f'{len(runs)}; each round: {", ".join(f"{100 * r.outside_steps:.1f}%" for r in runs)}'
          f'; load average {min(loads):.2f} to {max(loads):.2f})')


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  parser.add_argument('--data-dir', required=True, help='MNIST folder, as for `vaetfx run`.')
  parser.add_argument('--rounds', type=int, default=1, help='Runs of each --vaetfx, one '
                      'after the other; the tables give medians.')
  parser.add_argument('--vaetfx', action='append', default=[],
                      help=f'A `vaetfx` command to run (repeat to compare versions; their rounds '
                           f'alternate). Default: {VAETFX}.')
  parser.add_argument('--scratch', default='', help='Where the runs\' output folders and logs '
                      'go (default: a temporary folder, removed at the end).')
  parser.add_argument('--keep-outputs', action='store_true',
                      help='Keep each round\'s output folder (in --scratch).')
  parser.add_argument('run_args', nargs='*', help='Flags for `vaetfx run`, after `--`.')
  args = parser.parse_args(argv)
  commands = args.vaetfx or [VAETFX]
  scratch = args.scratch or tempfile.mkdtemp(prefix='run-bench-')
  os.makedirs(scratch, exist_ok=True)
  print(f'vaetfx run --data-dir {args.data_dir} {" ".join(args.run_args)}: {args.rounds} '
        f'round(s) of {", ".join(commands)}, cold, outputs and logs in {scratch}; '
        f'{subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}', flush=True)
  rounds = {command: [] for command in commands}
  number = 0
  for _ in range(args.rounds):
    for command in commands:
      number += 1
      rounds[command].append(run_once(command, args.data_dir, args.run_args, scratch, number,
                                      args.keep_outputs))
      print_round(number, command, rounds[command][-1])
  print()
  print_table(rounds)
  if not args.scratch:
    shutil.rmtree(scratch)


if __name__ == '__main__':
  main()

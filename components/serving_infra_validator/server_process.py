"""`vaetfx serve` on one model in a child process: started, waited for until AVAILABLE, stopped.

A separate process, as TF Serving would be: the candidate is loaded by the
serving code and queried over gRPC, so what passes here is what a server can
answer, and a model that crashes its server cannot take the validator down.

How the child starts matters (issue 21):
- No code runs between fork and exec (no preexec_fn). With a preexec_fn,
  CPython must fork() instead of vfork(), and fork() runs gRPC's pthread_atfork
  handlers. When this process uses gRPC (TFX's launcher runs an
  ExecutionWatcher gRPC server around every executor; the validator has its
  own clients), gRPC's child handler restarts its epoll poller thread in the
  child; the child then closes every inherited descriptor before exec
  (close_fds), the poller's epoll descriptor among them, and if that thread
  polls before the exec, gRPC aborts the child: exit -6, `Epoll1Poller ...
  epoll_wait error: Bad file descriptor` (grpc/grpc#43055, grpcio 1.80 on;
  about 1 child in 20 with this process's gRPC busy, grpcio 1.85.1). vfork()
  runs no fork handlers. The child sets its own parent-death signal instead,
  at startup (child.die_with_parent).
- It runs the installed package, whatever the working folder: `python -c`
  puts the working folder first on sys.path, so CHILD_COMMAND removes it
  before importing vaetfx (`python -m vaetfx.cli` would run a ./vaetfx/cli.py
  found there). It starts the server itself, not the `vaetfx` command line, so
  the validator's code fingerprint covers the server and nothing else. Environment variables pass unchanged (no -I).
"""
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import List

import grpc
import portpicker

from vaetfx.components.serving_infra_validator import child
from vaetfx.serving import client as client_lib
from vaetfx.serving import status

HOST = '127.0.0.1'
STOP_SECONDS = 10.0
POLL_SECONDS = 0.2
STDERR_TAIL_CHARS = 2000
REAP_SECONDS = 1.0  # A server that dropped a call and is dying has this long to exit.
# `python -c` puts '' (the working folder) first on sys.path.
CHILD_COMMAND = (f'import sys; del sys.path[0]; import {child.__name__} as child; '
                 'sys.exit(child.main(sys.argv[1:]))')
# Codes of a failed RPC that say the server is gone or stuck, not that the model answered wrong.
SERVER_DOWN_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class ServerFailure(RuntimeError):
  """The server, not the model, failed: it could not start, exited, was killed, or did not
  answer in time. `reason` is one line; str() adds the server's output."""

  def __init__(self, reason: str, output: str = ''):
    super().__init__(f'{reason}; the server\'s output ends:\n{output}' if output else reason)
    self.reason = reason


class ModelLoadFailure(Exception):
  """The server ran and reported that the version failed to load or warm up: the model's fault
  (the copy is whole on disk before the server starts)."""


def _death(code: int) -> str:
  """How a process with exit status `code` ended, as Popen.returncode reports it."""
  if code < 0:
    return f'died of {signal.Signals(-code).name} (exit {code})'
  return f'exited with code {code}'


def _last_line(output: str) -> str:
  lines = output.strip().splitlines()
  return lines[-1].strip() if lines else 'no output'


def spawn(command: List[str], output) -> subprocess.Popen:
  """Starts `command`, its output into the file `output` and its stdin a pipe from here, with
  no code run between fork and exec, so CPython vfork()s and gRPC's fork handlers never run
  (the module docstring)."""
  return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=output,
                          stderr=subprocess.STDOUT, env={**os.environ, 'PYTHONUNBUFFERED': '1'})


class ServerProcess:
  """The server of `vaetfx serve`, with its default limits, over `model_dir`
  (`<base>/<name>/<version>/`) on a free port.

  The child process starts at once and imports the server (TensorFlow: most of
  its start-up), but serves only once serve() is called: the folder may be
  filled meanwhile, so the caller's own preparation overlaps the child's imports.
  The server loads once (no polling): nothing else will appear in its folder.
  Its output goes to a temporary file, quoted in ServerFailure messages. A
  process that cannot be started raises ServerFailure from serve(), where a
  try fails, not here.
  """

  def __init__(self, model_dir: str, model_name: str):
    self.model_dir = model_dir
    self.model_name = model_name
    self.address = f'{HOST}:{portpicker.pick_unused_port()}'
    self._log = tempfile.TemporaryFile(mode='w+')
    self._process = None
    self._spawn_error = None
    # No load retries: the candidate is whole on disk before the server starts, so a failed
    # load is the model's fault (TF Serving retries for versions still being copied in).
    command = [sys.executable, '-c', CHILD_COMMAND, str(os.getpid()), model_dir, model_name,
               self.address]
    try:
      self._process = spawn(command, self._log)
    except OSError as e:
      self._spawn_error = e
    self.pid = self._process.pid if self._process else None

  def serve(self):
    """Lets the child load and serve `model_dir`, which must be complete now.

    Raises ServerFailure when the process could not be started; a child that has
    exited meanwhile is found by wait_until_available (check_running).
    """
    if self._spawn_error is not None:
      raise ServerFailure(f'the server could not be started: {self._spawn_error}')
    try:
      self._process.stdin.write(b'\n')
      self._process.stdin.close()
    except BrokenPipeError:
      pass

  def client(self, timeout: float) -> client_lib.ServingClient:
    return client_lib.ServingClient(self.address, self.model_name, timeout=timeout)

  def output_tail(self) -> str:
    self._log.seek(0)
    return self._log.read()[-STDERR_TAIL_CHARS:]

  def check_running(self):
    """Raises ServerFailure, with the server's last line and output, if it has exited."""
    code = self._process.poll()
    if code is not None:
      output = self.output_tail()
      raise ServerFailure(f'the server {_death(code)}: {_last_line(output)}', output)

  def check_answering(self, error: status.ServingError):
    """Raises ServerFailure when a failed RPC says the server is at fault (SERVER_DOWN_CODES):
    it died (named by its exit once reaped) or is unreachable or stuck; others are answers."""
    if error.code not in SERVER_DOWN_CODES:
      return
    try:
      self._process.wait(REAP_SECONDS)
    except subprocess.TimeoutExpired:
      raise ServerFailure(f'the server stopped answering: {error}', self.output_tail()) from None
    self.check_running()

  def wait_until_available(self, version: int, timeout: float):
    """Polls GetModelStatus; returns once `version` is AVAILABLE.

    Raises ModelLoadFailure at once when the load ends in an error (a failed
    warmup included). Raises ServerFailure when the server exits, fails
    GetModelStatus, or after `timeout` seconds, whether it never answered or the
    version was still loading: on a machine busy with other work a load can
    overrun any budget, and that is no verdict on the model.
    """
    deadline = time.monotonic() + timeout
    answered = False
    with self.client(timeout=min(5.0, timeout)) as serving:
      while True:
        self.check_running()
        try:
          if self._is_available(serving, version):
            return
          answered = True
        except status.ServingError as e:
          if e.code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND):
            raise ServerFailure(f'GetModelStatus failed: {e}', self.output_tail()) from e
          answered = answered or e.code == grpc.StatusCode.NOT_FOUND
        if time.monotonic() >= deadline:
          what = (f'version {version} was not AVAILABLE' if answered
                  else f'the server did not answer on {self.address}')
          raise ServerFailure(f'{what} within {timeout:g} s', self.output_tail())
        time.sleep(POLL_SECONDS)

  @staticmethod
  def _is_available(serving: client_lib.ServingClient, version: int) -> bool:
    """Whether GetModelStatus reports `version` AVAILABLE; ModelLoadFailure if its load failed."""
    for entry in serving.version_states():
      if entry.version != version:
        continue
      if entry.state == client_lib.AVAILABLE:
        return True
      if entry.state == client_lib.State.END and entry.status.error_code:
        raise ModelLoadFailure(f'version {version} failed to load: '
                               f'{entry.status.error_message}')
    return False

  def stop(self):
    """SIGTERM (the server finishes requests in flight), then SIGKILL if it lingers; a child
    not yet told to serve, the same. Stopping twice is harmless."""
    if self._process is None:
      self._log.close()
      return
    if not self._process.stdin.closed:
      self._process.stdin.close()
    if self._process.poll() is None:
      self._process.terminate()
      try:
        self._process.wait(STOP_SECONDS)
      except subprocess.TimeoutExpired:
        self._process.kill()
        self._process.wait()
    self._log.close()

  def __enter__(self) -> 'ServerProcess':
    return self

  def __exit__(self, *exc_info):
    self.stop()

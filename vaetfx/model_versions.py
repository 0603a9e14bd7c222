"""`vaetfx models` (what a serving folder holds, and each version's story) and `vaetfx rollback`.

Both read the serving folder itself (serving_folder.py), never ML Metadata: the
folder is what TF Serving serves, and it tells its story when every
metadata.db is gone. `models` imports no TensorFlow for a local folder;
`rollback` publishes through the Pusher's own protocol (lock, stage, fsync,
rename; on gs:// a copy with saved_model.pb last), so TF Serving sees the
rolled-back model appear whole, as a new newest version.
"""
import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional

from vaetfx import flags
from vaetfx.pipeline import configs
from vaetfx.shared import serving_folder


def add_subcommands(subparsers):
  """Registers `models` and `rollback` on the `vaetfx` command's subparsers."""
  _add_models_parser(subparsers)
  _add_rollback_parser(subparsers)


def _add_location_flags(parser):
  parser.add_argument('--serving-dir', required=True,
                      help='The serving folder: <serving-dir>/<model-name>/<version>/ (a local '
                           'folder or a URI such as gs://bucket/serving).')
  parser.add_argument('--model-name', type=flags.model_name, default=configs.MODEL_NAME,
                      help='TF Serving model name: the folder under --serving-dir.')


def _add_models_parser(subparsers):
  parser = subparsers.add_parser(
      'models', help='List the versions of a served model and the story of each.',
      description='Lists every version in <serving-dir>/<model-name>: when and by which '
                  'pipeline run it was pushed, its held-out score and its baseline\'s, the data '
                  'it saw, which version TF Serving serves now (the newest complete one), and '
                  '"foreign" for what vaetfx did not write. Read from the folder itself.',
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  _add_location_flags(parser)
  parser.add_argument('--json', action='store_true',
                      help='Print the versions as one JSON list, with whole provenance records.')
  parser.set_defaults(handler=_models)


def _add_rollback_parser(subparsers):
  parser = subparsers.add_parser(
      'rollback', help='Serve an earlier version again.',
      description='Publishes the model of an earlier version as a new newest version, through '
                  'the Pusher\'s protocol, with a provenance record saying "rollback of N"; '
                  'TF Serving then serves it and the next pipeline run gates against it. '
                  'Nothing is deleted.',
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  _add_location_flags(parser)
  parser.add_argument('--to', type=flags.non_negative_int, default=None, metavar='VERSION',
                      help='The version to serve again. Default: the newest version vaetfx '
                           'pushed before the served one.')
  parser.set_defaults(handler=_rollback)


def _score_text(provenance: Dict[str, Any]) -> str:
  scores = provenance.get('scores') or {}
  if scores.get('candidate') is None:
    return ''
  baseline = scores.get('baseline')
  return f'{scores["candidate"]:.2f}' + (f' (baseline {baseline:.2f})' if baseline is not None
                                         else ' (no baseline)')


def version_rows(model_dir: str) -> List[Dict[str, Any]]:
  """One dict per version, oldest first: what `vaetfx models` shows."""
  versions = serving_folder.list_versions(model_dir)
  served = serving_folder.served_version(versions)
  rows = []
  for version in versions:
    record = version.provenance or {}
    notes = []
    if version is served:
      notes.append('SERVED')
    if version.foreign:
      notes.append(f'foreign: {version.describe()}')
    if record.get('rollback_of') is not None:
      notes.append(f'rollback of {record["rollback_of"]}')
    rows.append({
        'version': version.number, 'served': version is served, 'foreign': version.foreign,
        'pushed_at': record.get('pushed_at', ''),
        'pipeline': record.get('pipeline_name', ''), 'run_id': record.get('run_id', ''),
        'kind': record.get('model', {}).get('kind', ''), 'score': _score_text(record),
        'data': record.get('data', {}).get('root', ''), 'notes': ', '.join(notes),
        'provenance': version.provenance})
  return rows


COLUMNS = (('version', 'version'), ('pushed_at', 'pushed at (UTC)'), ('pipeline', 'pipeline'),
           ('run_id', 'run'), ('kind', 'model'), ('score', 'held-out score'), ('data', 'data'),
           ('notes', ''))


def format_table(rows: List[Dict[str, Any]]) -> str:
  cells = [[title for _, title in COLUMNS]] + [[str(row[key]) for key, _ in COLUMNS]
                                               for row in rows]
  widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
  return '\n'.join('  '.join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
                   for line in cells)


def _models(args) -> int:
  model_dir = os.path.join(args.serving_dir, args.model_name)
  rows = version_rows(model_dir)
  if args.json:
    print(json.dumps(rows, indent=2, sort_keys=True))
    return flags.EXIT_OK
  if not rows:
    print(f'{model_dir}: no versions.')
    return flags.EXIT_OK
  print(format_table(rows))
  served = next((row['version'] for row in rows if row['served']), None)
  print(f'\nTF Serving serves version {served} (the newest complete one).' if served is not None
        else '\nNo version is complete: TF Serving serves nothing here.')
  return flags.EXIT_OK


class RollbackRefused(ValueError):
  """The rollback cannot be done; the message says why and what to do."""


def rollback_target(versions: List[serving_folder.Version],
                    to: Optional[int]) -> serving_folder.Version:
  """The version to serve again: `to`, else the newest of this product's versions below the
  served one. Only this product's versions (a real folder with its provenance record)."""
  served = serving_folder.served_version(versions)
  own = serving_folder.own_versions(versions)
  if to is None:
    older = [v for v in own if served is None or v.number < served.number]
    if not older:
      raise RollbackRefused('no version pushed by vaetfx is older than the served one')
    return older[-1]
  target = next((v for v in versions if v.number == to), None)
  if target is None:
    raise RollbackRefused(f'there is no version {to} (versions: '
                          f'{", ".join(str(v.number) for v in versions) or "none"})')
  if target.foreign:
    raise RollbackRefused(f'{target.describe()}; rollback republishes only what vaetfx pushed')
  if target is served:
    raise RollbackRefused(f'version {to} is already the served one')
  return target


def rollback(model_dir: str, to: Optional[int]) -> str:
  """Publishes the target version's model as the newest version; returns its folder."""
  from vaetfx.components.atomic_pusher import executor as pusher  # pylint: disable=g-import-not-at-top
  with pusher.push_lock(model_dir):
    versions = serving_folder.list_versions(model_dir)
    target = rollback_target(versions, to)
    served = serving_folder.served_version(versions)
    record = {**target.provenance,
              'pushed_at': serving_folder.pushed_at_now(),
              'run_id': 'vaetfx rollback', 'replaced': served.number if served else None,
              'rollback_of': target.number}
    return pusher.push_model(target.path, model_dir, record)


def _rollback(args) -> int:
  model_dir = os.path.join(args.serving_dir, args.model_name)
  try:
    version_dir = rollback(model_dir, args.to)
  except RollbackRefused as e:
    print(f'vaetfx rollback: error: {model_dir}: {e}', file=sys.stderr)
    return flags.EXIT_BAD_INPUT
  record = serving_folder.read_provenance(version_dir)
  print(f'Rolled back: version {record["version"]} holds the model of version '
        f'{record["rollback_of"]} and is now served ({version_dir}); it replaced version '
        f'{record["replaced"]}. The next pipeline run gates against it.')
  return flags.EXIT_OK

"""The package's folders import downward only, so a loop between them cannot come back.

The command line (vaetfx/) is on top; pipeline, components and serving are in the
middle (the pipeline builds components, the infra validator component runs the
server); models and the shared layer (storage, validation, names) are at the
bottom. Imports inside functions count: they run too.
"""
import ast
import os

import pytest

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Folder -> the folders its modules may import (besides their own).
ALLOWED = {
    'vaetfx': {'pipeline', 'components', 'serving', 'models', 'shared'},
    'pipeline': {'components', 'serving', 'models', 'shared'},
    'components': {'serving', 'models', 'shared'},
    'serving': {'models', 'shared'},
    'models': {'shared'},
    'shared': set(),
}


def imported_folders(path):
  """(line, folder) of every `vaetfx.<folder>` import in a file; `vaetfx` alone for the top."""
  with open(path, encoding='utf-8') as f:
    tree = ast.parse(f.read(), path)
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module:
      names = [f'{node.module}.{alias.name}' for alias in node.names]
    elif isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    else:
      continue
    for name in names:
      parts = name.split('.')
      if parts[0] == 'vaetfx' and len(parts) > 1:
        yield node.lineno, parts[1] if parts[1] in ALLOWED else 'vaetfx'


def python_files(folder):
  for root, _, files in os.walk(os.path.join(REPO_DIR, folder)):
    yield from (os.path.join(root, name) for name in sorted(files) if name.endswith('.py'))


@pytest.mark.parametrize('folder', sorted(ALLOWED))
def test_a_folder_imports_only_the_folders_below_it(folder):
  wrong = [f'{os.path.relpath(path, REPO_DIR)}:{line} imports vaetfx.{target}'
           for path in python_files(folder)
           for line, target in imported_folders(path)
           if target != folder and target not in ALLOWED[folder]]
  assert not wrong, '\n'.join(wrong)


def test_the_allowed_directions_have_no_loop():
  def reaches(start, goal, seen=()):
    return any(after == goal or (after not in seen and reaches(after, goal, seen + (after,)))
             for after in ALLOWED[start])
  assert not [folder for folder in ALLOWED if reaches(folder, folder)]


def test_the_check_sees_a_wrong_import(tmp_path):
  """A serving module importing the command line is caught (the check is not vacuous)."""
  path = tmp_path / 'bad.py'
  path.write_text('def f():\n  from vaetfx import flags\n  from vaetfx.pipeline import configs\n')
  assert list(imported_folders(str(path))) == [(2, 'vaetfx'), (3, 'pipeline')]

"""The one rule for a TF Serving model name, shared by the config layer and the Pusher's executor.

The name becomes a directory, `<serving_dir>/<model_name>/`, that the Pusher
writes versions into and prunes: an empty name would make the serving
directory itself the model directory, `..` its parent, `a/b` a directory TF
Serving's model config never names. Kept free of TFX imports, so the command
line can check a name before it loads anything.
"""
import re

# One path component, as TF Serving's model_base_path and REST URLs
# (/v1/models/<name>) both take it; 255 bytes is the usual file-name limit.
_VALID = re.compile(r'[A-Za-z0-9][A-Za-z0-9._-]{0,254}')


def check_model_name(name: str) -> str:
  """Returns `name` if it is a valid TF Serving model name; raises ValueError saying why not."""
  if not isinstance(name, str) or not _VALID.fullmatch(name):
    raise ValueError(f'model name {name!r}: expected one path component of letters, digits, '
                     "'.', '_' or '-', starting with a letter or digit (TF Serving's "
                     '<serving_dir>/<model_name>/ folder)')
  return name

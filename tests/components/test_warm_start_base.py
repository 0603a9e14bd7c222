"""WarmStartBase's executor on hand-made serving folders: which version the Trainer starts from."""
import json
import os

import pytest
from tfx.types import channel, standard_artifacts
from tfx.utils import path_utils

from vaetfx.components.warm_start_base import executor
from vaetfx.components.warm_start_base.component import WarmStartBase
from vaetfx.shared import serving_folder

MODEL_NAME = 'vae'
THIS_DATA, OTHER_DATA = 'fingerprint of span 2', 'fingerprint of span 1'


def _version(serving_dir, number, kind='conv', latent_dim=2, data=OTHER_DATA, base=None,
             provenance=True):
  """A version folder as the Pusher writes it: a (fake) saved_model.pb and its provenance."""
  path = os.path.join(serving_dir, MODEL_NAME, str(number))
  os.makedirs(os.path.join(path, 'variables'))
  with open(os.path.join(path, serving_folder.SAVED_MODEL_FILE), 'wb') as f:
    f.write(f'model {number}'.encode())
  if provenance:
    os.makedirs(os.path.join(path, 'assets.extra'))
    with open(os.path.join(path, serving_folder.PROVENANCE_FILE), 'w') as f:
      json.dump({'producer': serving_folder.PRODUCER, 'version': number,
                 'model': {'kind': kind, 'hparams': {'latent_dim': latent_dim}},
                 'data': {'input_fingerprint': data},
                 executor.PROVENANCE_ENTRY: {executor.BASE_VERSION_KEY: base}}, f)
  return path


def _run(serving_dir, output_uri, kind='conv', latent_dim=2, warm_start=True):
  examples = standard_artifacts.Examples()
  examples.set_string_custom_property(executor.INPUT_FINGERPRINT_KEY, THIS_DATA)
  base_model = standard_artifacts.Model()
  base_model.uri = output_uri
  executor.Executor().Do(
      {'examples': [examples]}, {executor.BASE_MODEL_KEY: [base_model]},
      {executor.SERVING_DIR_KEY: serving_dir, executor.MODEL_NAME_KEY: MODEL_NAME,
       executor.KIND_KEY: kind, executor.LATENT_DIM_KEY: latent_dim,
       executor.WARM_START_KEY: int(warm_start)})
  return base_model


def _copied(base_model):
  path = path_utils.serving_model_dir(base_model.uri)
  if not os.path.exists(path):
    return None
  with open(os.path.join(path, serving_folder.SAVED_MODEL_FILE), 'rb') as f:
    return f.read().decode()


def _outcome(base_model):
  return (base_model.get_int_custom_property(executor.BASE_VERSION_KEY),
          base_model.get_string_custom_property(executor.REASON_KEY), _copied(base_model))


def test_the_served_version_of_the_same_kind_and_size_is_copied_as_the_base(tmp_path):
  _version(tmp_path, 1)
  _version(tmp_path, 2)
  assert _outcome(_run(str(tmp_path), str(tmp_path / 'out'))) == (2, '', 'model 2')


def test_nothing_served_is_a_cold_start_with_an_empty_base(tmp_path):
  number, reason, copied = _outcome(_run(str(tmp_path), str(tmp_path / 'out')))
  assert (number, copied) == (executor.NO_BASE, None) and 'serves no model' in reason


@pytest.mark.parametrize('served, run, expected', [
    ({'kind': 'ae'}, {}, 'is a --model ae, this run trains --model conv'),
    ({'kind': 'mlp'}, {}, 'is a --model mlp'),
    ({'latent_dim': 32}, {}, 'has --latent-dim 32, this run trains 2'),
    ({}, {'latent_dim': 8}, 'has --latent-dim 2, this run trains 8'),
    ({}, {'warm_start': False}, '--no-warm-start'),
    ({'provenance': False}, {}, 'was not pushed by vaetfx'),
])
def test_a_base_that_cannot_start_this_model_is_a_cold_start_saying_why(tmp_path, served, run,
                                                                         expected):
  _version(tmp_path, 1, **served)
  number, reason, copied = _outcome(_run(str(tmp_path), str(tmp_path / 'out'), **run))
  assert (number, copied) == (executor.NO_BASE, None)
  assert expected in reason, reason


def test_a_symlinked_served_version_is_never_followed(tmp_path):
  target = _version(tmp_path / 'elsewhere', 1)
  os.makedirs(tmp_path / MODEL_NAME)
  os.symlink(target, tmp_path / MODEL_NAME / '5')
  number, reason, _ = _outcome(_run(str(tmp_path), str(tmp_path / 'out')))
  assert number == executor.NO_BASE and 'symlink' in reason


def test_a_served_model_trained_on_this_data_gives_its_own_base(tmp_path):
  """A re-run with no new data starts where the served model started: the same Trainer inputs."""
  _version(tmp_path, 1)
  _version(tmp_path, 2, data=THIS_DATA, base=1)
  assert _outcome(_run(str(tmp_path), str(tmp_path / 'out'))) == (1, '', 'model 1')


@pytest.mark.parametrize('base, expected', [
    (None, 'was trained on this same data, from scratch'),
    (7, 'from version 7, which is no longer there'),
])
def test_a_served_model_trained_on_this_data_from_scratch_or_a_gone_base_is_a_cold_start(
    tmp_path, base, expected):
  _version(tmp_path, 2, data=THIS_DATA, base=base)
  number, reason, copied = _outcome(_run(str(tmp_path), str(tmp_path / 'out')))
  assert (number, copied) == (executor.NO_BASE, None) and expected in reason, reason


def test_the_same_data_rule_still_checks_the_older_bases_kind(tmp_path):
  _version(tmp_path, 1, latent_dim=16)
  _version(tmp_path, 2, data=THIS_DATA, base=1)
  number, reason, _ = _outcome(_run(str(tmp_path), str(tmp_path / 'out')))
  assert number == executor.NO_BASE and 'version 1 has --latent-dim 16' in reason


def test_the_provenance_entry_names_the_base_version_or_none(tmp_path):
  _version(tmp_path, 1)
  warm = _run(str(tmp_path), str(tmp_path / 'warm'))
  cold = _run(str(tmp_path), str(tmp_path / 'cold'), warm_start=False)
  assert executor.provenance_entry(warm) == {executor.BASE_VERSION_KEY: 1, executor.REASON_KEY: ''}
  assert executor.provenance_entry(cold)[executor.BASE_VERSION_KEY] is None


def test_component_wires_the_examples_and_its_cache_key_ignores_the_serving_folder():
  """No driver adds the folder's state: a cached decision stands while the data is the same."""
  component = WarmStartBase(channel.Channel(type=standard_artifacts.Examples), '/serving',
                            MODEL_NAME, 'conv', 2, warm_start=False)
  assert component.outputs[executor.BASE_MODEL_KEY].type == standard_artifacts.Model
  assert component.exec_properties[executor.WARM_START_KEY] == 0
  assert component.driver_class.__name__ == 'BaseDriver'

"""Code fingerprints: each component's covers exactly the code it runs, holds for a non-editable
install, and reaches the pipeline's execution properties and the compiled Kubeflow spec."""
import json
import os
import shutil
import subprocess
import sys
from unittest import mock

import pytest

from vaetfx.pipeline import code_fingerprint, configs

COMPONENTS = set(code_fingerprint.ENTRY_MODULES)
# What an edit to each file must re-run; every other component keeps its fingerprint.
# The infra validator and the drift check read held-out digits as the report does, and the
# validator runs the server; the command line is no component's code, so editing a flag's
# help re-runs nothing.
AFFECTED_BY = {
    # The scorer loads the model through models/export.py, which imports the model code.
    'vaetfx.models.vae': {'Trainer', 'VaeReport', 'ServingInfraValidator', 'DriftCheck',
                          'BulkInferrer'},
    'vaetfx.models.preprocessing': {'Transform', 'VaeReport'},
    'vaetfx.shared.features': {'MnistExampleGen', 'Transform', 'Trainer', 'VaeReport',
                               'ServingInfraValidator', 'DriftCheck', 'BulkInferrer'},
    'vaetfx.shared.examples': {'MnistExampleGen', 'BulkInferrer'},
    'vaetfx.components.anomaly_scorer.scoring': {'BulkInferrer'},
    # The Pusher reads the gate's scores for each version's provenance record.
    'vaetfx.models.score_metrics': {'Evaluator', 'AtomicPusher'},
    # The drift check reads the baseline's properties: the served model and its data.
    'vaetfx.components.served_baseline.executor': {'Evaluator', 'ServedModelImporter',
                                                   'DriftCheck'},
    'vaetfx.shared.serving_folder': {'ServedModelImporter', 'Evaluator', 'AtomicPusher',
                                     'DriftCheck', 'WarmStartBase'},
    # The Pusher writes the base version into each version's provenance record.
    'vaetfx.components.warm_start_base.executor': {'WarmStartBase', 'AtomicPusher'},
    'vaetfx.components.atomic_pusher.executor': {'AtomicPusher'},
    'vaetfx.shared.mnist_files': {'MnistExampleGen'},
    'vaetfx.serving.servable': {'ServingInfraValidator'},
    'vaetfx.serving.server': {'ServingInfraValidator'},
    # Held-out digits read back and run through a model, by three components.
    'vaetfx.components.digits': {'VaeReport', 'ServingInfraValidator', 'DriftCheck'},
    'vaetfx.components.drift_check.executor': {'DriftCheck'},
    'vaetfx.components.vae_report.executor': {'VaeReport'},
    # The drift check draws its histograms with the report's plotting code.
    'vaetfx.components.vae_report.plots': {'VaeReport', 'DriftCheck'},
    'vaetfx.flags': set(),
    'vaetfx.serving_commands': set(),
    'vaetfx.components.vae_report.component': set(),  # reached only through vaetfx.__getattr__
    'vaetfx.components.drift_check.component': set(),  # likewise
}


def edited_copy(module, directory):
  """A copy of `module`'s source with one more line: what a user's edit looks like."""
  path = os.path.join(str(directory), module.replace('.', '_') + '.py')
  shutil.copy(code_fingerprint.source_file(module), path)
  with open(path, 'a', encoding='utf-8') as f:
    f.write('\n# edited\n')
  return path


def with_edited(module, directory):
  """Patches the fingerprint's input so that `module` reads as edited."""
  path, source_file = edited_copy(module, directory), code_fingerprint.source_file
  return mock.patch.object(code_fingerprint, 'source_file',
                           lambda name: path if name == module else source_file(name))


@pytest.mark.parametrize('module', sorted(AFFECTED_BY))
def test_an_edit_changes_the_fingerprints_of_exactly_the_components_that_run_it(module, tmp_path):
  before = code_fingerprint.component_fingerprints()
  with with_edited(module, tmp_path):
    after = code_fingerprint.component_fingerprints()
  assert {c for c in COMPONENTS if before[c] != after[c]} == AFFECTED_BY[module]


def test_the_trainer_fingerprint_covers_the_model_code_it_imports():
  trainer = code_fingerprint.module_closure(*code_fingerprint.ENTRY_MODULES['Trainer'])
  assert {'vaetfx.models.trainer', 'vaetfx.models.vae', 'vaetfx.models.export',
          'vaetfx.models.hparams', 'vaetfx.shared.features'} <= set(trainer)
  assert not any(name.startswith('vaetfx.components') for name in trainer)


def _installed_copy(site_dir):
  """The package laid out as a non-editable install puts it: site-packages/vaetfx/..."""
  package_dir = os.path.join(site_dir, 'vaetfx')
  shutil.copytree(os.path.dirname(code_fingerprint.source_file('vaetfx')), package_dir,
                  ignore=shutil.ignore_patterns('__pycache__'))
  for folder in ('models', 'components', 'pipeline', 'serving', 'shared'):
    source = os.path.dirname(code_fingerprint.source_file(f'vaetfx.{folder}'))
    shutil.copytree(source, os.path.join(package_dir, folder),
                    ignore=shutil.ignore_patterns('__pycache__'))
  return package_dir


def _fingerprints_in(site_dir):
  script = ('import json; from vaetfx.pipeline import code_fingerprint as c; '
            'print(json.dumps([c.source_file("vaetfx.models.vae"), c.component_fingerprints()]))')
  # Run outside the repository, so that its folders are not on sys.path ahead of the copy.
  output = subprocess.run([sys.executable, '-c', script], check=True, capture_output=True,
                          text=True, cwd=site_dir, env={**os.environ, 'PYTHONPATH': site_dir}).stdout
  return json.loads(output)


def test_a_non_editable_install_fingerprints_its_own_files(tmp_path):
  """Same code, other place: same fingerprints; an edit there changes the right ones."""
  site_dir = str(tmp_path / 'site-packages')
  package_dir = _installed_copy(site_dir)
  vae_file, installed = _fingerprints_in(site_dir)
  assert vae_file == os.path.join(package_dir, 'models', 'vae.py')
  assert installed == code_fingerprint.component_fingerprints()

  with open(vae_file, 'a', encoding='utf-8') as f:
    f.write('\n# edited in site-packages\n')
  _, edited = _fingerprints_in(site_dir)
  assert {c for c in COMPONENTS if edited[c] != installed[c]} == AFFECTED_BY['vaetfx.models.vae']


def _exec_properties(pipeline):
  return {component.id: component.exec_properties for component in pipeline.components}


@pytest.fixture(scope='module')
def config(tmp_path_factory):
  return configs.PipelineConfig(data_dir='/data/mnist',
                                output_dir=str(tmp_path_factory.mktemp('out')))


def test_each_component_carries_its_fingerprint_in_its_execution_properties(config):
  from vaetfx.pipeline import local_runner  # pylint: disable=g-import-not-at-top
  fingerprints = code_fingerprint.component_fingerprints()
  properties = _exec_properties(local_runner.build_pipeline(config))
  for component in ('Transform', 'Trainer', 'AtomicPusher', 'VaeReport'):
    assert fingerprints[component] in json.dumps(properties[component]), component
  assert fingerprints['Evaluator'] in properties['Evaluator']['eval_config']
  assert fingerprints['MnistExampleGen'] in properties['MnistExampleGen']['custom_config']


def _compiled_tasks(tmp_path, name):
  from vaetfx.pipeline import kubeflow_runner  # pylint: disable=g-import-not-at-top
  kubeflow_config = configs.PipelineConfig(
      data_dir='gs://bucket/mnist', output_dir='', pipeline_root_uri='gs://bucket/root',
      push=configs.PushConfig(serving_dir='gs://bucket/serving'))
  job = kubeflow_runner.compile_pipeline(kubeflow_config, 'vaetfx:test',
                                         str(tmp_path / f'{name}.yaml'))
  spec = job['pipelineSpec']
  return {task: json.dumps([spec['root']['dag']['tasks'][task],
                            spec['components'][spec['root']['dag']['tasks'][task]
                                               ['componentRef']['name']]], sort_keys=True)
          for task in spec['root']['dag']['tasks']}


def test_the_compiled_kubeflow_spec_changes_where_the_code_changed(tmp_path):
  """KFP caches a task by its spec: an edit must change the spec of the tasks that run it."""
  before = _compiled_tasks(tmp_path, 'before')
  with with_edited('vaetfx.models.vae', tmp_path):
    after = _compiled_tasks(tmp_path, 'after')
  # The Pusher's provenance property names the Trainer's code fingerprint, so its task changes too.
  assert {task for task in before if before[task] != after[task]} == (
      AFFECTED_BY['vaetfx.models.vae'] | {'AtomicPusher'})

"""The Kubeflow runner: the compiled spec holds the local pipeline, its tasks run as pods would run
them, and the data components also run on Beam's portable runner.

No cluster exists here, so the tasks are run with the executor input KFP 2.x's
driver and launcher would give them (FakeKfp below, read from kubeflow/pipelines
backend/src/v2: driver.go, metadata/client.go, component/launcher_v2.go).
"""
import inspect
import os
import subprocess
import sys
import tempfile
from typing import Dict, List, Tuple

import kfp
import kfp_server_api
import numpy as np
import pytest
import yaml
from apache_beam.runners.portability import portable_runner
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx
from tfx.dsl.components.base import base_component, executor_spec
from tfx.orchestration import pipeline as tfx_pipeline
from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils
from tfx.types import standard_artifacts
from tfx.utils import name_utils

from tests import artifacts
from vaetfx import cli
from vaetfx.models import features
from vaetfx.pipeline import configs, kubeflow_entrypoint, kubeflow_runner, local_runner

REPO_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGE = 'registry.example.com/vaetfx:test'
REAL_CLIENT = kfp.Client
BUCKET = 'gs://vaetfx-test-bucket'
GPU = ('nvidia.com/gpu', 2)
BEAM_ARGS = ('--runner=DataflowRunner', '--region=europe-west4')
# step_builder.py compiles a latest-blessed-model Resolver into two tasks with these suffixes.
RESOLVER_TASK_SUFFIXES = ('-model-blessing-resolver', '-model-resolver')
TRANSFORM = 'Transform'


def _config(data_dir: str, beam_args=()) -> configs.PipelineConfig:
  return configs.PipelineConfig(data_dir=data_dir, output_dir='',
                                pipeline_root_uri=f'{BUCKET}/pipeline_root',
                                beam=configs.BeamConfig(extra_args=tuple(beam_args)),
                                push=configs.PushConfig(serving_dir=f'{BUCKET}/serving'))


def _parse_spec(spec_dict) -> pipeline_spec_pb2.PipelineSpec:
  """Strict parse: a field kfp's protos do not know fails the test."""
  return json_format.ParseDict(spec_dict, pipeline_spec_pb2.PipelineSpec())


def _deployment(spec: pipeline_spec_pb2.PipelineSpec) -> pipeline_spec_pb2.PipelineDeploymentConfig:
  return json_format.ParseDict(json_format.MessageToDict(spec.deployment_spec),
                               pipeline_spec_pb2.PipelineDeploymentConfig())


def _node_id(task_name: str) -> str:
  for suffix in RESOLVER_TASK_SUFFIXES:
    if task_name.endswith(suffix):
      return task_name[:-len(suffix)]
  return task_name


@pytest.fixture(scope='module')
def gpu_resources():
  return kubeflow_runner.trainer_resources(cpu=8, memory_gb=30, gpu_type=GPU[0], gpu_count=GPU[1])


@pytest.fixture(scope='module')
def compiled(tmp_path_factory, gpu_resources):
  """The pipeline compiled for a bucket, as .yaml (KFP 2.x) and .json (Vertex AI), and its DSL."""
  config = _config(f'{BUCKET}/mnist', BEAM_ARGS)
  out = tmp_path_factory.mktemp('compiled')
  packages = {suffix: str(out / f'pipeline{suffix}') for suffix in ('.yaml', '.json')}
  for package in packages.values():
    kubeflow_runner.compile_pipeline(config, IMAGE, package, gpu_resources)
  pipeline = kubeflow_runner.build_pipeline(config, gpu_resources)
  spec = _parse_spec(kubeflow_runner.load_spec(packages['.yaml']))
  return config, pipeline, spec, packages


def test_packages_parse_into_kfp_protos_with_the_pipeline_root(compiled):
  config, _, spec, packages = compiled
  with open(packages['.yaml'], encoding='utf-8') as f:
    [document] = list(yaml.safe_load_all(f))  # As kfp.Client reads a package.
  assert _parse_spec(document) == spec
  with open(packages['.json'], encoding='utf-8') as f:
    job = json_format.Parse(f.read(), pipeline_spec_pb2.PipelineJob())
  assert _parse_spec(json_format.MessageToDict(job.pipeline_spec)) == spec
  assert spec.pipeline_info.name == config.pipeline_name
  assert spec.schema_version == '2.1.0'
  assert spec.default_pipeline_root == config.pipeline_root
  assert job.runtime_config.gcs_output_directory == config.pipeline_root


def test_every_component_is_a_task_wired_as_in_the_pipeline(compiled):
  _, pipeline, spec, _ = compiled
  tasks = spec.root.dag.tasks
  assert {_node_id(name) for name in tasks} == {node.id for node in pipeline.components}
  for node in pipeline.components:
    if node.id not in tasks:  # A resolver: its two tasks are checked through their consumers.
      continue
    task = tasks[node.id]
    assert {_node_id(t) for t in task.dependent_tasks} == {up.id for up in node.upstream_nodes}
    for key, channel in node.inputs.items():
      producer = task.inputs.artifacts[key].task_output_artifact
      assert _node_id(producer.producer_task) == channel.producer_component_id
      assert producer.output_artifact_key == channel.output_key
    assert set(spec.components[task.component_ref.name].output_definitions.artifacts) == set(
        node.outputs)


def test_bulk_inferrer_scores_the_heldout_split_after_the_push_for_the_report(compiled):
  _, _, spec, _ = compiled
  tasks = spec.root.dag.tasks
  scorer = tasks['BulkInferrer']
  assert scorer.inputs.artifacts['model'].task_output_artifact.producer_task == 'Trainer'
  assert 'AtomicPusher' in scorer.dependent_tasks
  assert 'eval' in json_format.MessageToJson(scorer.inputs.parameters['data_spec'])
  report_input = tasks['VaeReport'].inputs.artifacts['scored_examples'].task_output_artifact
  assert (report_input.producer_task, report_input.output_artifact_key) == (
      'BulkInferrer', 'output_examples')


def test_every_component_runs_its_executor_in_the_image_through_the_entrypoint(compiled):
  config, pipeline, spec, _ = compiled
  executors = _deployment(spec).executors
  components = [node for node in pipeline.components
                if isinstance(node, base_component.BaseComponent)]
  assert components
  for node in components:
    container = executors[spec.components[node.id].executor_label].container
    assert container.image == IMAGE
    assert tuple(container.command) == kubeflow_runner.ENTRYPOINT_COMMAND
    args = list(container.args)
    executor_class = args[args.index('--executor_class_path') + 1]
    assert executor_class == name_utils.get_full_name(node.executor_spec.executor_class)
    assert args[args.index(kubeflow_entrypoint.INVOCATION_FLAG) + 1] == '{{$}}'
    assert kubeflow_entrypoint.INPUTS_SPEC_FLAG in args
    if isinstance(node.executor_spec, executor_spec.BeamExecutorSpec):
      assert args[-len(config.beam.pipeline_args()):] == config.beam.pipeline_args()


def test_only_the_trainer_container_asks_for_resources_and_gpus(compiled, gpu_resources):
  _, pipeline, spec, _ = compiled
  assert {node.id for node in pipeline.components
          if getattr(node, 'platform_config', None)} == {'Trainer'}
  executors = _deployment(spec).executors
  with_resources = {label: executor.container.resources for label, executor in executors.items()
                    if executor.container.HasField('resources')}
  assert with_resources == {spec.components['Trainer'].executor_label: gpu_resources}
  accelerator = gpu_resources.accelerator
  assert (accelerator.type, accelerator.count) == GPU


def test_trainer_resources_asks_for_gpus_only_when_counted():
  with_gpu = kubeflow_runner.trainer_resources(4, 16, 'NVIDIA_TESLA_T4', 1)
  assert (with_gpu.cpu_limit, with_gpu.memory_limit) == (4, 16)
  assert (with_gpu.accelerator.type, with_gpu.accelerator.count) == ('NVIDIA_TESLA_T4', 1)
  assert not kubeflow_runner.trainer_resources(4, 16, 'NVIDIA_TESLA_T4', 0).HasField('accelerator')


def test_no_path_of_the_build_machine_is_in_the_packages(compiled):
  _, _, _, packages = compiled
  machine_paths = {REPO_DIR, os.getcwd(), tempfile.gettempdir(), os.path.expanduser('~'),
                   sys.prefix, os.path.dirname(packages['.yaml'])}
  for package in packages.values():
    with open(package, encoding='utf-8') as f:
      text = f.read()
    assert not [path for path in machine_paths if path in text], package


class FakeKfp:
  """KFP 2.x's driver and launcher for one run, as far as a task's container sees them.

  The driver gives each task its constant parameters as parameterValues, its
  upstream artifacts as read back from ML Metadata (an id for a name, the
  executor's metadata plus display_name, and an empty type schema) and fresh
  output artifacts under the pipeline root; the launcher runs the container's
  command and records what the executor wrote to its output file.
  """

  def __init__(self, spec: pipeline_spec_pb2.PipelineSpec, root: str):
    self.spec = spec
    self.root = root
    self.executors = _deployment(spec).executors
    self.recorded: Dict[Tuple[str, str], pipeline_spec_pb2.RuntimeArtifact] = {}

  def component(self, task_name: str) -> pipeline_spec_pb2.ComponentSpec:
    return self.spec.components[self.spec.root.dag.tasks[task_name].component_ref.name]

  def executor_input(self, task_name: str) -> pipeline_spec_pb2.ExecutorInput:
    task = self.spec.root.dag.tasks[task_name]
    executor_input = pipeline_spec_pb2.ExecutorInput()
    for name, parameter in task.inputs.parameters.items():
      executor_input.inputs.parameter_values[name].CopyFrom(parameter.runtime_value.constant)
    for name, artifact in task.inputs.artifacts.items():
      producer = artifact.task_output_artifact
      executor_input.inputs.artifacts[name].artifacts.append(
          self.recorded[(producer.producer_task, producer.output_artifact_key)])
    for name, definition in self.component(task_name).output_definitions.artifacts.items():
      executor_input.outputs.artifacts[name].artifacts.add(
          uri=f'{self.root}/{task_name}/{name}', type=definition.artifact_type,
          metadata=definition.metadata)
    executor_input.outputs.output_file = os.path.join(
        self.root, task_name, 'kfp_outputs', 'output_metadata.json')
    return executor_input

  def command_line(self, task_name: str, executor_input) -> List[str]:
    """The container's command and arguments with {{$}} resolved; `python` is this venv's."""
    container = self.executors[self.component(task_name).executor_label].container
    argv = [*container.command, *container.args]
    argv[0] = sys.executable if argv[0] == 'python' else argv[0]
    return [json_format.MessageToJson(executor_input) if arg == '{{$}}' else arg for arg in argv]

  def record(self, task_name: str, key: str, uri: str, metadata: Dict) -> None:
    """An output as the driver reads it back from ML Metadata for the tasks that consume it."""
    artifact = pipeline_spec_pb2.RuntimeArtifact(uri=uri, name=str(len(self.recorded) + 1))
    artifact.metadata.update({**metadata, 'display_name': key})
    artifact.type.instance_schema = ''
    self.recorded[(task_name, key)] = artifact

  def record_outputs(self, task_name: str, executor_input) -> None:
    with open(executor_input.outputs.output_file, encoding='utf-8') as f:
      executor_output = json_format.Parse(f.read(), pipeline_spec_pb2.ExecutorOutput())
    for key, provisioned in executor_input.outputs.artifacts.items():
      [produced] = executor_output.artifacts[key].artifacts
      self.record(task_name, key, provisioned.artifacts[0].uri,
                  json_format.MessageToDict(produced.metadata))


def _upstream_tasks(spec: pipeline_spec_pb2.PipelineSpec, task_name: str) -> List[str]:
  """`task_name` and every task it depends on, each after its own dependencies."""
  order: List[str] = []

  def visit(name):
    for dependency in spec.root.dag.tasks[name].dependent_tasks:
      if dependency not in order:
        visit(dependency)
    order.append(name)

  visit(task_name)
  return order


def _run_in_process(argv: List[str]) -> None:
  """The entrypoint in this process: absl's app.run ends with sys.exit."""
  with pytest.raises(SystemExit) as exit_info:
    kubeflow_entrypoint.main(argv[len(kubeflow_runner.ENTRYPOINT_COMMAND):])
  assert not exit_info.value.code


def _run_in_a_pod_like_process(argv: List[str], cwd: str) -> None:
  env = dict(os.environ, TF_USE_LEGACY_KERAS='1')  # As the image's ENV sets it.
  result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
                          check=False)
  assert result.returncode == 0, result.stderr[-5000:]


@pytest.fixture(scope='module')
def kfp_run(tmp_path_factory, mnist_idx_dir):
  """Runs Transform and the tasks it needs as KFP would; ExampleGen and Transform as processes."""
  out = tmp_path_factory.mktemp('kfp_run')
  job = kubeflow_runner.compile_pipeline(_config(mnist_idx_dir), IMAGE, str(out / 'pipeline.yaml'))
  spec = _parse_spec(job['pipelineSpec'])
  kfp = FakeKfp(spec, str(out / 'pipeline_root'))
  example_gen = spec.root.dag.tasks[TRANSFORM].inputs.artifacts['examples'].task_output_artifact
  as_processes = {example_gen.producer_task, TRANSFORM}
  inputs = {}
  for task_name in _upstream_tasks(spec, TRANSFORM):
    inputs[task_name] = kfp.executor_input(task_name)
    argv = kfp.command_line(task_name, inputs[task_name])
    if task_name in as_processes:
      _run_in_a_pod_like_process(argv, cwd=str(out))
    else:
      _run_in_process(argv)
    kfp.record_outputs(task_name, inputs[task_name])
  return kfp, inputs, example_gen.producer_task


def test_example_gen_task_writes_both_splits(kfp_run, mnist_splits):
  kfp, inputs, example_gen = kfp_run
  assert not inputs[example_gen].inputs.artifacts
  uri = kfp.recorded[(example_gen, 'examples')].uri
  for split in (features.TRAIN_SPLIT, features.EVAL_SPLIT):
    examples = artifacts.read_examples(uri, split)
    assert len(examples) == len(mnist_splits[split][1])
    assert len(examples[0].features.feature[features.IMAGE_KEY].int64_list.value) == (
        features.NUM_PIXELS)
  assert '"train"' in kfp.recorded[(example_gen, 'examples')].metadata['split_names']


def test_transform_task_got_untyped_inputs_and_wrote_graph_and_binarized_examples(kfp_run):
  kfp, inputs, _ = kfp_run
  assert all(not a.artifacts[0].type.instance_schema
             for a in inputs[TRANSFORM].inputs.artifacts.values())
  graph_uri = kfp.recorded[(TRANSFORM, 'transform_graph')].uri
  assert os.path.isfile(os.path.join(graph_uri, 'transform_fn', 'saved_model.pb'))
  assert os.path.isdir(os.path.join(graph_uri, 'transformed_metadata'))
  transformed = artifacts.read_examples(kfp.recorded[(TRANSFORM, 'transformed_examples')].uri,
                                        features.EVAL_SPLIT)
  pixels = np.array([e.features.feature[features.PIXELS_KEY].float_list.value
                     for e in transformed])
  assert pixels.shape[1] == features.NUM_PIXELS
  assert set(np.unique(pixels)) == {0.0, 1.0}


def test_entrypoint_gives_kfp_untyped_inputs_the_types_tfx_needs(compiled):
  _, _, spec, _ = compiled
  kfp = FakeKfp(spec, f'{BUCKET}/pipeline_root')
  for name, artifact in spec.root.dag.tasks[TRANSFORM].inputs.artifacts.items():
    producer = artifact.task_output_artifact
    kfp.record(producer.producer_task, producer.output_artifact_key, f'{BUCKET}/{name}', {})
  argv = kfp.command_line(TRANSFORM, kfp.executor_input(TRANSFORM))
  invocation = argv[argv.index(kubeflow_entrypoint.INVOCATION_FLAG) + 1]
  inputs_spec = argv[argv.index(kubeflow_entrypoint.INPUTS_SPEC_FLAG) + 1]
  untyped = json_format.Parse(invocation, pipeline_spec_pb2.ExecutorInput())
  with pytest.raises(AttributeError):  # TFX 1.16 reads the class from the empty schema.
    kubeflow_v2_entrypoint_utils.parse_raw_artifact_dict(untyped.inputs.artifacts)
  restored = json_format.Parse(kubeflow_entrypoint.restore_input_types(invocation, inputs_spec),
                               pipeline_spec_pb2.ExecutorInput())
  parsed = kubeflow_v2_entrypoint_utils.parse_raw_artifact_dict(restored.inputs.artifacts)
  assert isinstance(parsed['examples'][0], standard_artifacts.Examples)
  assert isinstance(parsed['schema'][0], standard_artifacts.Schema)
  assert parsed['examples'][0].uri == f'{BUCKET}/examples'
  assert restored.inputs.parameter_values == untyped.inputs.parameter_values


def _with_upstream(node) -> List:
  """`node` and every node it depends on: the part of the pipeline a partial run to it runs."""
  nodes, stack = {}, [node]
  while stack:
    current = stack.pop()
    nodes[current.id] = current
    stack.extend(up for up in current.upstream_nodes if up.id not in nodes)
  return list(nodes.values())


def test_data_components_run_on_beams_portable_runner(tmp_path, mnist_idx_dir, monkeypatch):
  portable_runs = []
  run_pipeline = portable_runner.PortableRunner.run_pipeline

  def counted(self, pipeline, options):
    portable_runs.append(pipeline)
    return run_pipeline(self, pipeline, options)

  monkeypatch.setattr(portable_runner.PortableRunner, 'run_pipeline', counted)
  beam = configs.BeamConfig(extra_args=(
      '--runner=PortableRunner', '--job_endpoint=embed', '--environment_type=LOOPBACK'))
  config = configs.PipelineConfig(data_dir=mnist_idx_dir, output_dir=str(tmp_path), beam=beam)
  pipeline = local_runner.build_pipeline(config)
  # A partial run: Transform and what it needs, the pipeline's data components.
  tfx.orchestration.LocalDagRunner().run(pipeline, run_options=tfx_pipeline.RunOptions(
      to_nodes=[TRANSFORM]))

  needed = _with_upstream(next(c for c in pipeline.components if c.id == TRANSFORM))
  store = metadata_store.MetadataStore(
      tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path))
  executions = store.get_executions()
  assert len(executions) == len(needed)
  beam_components = [c for c in needed
                     if isinstance(c.executor_spec, executor_spec.BeamExecutorSpec)]
  assert len(portable_runs) >= len(beam_components) >= 3
  assert all(e.last_known_state == metadata_store_pb2.Execution.COMPLETE for e in executions)
  [transformed] = [a for a in store.get_artifacts_by_type('Examples')
                   if f'{os.sep}{TRANSFORM}{os.sep}' in a.uri]
  assert artifacts.read_examples(transformed.uri, features.TRAIN_SPLIT)


def _compile_args(tmp_path, *extra) -> List[str]:
  return ['compile-kubeflow', '--image', IMAGE, '--pipeline-root', f'{BUCKET}/root',
          '--serving-dir', f'{BUCKET}/serving', '--data-root', f'{BUCKET}/mnist',
          '--output', str(tmp_path / 'vae.yaml'), *extra]


def test_compile_kubeflow_command_writes_the_spec_with_the_flags(tmp_path, capsys):
  assert cli.main(_compile_args(tmp_path, '--gpu-type', 'NVIDIA_TESLA_T4', '--gpu-count', '1',
                                '--beam-arg=--runner=FlinkRunner')) == 0
  spec = _parse_spec(kubeflow_runner.load_spec(str(tmp_path / 'vae.yaml')))
  assert spec.default_pipeline_root == f'{BUCKET}/root'
  executors = _deployment(spec).executors
  assert '--runner=FlinkRunner' in executors['Transform_executor'].container.args
  assert str(tmp_path / 'vae.yaml') in capsys.readouterr().out


def _refused_tasks(spec) -> List[str]:
  executors = _deployment(spec).executors
  return sorted(name for name, task in spec.root.dag.tasks.items()
                if executors[spec.components[task.component_ref.name].executor_label]
                .WhichOneof('spec') not in ('container', 'importer'))


def test_kfp_spec_has_no_task_kfp_refuses_and_says_the_gate_is_floor_only(tmp_path, capsys):
  assert cli.main(_compile_args(tmp_path)) == 0
  spec = _parse_spec(kubeflow_runner.load_spec(str(tmp_path / 'vae.yaml')))
  assert _refused_tasks(spec) == []
  assert not [name for name in spec.root.dag.tasks if name.endswith(RESOLVER_TASK_SUFFIXES)]
  printed = capsys.readouterr().err
  assert 'gates on the ELBO floor only' in printed and 'warning:' not in printed


def test_vertex_spec_keeps_the_baseline_resolver_and_warns_kfp_users(tmp_path, capsys):
  args = _compile_args(tmp_path)
  args[args.index('--output') + 1] = str(tmp_path / 'vae.json')
  assert cli.main(args) == 0
  with open(tmp_path / 'vae.json') as f:
    spec = json_format.Parse(f.read(), pipeline_spec_pb2.PipelineJob()).pipeline_spec
  refused = _refused_tasks(_parse_spec(json_format.MessageToDict(spec)))
  assert refused and all(name.endswith(RESOLVER_TASK_SUFFIXES) for name in refused)
  warning = capsys.readouterr().err
  assert all(name in warning for name in refused)


def test_compile_kubeflow_defaults_to_the_ignored_build_folder(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  args = _compile_args(tmp_path)
  del args[args.index('--output'):args.index('--output') + 2]
  assert cli.main(args) == 0
  assert os.path.isfile(tmp_path / kubeflow_runner.DEFAULT_PACKAGE)
  with open(os.path.join(REPO_DIR, '.gitignore'), encoding='utf-8') as f:
    ignored = f.read().split()
  assert kubeflow_runner.DEFAULT_PACKAGE.split(os.sep)[0] + '/' in ignored


@pytest.mark.parametrize('flag, value', [
    ('--pipeline-root', '/local/pipeline_root'),
    ('--data-root', 'relative/mnist'),
    ('--gpu-count', '-1'),
    ('--trainer-memory', '0'),
    ('--output', 'pipeline.txt'),
])
def test_compile_kubeflow_rejects_bad_flags(tmp_path, flag, value, capsys):
  args = _compile_args(tmp_path)
  if flag in args:
    args[args.index(flag) + 1] = value
  else:
    args += [flag, value]
  with pytest.raises(SystemExit) as exit_info:
    cli.main(args)
  assert exit_info.value.code == 2
  assert value in capsys.readouterr().err


class FakeClient:
  """Records what `vaetfx submit` asks of kfp.Client, checked against the real signatures;
  `refusal` makes the API refuse the run."""
  instances: List['FakeClient'] = []
  refusal = None

  def __init__(self, **kwargs):
    inspect.signature(REAL_CLIENT).bind(**kwargs)
    self.init_kwargs = kwargs
    self.runs = []
    FakeClient.instances.append(self)

  def create_run_from_pipeline_package(self, pipeline_file, **kwargs):
    inspect.signature(REAL_CLIENT.create_run_from_pipeline_package).bind(
        self, pipeline_file, **kwargs)
    self.runs.append((pipeline_file, kwargs))
    if self.refusal:
      raise self.refusal
    return type('RunPipelineResult', (), {'run_id': 'run-42'})()


@pytest.fixture
def fake_client(monkeypatch):
  monkeypatch.setattr(FakeClient, 'instances', [])
  monkeypatch.setattr(kfp, 'Client', FakeClient)
  return FakeClient


def test_submit_starts_a_run_of_the_package_at_its_pipeline_root(compiled, fake_client, capsys):
  config, _, _, packages = compiled
  assert cli.main(['submit', '--host', 'http://localhost:8080', '--package', packages['.yaml'],
                   '--experiment', 'nightly', '--run-name', 'vae-1', '--namespace', 'team']) == 0
  [client] = fake_client.instances
  assert client.init_kwargs == {'host': 'http://localhost:8080'}
  assert client.runs == [(packages['.yaml'], dict(
      experiment_name='nightly', run_name='vae-1', namespace='team',
      pipeline_root=config.pipeline_root))]
  assert 'run-42' in capsys.readouterr().out


def test_submit_defaults_to_the_compiled_package_and_the_pipeline_experiment(
    compiled, fake_client, tmp_path, monkeypatch):
  _, _, _, packages = compiled
  monkeypatch.chdir(tmp_path)
  os.makedirs(os.path.dirname(kubeflow_runner.DEFAULT_PACKAGE))
  with open(packages['.yaml'], encoding='utf-8') as src, open(
      kubeflow_runner.DEFAULT_PACKAGE, 'w', encoding='utf-8') as dst:
    dst.write(src.read())
  assert cli.main(['submit', '--host', 'http://kfp']) == 0
  [(package, kwargs)] = fake_client.instances[0].runs
  assert package == kubeflow_runner.DEFAULT_PACKAGE
  assert kwargs['experiment_name'] == configs.PIPELINE_NAME
  assert kwargs['run_name'] is None


def test_submit_reports_a_refused_run(compiled, fake_client, monkeypatch, capsys):
  _, _, _, packages = compiled
  refusal = kfp_server_api.ApiException(status=400, reason='Bad Request')
  refusal.body = '{"error": "resolver executors not implemented"}'
  monkeypatch.setattr(fake_client, 'refusal', refusal)
  assert cli.main(['submit', '--host', 'http://kfp', '--package', packages['.yaml']]) == 1
  assert 'resolver executors not implemented' in capsys.readouterr().err


@pytest.mark.parametrize('package, message', [
    ('missing.yaml', 'compile-kubeflow first'),
    ('pipeline.json', 'Vertex AI'),
])
def test_submit_refuses_what_kfp_cannot_run(fake_client, tmp_path, package, message, capsys):
  path = tmp_path / package
  if package.endswith('.json'):
    path.write_text('{}')
  assert cli.main(['submit', '--host', 'http://kfp', '--package', str(path)]) == 2
  assert message in capsys.readouterr().err
  assert not fake_client.instances

"""The Kubeflow runner: the compiled spec holds the local pipeline, its tasks run as pods would run
them, and the data components also run on Beam's portable runner.

No cluster exists here, so the tasks are run with the executor input KFP 2.x's
driver and launcher would give them (FakeKfp below, read from kubeflow/pipelines
backend/src/v2: driver.go, metadata/client.go, component/launcher_v2.go).
"""
import concurrent.futures
import dataclasses
import inspect
import itertools
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Tuple

import kfp
import kfp_server_api
import numpy as np
import pytest
import yaml
from PIL import Image
from apache_beam.runners.portability import portable_runner
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx
from tfx.dsl.components.base import base_beam_executor, base_component, executor_spec
from tfx.orchestration import pipeline as tfx_pipeline
from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils
from tfx.types import standard_artifacts
from tfx.utils import name_utils

from tests import artifacts, gcs_emulator, model_fixtures
from vaetfx import cli
from vaetfx.pipeline import (configs, kubeflow_entrypoint, kubeflow_runner, local_runner,
                             run_summary)
from vaetfx.shared import features

REPO_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGE = 'registry.example.com/vaetfx:test'
REAL_CLIENT = kfp.Client
BUCKET = f'gs://{gcs_emulator.TEST_BUCKET}'
GPU = ('nvidia.com/gpu', 2)
BEAM_ARGS = ('--runner=DataflowRunner', '--region=europe-west4')
TRANSFORM = 'Transform'
EXAMPLE_GEN = 'MnistExampleGen'
E2E_HPARAMS = dataclasses.replace(model_fixtures.TINY_HPARAMS, epochs=1)
# Any trained model passes it: the end-to-end run checks the path to a push, not model quality.
E2E_ELBO_FLOOR = -1e6
SERVE_PORT = 8500  # Free: the server listens inside the emulator's own network namespace.


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
  assert set(tasks) == {node.id for node in pipeline.components}
  for node in pipeline.components:
    task = tasks[node.id]
    assert set(task.dependent_tasks) == {up.id for up in node.upstream_nodes}
    for key, channel in node.inputs.items():
      producer = task.inputs.artifacts[key].task_output_artifact
      assert producer.producer_task == channel.producer_component_id
      assert producer.output_artifact_key == channel.output_key
    assert set(spec.components[task.component_ref.name].output_definitions.artifacts) == set(
        node.outputs)


def test_bulk_inferrer_scores_the_heldout_split_after_the_push_for_the_report(compiled):
  _, _, spec, _ = compiled
  tasks = spec.root.dag.tasks
  scorer = tasks['BulkInferrer']
  assert scorer.inputs.artifacts['model'].task_output_artifact.producer_task == 'Trainer'
  assert 'AtomicPusher' in scorer.dependent_tasks
  assert 'eval' in json_format.MessageToJson(scorer.inputs.parameters['split'])
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
      beam_args = config.beam.pipeline_args()
      assert args[len(args) - len(beam_args):] == beam_args


def test_infra_validator_runs_through_the_entrypoint_and_gates_the_pusher(compiled):
  """On Kubeflow the infra validator runs as locally: its executor in the image, its
  InfraBlessing wired into the Pusher, which takes its model from that blessing."""
  _, _, spec, _ = compiled
  container = _deployment(spec).executors[
      spec.components['ServingInfraValidator'].executor_label].container
  assert tuple(container.command) == kubeflow_runner.ENTRYPOINT_COMMAND
  args = list(container.args)
  assert args[args.index('--executor_class_path') + 1] == (
      'vaetfx.components.serving_infra_validator.executor.Executor')
  pusher_inputs = spec.root.dag.tasks['AtomicPusher'].inputs.artifacts
  # No `model`: the blessing's copy is pushed; the evaluation, the examples, the trained
  # examples (their spans) and the base model (the version its training started from) tell
  # its story.
  assert set(pusher_inputs) == {'model_blessing', 'infra_blessing', 'model_evaluation',
                                'examples', 'train_examples', 'base_model'}
  assert pusher_inputs['base_model'].task_output_artifact.producer_task == 'WarmStartBase'
  assert pusher_inputs['infra_blessing'].task_output_artifact.producer_task == (
      'ServingInfraValidator')


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
  command and records what the executor wrote to its output file, a local
  file of the pod (/tmp/kfp_outputs/ on KFP), here under `outputs_dir`.

  vertex=True is Vertex AI's backend instead: input artifacts keep their type.
  """

  def __init__(self, spec: pipeline_spec_pb2.PipelineSpec, root: str, outputs_dir: str,
               vertex: bool = False):
    self.spec = spec
    self.root = root
    self.outputs_dir = outputs_dir
    self.vertex = vertex
    self.executors = _deployment(spec).executors
    self.recorded: Dict[Tuple[str, str], pipeline_spec_pb2.RuntimeArtifact] = {}
    self.types: Dict[Tuple[str, str], pipeline_spec_pb2.ArtifactTypeSchema] = {}

  def component(self, task_name: str) -> pipeline_spec_pb2.ComponentSpec:
    return self.spec.components[self.spec.root.dag.tasks[task_name].component_ref.name]

  def input_artifact(self, producer) -> pipeline_spec_pb2.RuntimeArtifact:
    """An upstream output as this backend hands it over: untyped on KFP, typed on Vertex AI."""
    key = (producer.producer_task, producer.output_artifact_key)
    artifact = pipeline_spec_pb2.RuntimeArtifact()
    artifact.CopyFrom(self.recorded[key])
    if self.vertex:
      artifact.type.CopyFrom(self.types[key])
    return artifact

  def executor_input(self, task_name: str) -> pipeline_spec_pb2.ExecutorInput:
    task = self.spec.root.dag.tasks[task_name]
    executor_input = pipeline_spec_pb2.ExecutorInput()
    for name, parameter in task.inputs.parameters.items():
      executor_input.inputs.parameter_values[name].CopyFrom(parameter.runtime_value.constant)
    for name, artifact in task.inputs.artifacts.items():
      executor_input.inputs.artifacts[name].artifacts.append(
          self.input_artifact(artifact.task_output_artifact))
    for name, definition in self.component(task_name).output_definitions.artifacts.items():
      executor_input.outputs.artifacts[name].artifacts.add(
          uri=f'{self.root}/{task_name}/{name}', type=definition.artifact_type,
          metadata=definition.metadata)
    executor_input.outputs.output_file = os.path.join(
        self.outputs_dir, task_name, 'output_metadata.json')
    return executor_input

  def command_line(self, task_name: str, executor_input) -> List[str]:
    """The container's command and arguments with {{$}} resolved; `python` is this venv's."""
    container = self.executors[self.component(task_name).executor_label].container
    argv = [*container.command, *container.args]
    argv[0] = sys.executable if argv[0] == 'python' else argv[0]
    return [json_format.MessageToJson(executor_input) if arg == '{{$}}' else arg for arg in argv]

  def record(self, task_name: str, key: str, uri: str, metadata: Dict) -> None:
    """An output as the driver reads it back from ML Metadata for the tasks that consume it."""
    artifact = pipeline_spec_pb2.RuntimeArtifact(uri=uri, name=str(next(_ARTIFACT_IDS)))
    artifact.metadata.update({**metadata, 'display_name': key})
    artifact.type.instance_schema = ''
    self.recorded[(task_name, key)] = artifact
    self.types[(task_name, key)] = (
        self.component(task_name).output_definitions.artifacts[key].artifact_type)

  def record_outputs(self, task_name: str, executor_input) -> None:
    with open(executor_input.outputs.output_file, encoding='utf-8') as f:
      executor_output = json_format.Parse(f.read(), pipeline_spec_pb2.ExecutorOutput())
    for key, provisioned in executor_input.outputs.artifacts.items():
      [produced] = executor_output.artifacts[key].artifacts
      self.record(task_name, key, provisioned.artifacts[0].uri,
                  json_format.MessageToDict(produced.metadata))


_ARTIFACT_IDS = itertools.count(1)  # Artifact ids of ML Metadata: unique across the test runs.


def _dependencies(task: pipeline_spec_pb2.PipelineTaskSpec) -> set:
  """The tasks `task` waits for: its dependent_tasks and the producers of its inputs."""
  return set(task.dependent_tasks) | {
      artifact.task_output_artifact.producer_task for artifact in task.inputs.artifacts.values()}


def _upstream_tasks(spec: pipeline_spec_pb2.PipelineSpec, task_name: str) -> List[str]:
  """`task_name` and every task it depends on, each after its own dependencies."""
  order: List[str] = []

  def visit(name):
    for dependency in sorted(_dependencies(spec.root.dag.tasks[name])):
      if dependency not in order:
        visit(dependency)
    order.append(name)

  visit(task_name)
  return order


def _run_dag(kfp: 'FakeKfp', task_names: List[str], run_task: Callable[[str], None]) -> None:
  """Runs `task_names` as KFP's DAG driver does: each once its dependencies are done, two at a
  time (independent tasks run side by side on a cluster too); the first failure stops it."""
  tasks = kfp.spec.root.dag.tasks
  done, running = set(), {}
  with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
    while len(done) < len(task_names):
      for name in task_names:
        if name not in done and name not in running and _dependencies(tasks[name]) <= done:
          running[name] = pool.submit(run_task, name)
      finished, _ = concurrent.futures.wait(
          running.values(), return_when=concurrent.futures.FIRST_COMPLETED)
      for name in [n for n, future in running.items() if future in finished]:
        running.pop(name).result()
        done.add(name)


@dataclasses.dataclass
class KfpRun:
  """One run of a compiled spec on the emulated bucket: what each task got and produced."""
  kfp: FakeKfp
  gcs: gcs_emulator.GcsNamespace
  config: configs.PipelineConfig
  inputs: Dict[str, pipeline_spec_pb2.ExecutorInput]
  logs: Dict[str, str]
  work_dir: str
  seconds: Dict[str, float] = dataclasses.field(default_factory=dict)

  def run_task(self, task_name: str) -> None:
    """The task's container command in the bucket's namespace, as a pod runs it."""
    executor_input = self.kfp.executor_input(task_name)
    self.inputs[task_name] = executor_input
    argv = self.gcs.command(self.kfp.command_line(task_name, executor_input))
    env = dict(os.environ, TF_USE_LEGACY_KERAS='1', **self.gcs.environment())  # As the image.
    start = time.perf_counter()
    result = subprocess.run(argv, cwd=self.work_dir, env=env, capture_output=True, text=True,
                            timeout=600, check=False)
    self.seconds[task_name] = time.perf_counter() - start
    self.logs[task_name] = result.stderr
    assert result.returncode == 0, (f'{task_name} failed:\n{result.stderr[-6000:]}\n'
                                    f'GCS emulator errors:\n{self.gcs.errors()[-3000:]}')
    self.kfp.record_outputs(task_name, executor_input)

  def uri(self, task_name: str, key: str) -> str:
    return self.kfp.recorded[(task_name, key)].uri

  def local(self, task_name: str, key: str) -> str:
    """Where the emulator keeps the output artifact's objects, to read them from outside."""
    return self.gcs.local_path(self.uri(task_name, key))


def _children_cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime


def _e2e_config() -> configs.PipelineConfig:
  """The bucket's pipeline as compile-kubeflow makes it for KFP 2.x, with a tiny model, one
  epoch, and a floor any trained model passes."""
  return dataclasses.replace(
      _config(f'{BUCKET}/mnist'), hparams=E2E_HPARAMS,
      gate=configs.GateConfig(score_floor=E2E_ELBO_FLOOR),
      report=configs.ReportConfig(likelihood_examples=20, likelihood_samples=10))


@pytest.fixture(scope='module')
def kfp_run(tmp_path_factory, mnist_idx_dir, gcs):
  """Every task of the .yaml spec, as KFP 2.x runs it, with the pipeline root, the data and the
  serving directory in the emulated bucket."""
  work_dir = tmp_path_factory.mktemp('kfp_run')
  config = _e2e_config()
  job = kubeflow_runner.compile_pipeline(config, IMAGE, str(work_dir / 'pipeline.yaml'))
  shutil.copytree(mnist_idx_dir, gcs.local_path(config.data_dir))  # An upload to the bucket.
  spec = _parse_spec(job['pipelineSpec'])
  run = KfpRun(FakeKfp(spec, f'{BUCKET}/pipeline_root', str(work_dir / 'kfp_outputs')), gcs,
               config, {}, {}, str(work_dir))
  cpu_start = _children_cpu_seconds()
  _run_dag(run.kfp, list(spec.root.dag.tasks), run.run_task)
  print('KFP tasks on the emulated bucket, seconds:', {k: round(v) for k, v in run.seconds.items()},
        f'CPU seconds of all tasks: {_children_cpu_seconds() - cpu_start:.0f}')
  return run


def test_example_gen_task_read_the_bucket_and_wrote_both_splits(kfp_run, mnist_splits):
  assert not kfp_run.inputs[EXAMPLE_GEN].inputs.artifacts
  assert kfp_run.uri(EXAMPLE_GEN, 'examples').startswith(f'{BUCKET}/pipeline_root/')
  local = kfp_run.local(EXAMPLE_GEN, 'examples')
  for split in (features.TRAIN_SPLIT, features.EVAL_SPLIT):
    examples = artifacts.read_examples(local, split)
    assert len(examples) == len(mnist_splits[split][1])
    assert len(examples[0].features.feature[features.IMAGE_KEY].int64_list.value) == (
        features.NUM_PIXELS)
  assert '"train"' in kfp_run.kfp.recorded[(EXAMPLE_GEN, 'examples')].metadata['split_names']


def test_transform_task_got_untyped_inputs_and_wrote_graph_and_binarized_examples(kfp_run):
  assert all(not a.artifacts[0].type.instance_schema
             for a in kfp_run.inputs[TRANSFORM].inputs.artifacts.values())
  graph = kfp_run.local(TRANSFORM, 'transform_graph')
  assert os.path.isfile(os.path.join(graph, 'transform_fn', 'saved_model.pb'))
  assert os.path.isdir(os.path.join(graph, 'transformed_metadata'))
  transformed = artifacts.read_examples(kfp_run.local(TRANSFORM, 'transformed_examples'),
                                        features.EVAL_SPLIT)
  pixels = np.array([e.features.feature[features.PIXELS_KEY].float_list.value
                     for e in transformed])
  assert pixels.shape[1] == features.NUM_PIXELS
  assert set(np.unique(pixels)) == {0.0, 1.0}


def test_trainer_task_wrote_the_model_and_its_run_to_the_bucket(kfp_run):
  model = kfp_run.local('Trainer', 'model')
  assert os.path.isfile(os.path.join(model, 'Format-Serving', 'saved_model.pb'))
  with open(os.path.join(kfp_run.local('Trainer', 'model_run'), 'history.json')) as f:
    assert len(json.load(f)['epochs']) == E2E_HPARAMS.epochs


def test_evaluator_task_blessed_the_model_by_the_floor_alone_with_nothing_served(kfp_run):
  baseline = kfp_run.kfp.recorded[('ServedModelImporter', 'baseline_model')]
  assert baseline.metadata['served_version'] == -1
  empty = kfp_run.local('ServedModelImporter', 'baseline_model')
  assert not os.path.exists(empty) or not os.listdir(empty)  # A bucket keeps no empty folder.
  elbos = run_summary.overall_mean_elbo(kfp_run.local('Evaluator', 'evaluation'))
  assert set(elbos) == {''}  # No baseline in the evaluation.
  blessing = kfp_run.kfp.recorded[('Evaluator', 'blessing')]
  assert blessing.metadata['blessed'] == 1
  assert os.path.isfile(os.path.join(kfp_run.local('Evaluator', 'blessing'), 'BLESSED'))
  assert blessing.metadata['current_model_id'] == kfp_run.kfp.recorded[('Trainer', 'model')].name


def test_report_task_wrote_its_pictures_to_the_bucket(kfp_run):
  report = kfp_run.local('VaeReport', 'report')
  pngs = sorted(name for name in os.listdir(report) if name.endswith('.png'))
  assert len(pngs) >= 4
  for name in pngs:
    with Image.open(os.path.join(report, name)) as image:
      assert image.format == 'PNG' and image.width > 100
  with open(os.path.join(report, 'index.html')) as f:
    page = f.read()
  assert all(f'<img src="{name}"' in page for name in pngs)


def test_pusher_task_pushed_one_whole_version_to_the_bucket(kfp_run):
  model_dir = f'{kfp_run.config.serving_dir}/{kfp_run.config.push.model_name}'
  local = kfp_run.gcs.local_path(model_dir)
  [version] = kfp_run.gcs.listdir(model_dir)
  assert re.fullmatch('[0-9]+', version)
  assert os.path.isfile(os.path.join(local, version, 'saved_model.pb'))
  assert os.path.isdir(os.path.join(local, version, 'variables'))
  pushed = kfp_run.kfp.recorded[('AtomicPusher', 'pushed_model')]
  assert pushed.metadata['pushed'] == 1


SECOND_RUN_TASKS = ('ServedModelImporter', 'Evaluator', 'AtomicPusher')


@pytest.fixture(scope='module')
def vertex_run(kfp_run, tmp_path_factory):
  """The .json spec, as Vertex AI runs it, after the KFP run: its ServedModelImporter finds what
  that run pushed to the bucket, its Evaluator compares with it, its Pusher finds it served.

  The tasks before them are the .yaml spec's, unchanged (checked), so their outputs in the
  bucket stand for this run's too.
  """
  work_dir = tmp_path_factory.mktemp('vertex_run')
  job = kubeflow_runner.compile_pipeline(kfp_run.config, IMAGE, str(work_dir / 'pipeline.json'))
  spec = _parse_spec(job['pipelineSpec'])
  kfp = FakeKfp(spec, f'{BUCKET}/vertex_root', str(work_dir / 'outputs'), vertex=True)
  run = KfpRun(kfp, kfp_run.gcs, kfp_run.config, {}, {}, str(work_dir))
  for task_name in _upstream_tasks(spec, 'AtomicPusher'):
    if task_name in SECOND_RUN_TASKS:
      run.run_task(task_name)
      continue
    assert spec.components[task_name] == kfp_run.kfp.spec.components[task_name]
    assert _deployment(spec).executors[spec.components[task_name].executor_label] == (
        kfp_run.kfp.executors[spec.components[task_name].executor_label])
    for key in spec.components[task_name].output_definitions.artifacts:
      kfp.recorded[(task_name, key)] = kfp_run.kfp.recorded[(task_name, key)]
      kfp.types[(task_name, key)] = kfp_run.kfp.types[(task_name, key)]
  return run


def test_a_second_run_gates_against_the_served_version_in_the_bucket(kfp_run, vertex_run):
  run = vertex_run
  model_dir = f'{kfp_run.config.serving_dir}/{kfp_run.config.push.model_name}'
  [version] = kfp_run.gcs.listdir(model_dir)
  baseline = run.kfp.recorded[('ServedModelImporter', 'baseline_model')]
  assert baseline.metadata['served_version'] == int(version)
  story = json.loads(baseline.metadata['provenance'])
  assert story['pipeline_name'] == kfp_run.config.pipeline_name
  evaluator_inputs = run.inputs['Evaluator'].inputs.artifacts
  assert all(a.artifacts[0].type.instance_schema for a in evaluator_inputs.values())
  assert evaluator_inputs['baseline_model'].artifacts[0].uri == baseline.uri
  blessing = run.kfp.recorded[('Evaluator', 'blessing')]
  assert blessing.metadata['blessed'] == 1  # The same model: no change, within the tolerance.
  evaluation = run.kfp.recorded[('Evaluator', 'evaluation')].uri
  assert evaluation.startswith(f'{BUCKET}/vertex_root/')
  elbos = run_summary.overall_mean_elbo(run.gcs.local_path(evaluation))
  assert set(elbos) == {'candidate', 'baseline'}
  assert elbos['candidate'] == pytest.approx(elbos['baseline'])
  pushed = run.kfp.recorded[('AtomicPusher', 'pushed_model')]
  assert pushed.metadata['already_served'] == 1 and pushed.metadata['pushed_version'] == version
  assert kfp_run.gcs.listdir(model_dir) == [version]


def test_the_pushed_version_in_the_bucket_tells_its_story(kfp_run):
  model_dir = f'{kfp_run.config.serving_dir}/{kfp_run.config.push.model_name}'
  [version] = kfp_run.gcs.listdir(model_dir)
  with open(os.path.join(kfp_run.gcs.local_path(model_dir), version,
                         'assets.extra', 'vaetfx_provenance.json')) as f:
    record = json.load(f)
  assert record['version'] == int(version) and record['producer'] == 'vaetfx'
  assert record['pipeline_name'] == kfp_run.config.pipeline_name
  assert record['data']['root'] == kfp_run.config.data_dir
  assert record['data']['examples_uri'] == kfp_run.uri(EXAMPLE_GEN, 'examples')
  assert record['scores']['candidate'] < 0 and record['scores']['baseline'] is None


def test_serve_answers_a_predict_from_the_pushed_version_in_the_bucket(kfp_run, mnist_idx_dir):
  """`vaetfx serve --model-dir gs://...` loads what the Pusher pushed; `vaetfx query` asks it."""
  model_dir = f'{kfp_run.config.serving_dir}/{kfp_run.config.push.model_name}'
  [version] = kfp_run.gcs.listdir(model_dir)
  env = dict(os.environ, **kfp_run.gcs.environment())
  vaetfx = os.path.join(os.path.dirname(sys.executable), 'vaetfx')
  server = subprocess.Popen(
      kfp_run.gcs.command([vaetfx, 'serve', '--model-dir', model_dir, '--port', str(SERVE_PORT),
                           '--poll-seconds', '60']),
      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    printed = []
    for line in server.stdout:  # Log lines, then this one; EOF if the server exits.
      printed.append(line)
      if line.startswith('Serving model'):
        break
    assert printed and printed[-1].startswith('Serving model'), ''.join(printed)[-3000:]
    assert f'[{version}]' in printed[-1]
    digits = os.path.join(mnist_idx_dir, 't10k-images-idx3-ubyte.gz')
    query = subprocess.run(
        kfp_run.gcs.command([vaetfx, 'query', 'score', digits, '--limit', '5',
                             '--server', f'127.0.0.1:{SERVE_PORT}']),
        env=env, capture_output=True, text=True, timeout=300, check=False)
  finally:
    server.terminate()
    server.wait(60)
  assert query.returncode == 0, query.stderr[-3000:]
  rows = [line.split('\t') for line in query.stdout.splitlines()[1:]]
  assert len(rows) == 5 and all(float(elbo) < 0 for _, elbo in rows)


def test_entrypoint_gives_kfp_untyped_inputs_the_types_tfx_needs(compiled, tmp_path):
  _, _, spec, _ = compiled
  kfp = FakeKfp(spec, f'{BUCKET}/pipeline_root', str(tmp_path))
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
  # MnistExampleGen has a BeamExecutorSpec but writes without Beam (see its executor).
  beam_components = [c for c in needed
                     if isinstance(c.executor_spec, executor_spec.BeamExecutorSpec)
                     and issubclass(c.executor_spec.executor_class,
                                    base_beam_executor.BaseBeamExecutor)]
  assert len(portable_runs) >= len(beam_components) >= 2
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


# Settings of `vaetfx run` (not its locations), each away from its default.
RUN_SETTINGS = ('--epochs', '3', '--latent-dim', '4', '--score-floor=-99', '--score-tolerance',
                '1.5', '--keep-versions', '5', '--model-name', 'vae2', '--digits', '7,1',
                '--no-cache')
RUN_LOCATION_FLAGS = {'--data-dir', '--cache-dir', '--output-dir', '--serving-dir', '--metadata-db'}


def _task_parameters(spec, task_name: str) -> Dict:
  return {name: json_format.MessageToDict(parameter.runtime_value.constant)
          for name, parameter in spec.root.dag.tasks[task_name].inputs.parameters.items()}


def test_compile_kubeflow_puts_runs_settings_into_the_spec(tmp_path):
  assert cli.main(_compile_args(tmp_path, *RUN_SETTINGS)) == 0
  spec = _parse_spec(kubeflow_runner.load_spec(str(tmp_path / 'vae.yaml')))
  hparams = json.loads(_task_parameters(spec, 'Trainer')['custom_config'])
  assert (hparams['epochs'], hparams['latent_dim']) == (3, 4)
  [metric] = json.loads(_task_parameters(spec, 'Evaluator')['eval_config'])[
      'metrics_specs'][0]['metrics']
  [overall] = metric['per_slice_thresholds']  # the mean's floor and tolerance (no --digit-tolerance)
  assert overall['threshold']['value_threshold']['lower_bound'] == -99
  assert overall['threshold']['change_threshold']['absolute'] == -1.5
  pusher = _task_parameters(spec, 'AtomicPusher')
  assert (pusher['keep_versions'], pusher['model_name']) == (5, 'vae2')
  digits = json.loads(_task_parameters(spec, EXAMPLE_GEN)['custom_config'])
  assert digits['custom_config']['value']['digits'] == [1, 7]
  assert not any(task.caching_options.enable_cache for task in spec.root.dag.tasks.values())


def _span_parameter(spec) -> Dict:
  """The root's span parameter, and the ExampleGen's range_config reading it."""
  [range_config] = [parameter for name, parameter in
                    spec.root.dag.tasks[EXAMPLE_GEN].inputs.parameters.items()
                    if name == 'range_config']
  assert range_config.component_input_parameter == configs.SPAN_PARAMETER
  return json_format.MessageToDict(spec.root.input_definitions.parameters[configs.SPAN_PARAMETER])


@pytest.mark.parametrize('flags_, default', [
    (('--span', '3'), {'static_range': {'end_span_number': 3, 'start_span_number': 3}}),
    (('--span-folders',), None)], ids=['span-3', 'newest'])
def test_compile_kubeflow_takes_the_span_as_a_run_time_parameter(tmp_path, flags_, default):
  assert cli.main(_compile_args(tmp_path, *flags_)) == 0
  spec = _parse_spec(kubeflow_runner.load_spec(str(tmp_path / 'vae.yaml')))
  splits = json.loads(_task_parameters(spec, EXAMPLE_GEN)['input_config'])['splits']
  assert {split['pattern'] for split in splits} == {'span-{SPAN}/*'}
  parameter = _span_parameter(spec)
  assert parameter['isOptional']
  assert (json.loads(parameter['defaultValue']) if default else parameter['defaultValue']) == (
      default or '')


def test_compile_kubeflow_without_span_folders_has_no_span_parameter(compiled):
  _, _, _, packages = compiled
  spec = _parse_spec(kubeflow_runner.load_spec(packages['.yaml']))
  assert configs.SPAN_PARAMETER not in spec.root.input_definitions.parameters
  assert 'range_config' not in _task_parameters(spec, EXAMPLE_GEN)


def test_compile_kubeflow_refuses_the_rolling_window(tmp_path, capsys):
  assert cli.main(_compile_args(tmp_path, '--span-folders', '--train-spans', '2')) == 2
  assert '--train-spans 2: the rolling window runs locally only' in capsys.readouterr().err
  assert not os.path.exists(tmp_path / 'vae.yaml')


def test_compile_kubeflow_puts_the_autoencoder_into_the_spec(tmp_path):
  """Seed 003's flags reach the Trainer, the gate's metric, the scorer and the serving name."""
  assert cli.main(_compile_args(tmp_path, '--model', 'ae', '--digits', '1,5,6',
                                '--latent-dim', '2')) == 0
  spec = _parse_spec(kubeflow_runner.load_spec(str(tmp_path / 'vae.yaml')))
  assert spec.pipeline_info.name == 'ae-mnist'
  hparams = json.loads(_task_parameters(spec, 'Trainer')['custom_config'])
  assert {key: hparams[key] for key in ('model', 'latent_dim', 'epochs', 'batch_size',
                                        'learning_rate', 'learning_rate_schedule')} == {
      'model': 'ae', 'latent_dim': 2, 'epochs': 10, 'batch_size': 50, 'learning_rate': 1e-3,
      'learning_rate_schedule': 'constant'}
  eval_config = json.loads(_task_parameters(spec, 'Evaluator')['eval_config'])
  assert eval_config['model_specs'][0]['prediction_key'] == 'reconstruction_log_likelihood'
  [metric] = eval_config['metrics_specs'][0]['metrics']
  assert metric['class_name'] == 'MeanReconstructionLogLikelihood'
  assert _task_parameters(spec, 'BulkInferrer')['score_key'] == 'reconstruction_log_likelihood'
  assert _task_parameters(spec, 'AtomicPusher')['model_name'] == 'ae'


def _options(parser) -> set:
  return {option for action in parser._actions for option in action.option_strings}  # pylint: disable=protected-access


def test_compile_kubeflow_takes_every_setting_of_run_and_lists_it_in_help():
  commands = next(action for action in cli.build_parser()._actions  # pylint: disable=protected-access
                  if action.dest == 'command').choices
  run_settings = _options(commands['run']) - RUN_LOCATION_FLAGS
  assert {'--epochs', '--score-floor', '--keep-versions', '--digits'} <= run_settings
  assert run_settings <= _options(commands['compile-kubeflow'])
  help_text = commands['compile-kubeflow'].format_help()
  assert all(option in help_text for option in run_settings)


def _refused_tasks(spec) -> List[str]:
  executors = _deployment(spec).executors
  return sorted(name for name, task in spec.root.dag.tasks.items()
                if executors[spec.components[task.component_ref.name].executor_label]
                .WhichOneof('spec') not in ('container', 'importer'))


@pytest.mark.parametrize('suffix', ['.yaml', '.json'])
def test_specs_have_no_task_kfp_refuses_and_never_cache_what_reads_the_serving_folder(
    tmp_path, capsys, suffix):
  """The baseline is a container task (KFP runs it, where it refuses resolvers); it and the
  Pusher read the serving folder when they run, so neither may come from KFP's cache."""
  args = _compile_args(tmp_path)
  args[args.index('--output') + 1] = str(tmp_path / f'vae{suffix}')
  assert cli.main(args) == 0
  with open(tmp_path / f'vae{suffix}') as f:
    document = yaml.safe_load(f) if suffix == '.yaml' else json.load(f)['pipelineSpec']
  spec = _parse_spec(document)
  assert _refused_tasks(spec) == []
  tasks = spec.root.dag.tasks
  assert {name for name in tasks if not tasks[name].caching_options.enable_cache} == set(
      kubeflow_runner.ALWAYS_RUN_COMPONENTS)
  assert 'warning:' not in capsys.readouterr().err


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
    ('--trainer-memory', 'inf'),
    ('--trainer-cpu', 'nan'),
    ('--image', ''),
    ('--gpu-type', ' '),
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
  assert repr(value) in capsys.readouterr().err


def test_compile_kubeflow_refuses_an_unwritable_output_folder_before_compiling(tmp_path, capsys):
  args = _compile_args(tmp_path)
  (tmp_path / 'file').write_text('not a folder')
  args[args.index('--output') + 1] = str(tmp_path / 'file' / 'vae.yaml')
  assert cli.main(args) == 2
  assert '--output\'s folder' in capsys.readouterr().err


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


def test_submit_span_picks_the_span_of_a_span_folders_package(fake_client, tmp_path):
  assert cli.main(_compile_args(tmp_path, '--span-folders')) == 0
  package = str(tmp_path / 'vae.yaml')
  for span, value in (('4', {'static_range': {'end_span_number': 4, 'start_span_number': 4}}),
                      ('0', '')):
    assert cli.main(['submit', '--host', 'http://kfp', '--package', package,
                     '--span', span]) == 0
    _, kwargs = fake_client.instances[-1].runs[-1]
    argument = kwargs['arguments'][configs.SPAN_PARAMETER]
    assert (json.loads(argument) if value else argument) == value
  assert cli.main(['submit', '--host', 'http://kfp', '--package', package]) == 0
  assert 'arguments' not in fake_client.instances[-1].runs[-1][1]  # the compiled default


def test_submit_span_refuses_a_package_without_span_folders(compiled, fake_client, capsys):
  _, _, _, packages = compiled
  assert cli.main(['submit', '--host', 'http://kfp', '--package', packages['.yaml'],
                   '--span', '2']) == 2
  assert 'compile it with --span-folders' in capsys.readouterr().err
  assert not any(client.runs for client in fake_client.instances)

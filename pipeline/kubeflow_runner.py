"""Compiles the pipeline for Kubeflow Pipelines 2.x with TFX's KubeflowV2DagRunner, and submits it.

The Kubeflow twin of local_runner: the same create_pipeline(), given URIs the
pods can reach instead of local folders, one image that carries the installed
package (module code is named by dotted paths, so nothing is staged from this
machine), the Trainer's CPU, memory and GPUs as its platform config, and Beam
arguments for the data components.

TFX and kfp are imported inside the functions that use them, so that
`vaetfx --help` and `vaetfx run` do not pay for importing them.
"""
import json
import os
from typing import Any, Dict, List, Optional

import yaml

from vaetfx.pipeline import code_fingerprint, configs

# Every task runs TFX's entrypoint through ours (see kubeflow_entrypoint.py for why).
ENTRYPOINT_COMMAND = ('python', '-m', 'vaetfx.pipeline.kubeflow_entrypoint')
DEFAULT_PACKAGE = os.path.join('build', 'kubeflow', f'{configs.PIPELINE_NAME}.yaml')
SPEC_SUFFIXES = ('.yaml', '.yml', '.json')
# KFP's open-source driver uses the accelerator type as the Kubernetes resource name.
DEFAULT_GPU_TYPE = 'nvidia.com/gpu'
# They read the serving folder when they run; a local run's driver puts what it serves into
# TFX's cache key (components/served_state_driver.py), but KFP runs no custom driver and
# caches on the task spec alone, so these tasks are never cached there.
ALWAYS_RUN_COMPONENTS = ('ServedModelImporter', 'AtomicPusher')
# The executors KFP 2.x's open-source backend runs (backend/src/v2/compiler/argocompiler/
# dag.go); it refuses resolvers, which Vertex AI runs.
KFP_EXECUTOR_KINDS = frozenset({'container', 'importer'})


def trainer_resources(cpu: float, memory_gb: float, gpu_type: str, gpu_count: int):
  """The Trainer container's limits as TFX's platform config (a ResourceSpec); no GPU if count is 0.

  KFP 2.x makes them the pod's resource limits (memory in GB, the accelerator
  type as a resource name such as nvidia.com/gpu); Vertex AI picks a machine
  from them (accelerator types such as NVIDIA_TESLA_T4).
  """
  from kfp.pipeline_spec import pipeline_spec_pb2  # pylint: disable=g-import-not-at-top
  resources = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec(
      cpu_limit=cpu, memory_limit=memory_gb)
  if gpu_count:
    resources.accelerator.type = gpu_type
    resources.accelerator.count = gpu_count
  return resources


def build_pipeline(config: configs.PipelineConfig, trainer_platform_config=None):
  """The pipeline as Kubeflow runs it: no metadata connection, since KFP brings its own."""
  from vaetfx.pipeline import pipeline as pipeline_def  # pylint: disable=g-import-not-at-top
  return pipeline_def.create_pipeline(config, code_fingerprint.component_fingerprints(),
                                      trainer_platform_config=trainer_platform_config)


def _write_spec(job: Dict[str, Any], package: str) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(package)), exist_ok=True)
  with open(package, 'w', encoding='utf-8') as f:
    if package.endswith('.json'):
      json.dump(job, f, indent=2, sort_keys=True)
    else:
      yaml.safe_dump(job['pipelineSpec'], f, sort_keys=True)


def span_default(config: configs.PipelineConfig) -> Dict[str, str]:
  """{the span parameter: its default, config.span's range_config JSON, '' for the newest}
  when the span is picked at run time; {} otherwise."""
  if not config.span_at_run_time:
    return {}
  from vaetfx.components.mnist_example_gen import component  # pylint: disable=g-import-not-at-top
  return {configs.SPAN_PARAMETER: component.span_range_json(config.span)}


def compile_pipeline(config: configs.PipelineConfig, image: str, package: str,
                     trainer_platform_config=None) -> Dict[str, Any]:
  """Writes the compiled pipeline to `package` and returns it as a PipelineJob dict.

  A .yaml package is the PipelineSpec that KFP 2.x and kfp.Client accept; a
  .json one the PipelineJob that Vertex AI runs. Pipeline spec 2.1 because KFP
  2.x's driver reads only its form of constants and parameter values. TFX leaves
  out defaultPipelineRoot; it is added so that `submit` can pass it to the run,
  and so is the span parameter's default (span_default).
  """
  from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner  # pylint: disable=g-import-not-at-top
  runner = kubeflow_v2_dag_runner.KubeflowV2DagRunner(
      kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(
          default_image=image, default_commands=list(ENTRYPOINT_COMMAND),
          use_pipeline_spec_2_1=True))
  parameters = span_default(config)
  job = runner.run(build_pipeline(config, trainer_platform_config), write_out=False,
                   parameter_values=parameters or None)
  job['pipelineSpec']['defaultPipelineRoot'] = config.pipeline_root
  for name, value in parameters.items():
    # TFX puts a default in a Vertex job's runtimeConfig only; KFP 2.x reads the spec's.
    job['pipelineSpec']['root']['inputDefinitions']['parameters'][name].update(
        defaultValue=value, isOptional=True)
  for task in ALWAYS_RUN_COMPONENTS:
    job['pipelineSpec']['root']['dag']['tasks'][task].pop('cachingOptions', None)
  _write_spec(job, package)
  return job


def tasks_kfp_cannot_run(job: Dict[str, Any]) -> List[str]:
  """The compiled tasks whose executor KFP 2.x's open-source backend refuses to run."""
  spec = job['pipelineSpec']
  executors = spec['deploymentSpec']['executors']
  return sorted(
      name for name, task in spec['root']['dag']['tasks'].items()
      if not KFP_EXECUTOR_KINDS & set(
          executors[spec['components'][task['componentRef']['name']]['executorLabel']]))


def load_spec(package: str) -> Dict[str, Any]:
  """The PipelineSpec of a compiled .yaml package, as a dict."""
  with open(package, encoding='utf-8') as f:
    return yaml.safe_load(f)


class NoSpanParameter(ValueError):
  """A span was asked of a package compiled without span folders."""


def span_arguments(spec: Dict[str, Any], span: Optional[int]) -> Dict[str, str]:
  """The run's arguments that pick `span` (None: the compiled default): the range_config JSON
  TFX's ExampleGen driver reads, '' for the newest span."""
  if span is None:
    return {}
  if configs.SPAN_PARAMETER not in spec.get('root', {}).get('inputDefinitions', {}).get(
      'parameters', {}):
    raise NoSpanParameter('the package reads no span folders (compile it with --span-folders)')
  from vaetfx.components.mnist_example_gen import component  # pylint: disable=g-import-not-at-top
  return {configs.SPAN_PARAMETER: component.span_range_json(span)}


def submit(client, package: str, experiment: str, run_name=None, namespace=None,
           span: Optional[int] = None) -> str:
  """Starts a run of the compiled package with a kfp.Client and returns the run's id.

  The spec travels inside the run request. KFP 2.x takes the pipeline root from
  the run, not from the spec, so the compiled one is passed along. `span` sets the
  package's span parameter (span_arguments).
  """
  spec = load_spec(package)
  arguments = span_arguments(spec, span)
  result = client.create_run_from_pipeline_package(
      package, experiment_name=experiment, run_name=run_name, namespace=namespace,
      pipeline_root=spec.get('defaultPipelineRoot') or None,
      **({'arguments': arguments} if arguments else {}))
  return result.run_id

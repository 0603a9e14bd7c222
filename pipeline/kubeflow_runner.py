"""Compiles the pipeline for Kubeflow Pipelines 2.x with TFX's KubeflowV2DagRunner, and submits it.

The Kubeflow twin of local_runner: the same create_pipeline(), given URIs the
pods can reach instead of local folders, one image that carries the installed
package (module code is named by dotted paths, so nothing is staged from this
machine), the Trainer's CPU, memory and GPUs as its platform config, and Beam
arguments for the data components.

TFX and kfp are imported inside the functions that use them, so that
`vaetfx --help` and `vaetfx run` do not pay for importing them.
"""
import argparse
import json
import os
import sys
from typing import Any, Dict, List

import yaml

from vaetfx import flags
from vaetfx.pipeline import configs

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
  return pipeline_def.create_pipeline(
      **config.create_pipeline_args(), trainer_platform_config=trainer_platform_config)


def _write_spec(job: Dict[str, Any], package: str) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(package)), exist_ok=True)
  with open(package, 'w', encoding='utf-8') as f:
    if package.endswith('.json'):
      json.dump(job, f, indent=2, sort_keys=True)
    else:
      yaml.safe_dump(job['pipelineSpec'], f, sort_keys=True)


def compile_pipeline(config: configs.PipelineConfig, image: str, package: str,
                     trainer_platform_config=None) -> Dict[str, Any]:
  """Writes the compiled pipeline to `package` and returns it as a PipelineJob dict.

  A .yaml package is the PipelineSpec that KFP 2.x and kfp.Client accept; a
  .json one the PipelineJob that Vertex AI runs. Pipeline spec 2.1 because KFP
  2.x's driver reads only its form of constants and parameter values. TFX leaves
  out defaultPipelineRoot; it is added so that `submit` can pass it to the run.
  """
  from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner  # pylint: disable=g-import-not-at-top
  runner = kubeflow_v2_dag_runner.KubeflowV2DagRunner(
      kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(
          default_image=image, default_commands=list(ENTRYPOINT_COMMAND),
          use_pipeline_spec_2_1=True))
  job = runner.run(build_pipeline(config, trainer_platform_config), write_out=False)
  job['pipelineSpec']['defaultPipelineRoot'] = config.pipeline_root
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


def submit(client, package: str, experiment: str, run_name=None, namespace=None) -> str:
  """Starts a run of the compiled package with a kfp.Client and returns the run's id.

  The spec travels inside the run request. KFP 2.x takes the pipeline root from
  the run, not from the spec, so the compiled one is passed along.
  """
  result = client.create_run_from_pipeline_package(
      package, experiment_name=experiment, run_name=run_name, namespace=namespace,
      pipeline_root=load_spec(package).get('defaultPipelineRoot') or None)
  return result.run_id


def _uri(text: str) -> str:
  if '://' not in text:
    raise argparse.ArgumentTypeError(
        f'{text!r}: expected a URI the pods can reach, such as gs://bucket/path')
  return text.rstrip('/')


def _spec_file(text: str) -> str:
  if not text.endswith(SPEC_SUFFIXES):
    raise argparse.ArgumentTypeError(
        f'{text!r}: expected a file ending in {", ".join(SPEC_SUFFIXES)}')
  return text


def _add_compile_parser(subparsers) -> None:
  parser = subparsers.add_parser(
      'compile-kubeflow', help='Compile the pipeline for Kubeflow Pipelines 2.x.',
      description='Compiles the pipeline with TFX\'s KubeflowV2DagRunner into a pipeline spec '
                  'whose tasks run in IMAGE (built by `make image`).',
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument('--image', required=True, type=flags.non_empty,
                      help='Pipeline image, pullable by the cluster.')
  parser.add_argument('--pipeline-root', type=_uri, required=True,
                      help='Where the tasks write their artifacts, e.g. gs://bucket/tfx.')
  parser.add_argument('--serving-dir', type=_uri, required=True,
                      help='Where blessed models are pushed for TF Serving.')
  parser.add_argument('--data-root', type=_uri, required=True,
                      help='Folder with MNIST\'s four IDX files (gzip or not) or mnist.npz; '
                           'with --span N, its span-N/ folder of them (the compiler does not '
                           'list the bucket, so spans are read only when named).')
  parser.add_argument('--output', type=_spec_file, default=DEFAULT_PACKAGE,
                      help='The compiled pipeline: .yaml for KFP 2.x, .json for Vertex AI.')
  parser.add_argument('--gpu-type', default=DEFAULT_GPU_TYPE, type=flags.non_empty,
                      help='Trainer accelerator: its Kubernetes resource name on KFP 2.x, '
                           'a type such as NVIDIA_TESLA_T4 on Vertex AI.')
  parser.add_argument('--gpu-count', type=flags.non_negative_int, default=1,
                      help='GPUs for the Trainer (0: train on CPU).')
  parser.add_argument('--trainer-cpu', type=flags.positive_float, default=4.0,
                      help='Trainer CPU limit (cores).')
  parser.add_argument('--trainer-memory', type=flags.positive_float, default=16.0,
                      help='Trainer memory limit (GB).')
  # The settings `vaetfx run` takes, from the same definitions; the data components run on
  # the DirectRunner inside their pod unless e.g. --beam-arg=--runner=DataflowRunner.
  flags.add_settings_flags(parser)
  parser.set_defaults(handler=_compile)


def _compile(args) -> int:
  try:
    flags.writable_dir(os.path.dirname(os.path.abspath(args.output)), '--output\'s folder')
  except flags.BadPath as e:
    print(f'vaetfx compile-kubeflow: error: {e}', file=sys.stderr)
    return flags.EXIT_BAD_INPUT
  config = flags.pipeline_config(
      args, data_dir=args.data_root, serving_dir=args.serving_dir,
      pipeline_root_uri=args.pipeline_root,
      data_pattern=configs.SPAN_PATTERN if args.span else configs.ALL_FILES_PATTERN)
  resources = trainer_resources(args.trainer_cpu, args.trainer_memory, args.gpu_type,
                                args.gpu_count)
  job = compile_pipeline(config, args.image, args.output, resources)
  tasks = job['pipelineSpec']['root']['dag']['tasks']
  print(f'Wrote {args.output}: {len(tasks)} tasks in {args.image}, artifacts under '
        f'{config.pipeline_root}.\nStart a run: vaetfx submit --host URL --package {args.output}')
  refused = tasks_kfp_cannot_run(job)
  if refused:
    print(f'warning: KFP 2.x\'s open-source backend runs container and importer tasks only, '
          f'so it will refuse {", ".join(refused)}; Vertex AI runs them (--output FILE.json).',
          file=sys.stderr)
  return 0


def _add_submit_parser(subparsers) -> None:
  parser = subparsers.add_parser(
      'submit', help='Start a run of the compiled pipeline on Kubeflow Pipelines 2.x.',
      description='Sends the compiled pipeline to the KFP API at --host and starts a run.',
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument('--host', required=True,
                      help='KFP API endpoint, e.g. http://localhost:8080 when port-forwarding '
                           'svc/ml-pipeline-ui.')
  parser.add_argument('--package', default=DEFAULT_PACKAGE,
                      help='The .yaml written by compile-kubeflow.')
  parser.add_argument('--experiment', default=configs.PIPELINE_NAME,
                      help='Experiment to file the run under (created if missing).')
  parser.add_argument('--run-name', help='Run name. Default: the package name and the time.')
  parser.add_argument('--namespace', help='Kubeflow profile namespace (multi-user clusters).')
  parser.set_defaults(handler=_submit)


def _submit(args) -> int:
  if not args.package.endswith(('.yaml', '.yml')):
    print(f'error: {args.package}: KFP 2.x takes the .yaml PipelineSpec '
          '(a .json package is a Vertex AI PipelineJob)', file=sys.stderr)
    return 2
  if not os.path.isfile(args.package):
    print(f'error: {args.package} does not exist: run vaetfx compile-kubeflow first',
          file=sys.stderr)
    return 2
  import kfp  # pylint: disable=g-import-not-at-top
  import kfp_server_api  # pylint: disable=g-import-not-at-top
  try:
    run_id = submit(kfp.Client(host=args.host), args.package, args.experiment, args.run_name,
                    args.namespace)
  except kfp_server_api.ApiException as e:
    print(f'error: the KFP API at {args.host} refused the run: {e}', file=sys.stderr)
    return 1
  print(f'Started run {run_id} in experiment {args.experiment!r}.')
  return 0


def add_subcommands(subparsers) -> None:
  """Registers `compile-kubeflow` and `submit` on the `vaetfx` command line."""
  _add_compile_parser(subparsers)
  _add_submit_parser(subparsers)

"""`vaetfx compile-kubeflow` and `vaetfx submit`: the command line of pipeline/kubeflow_runner.py."""
import argparse
import os
import sys

from vaetfx import flags
from vaetfx.pipeline import configs, kubeflow_runner
from vaetfx.pipeline.kubeflow_runner import DEFAULT_GPU_TYPE, DEFAULT_PACKAGE, SPEC_SUFFIXES


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
                      help='Folder with MNIST\'s four IDX files (gzip or not) or mnist.npz, '
                           'or, with --span-folders or --span N, span-1/, span-2/, ... folders '
                           'of them (the compiler does not list the bucket).')
  parser.add_argument('--span-folders', action='store_true',
                      help='--data-root holds span-N/ folders: the compiled spec reads one, '
                           f'chosen when the run starts by its run-time parameter '
                           f'{configs.SPAN_PARAMETER} (vaetfx submit --span N sets it; its '
                           'default is --span, 0 the newest span). Implied by --span N.')
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
  if args.train_spans > 1:
    print(f'vaetfx compile-kubeflow: error: --train-spans {args.train_spans}: the rolling window '
          'runs locally only (TFX 1.16\'s Kubeflow V2 compiler compiles no resolver but '
          'LatestArtifact and LatestBlessedModel)', file=sys.stderr)
    return flags.EXIT_BAD_INPUT
  span_folders = args.span_folders or bool(args.span)
  config = flags.pipeline_config(
      args, data_dir=args.data_root, serving_dir=args.serving_dir,
      pipeline_root_uri=args.pipeline_root,
      data_pattern=configs.SPAN_PATTERN if span_folders else configs.ALL_FILES_PATTERN,
      span_at_run_time=span_folders)
  resources = kubeflow_runner.trainer_resources(args.trainer_cpu, args.trainer_memory, args.gpu_type,
                                args.gpu_count)
  job = kubeflow_runner.compile_pipeline(config, args.image, args.output, resources)
  tasks = job['pipelineSpec']['root']['dag']['tasks']
  print(f'Wrote {args.output}: {len(tasks)} tasks in {args.image}, artifacts under '
        f'{config.pipeline_root}.\nStart a run: vaetfx submit --host URL --package {args.output}')
  refused = kubeflow_runner.tasks_kfp_cannot_run(job)
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
  parser.add_argument('--span', type=flags.non_negative_int, default=None, metavar='N',
                      help='For a package compiled with --span-folders: ingest span-N/ (0: the '
                           'newest). Default: the span the package was compiled with.')
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
    run_id = kubeflow_runner.submit(kfp.Client(host=args.host), args.package, args.experiment,
                                    args.run_name, args.namespace, span=args.span)
  except kubeflow_runner.NoSpanParameter as e:
    print(f'error: --span {args.span}: {e}', file=sys.stderr)
    return flags.EXIT_BAD_INPUT
  except kfp_server_api.ApiException as e:
    print(f'error: the KFP API at {args.host} refused the run: {e}', file=sys.stderr)
    return 1
  print(f'Started run {run_id} in experiment {args.experiment!r}.')
  return 0


def add_subcommands(subparsers) -> None:
  """Registers `compile-kubeflow` and `submit` on the `vaetfx` command line."""
  _add_compile_parser(subparsers)
  _add_submit_parser(subparsers)

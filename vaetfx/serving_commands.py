"""`vaetfx serve` (a local server speaking TF Serving's gRPC API) and `vaetfx query` (its client).

The query commands talk to real TF Serving and to `vaetfx serve` alike. The
server and client modules import TensorFlow, so they are imported by the
handlers, not here: `vaetfx --help` stays instant.
"""
import argparse
import functools
import importlib.util
import logging
import os
import sys
import types

import numpy as np

from vaetfx import flags
from vaetfx.serving import defaults
from vaetfx.serving.version_policy import VersionPolicy
from vaetfx.shared import features

EXIT_SERVING_ERROR = flags.EXIT_FAILED
EXIT_USAGE = flags.EXIT_BAD_INPUT
# gRPC's message limits are int32 byte counts.
max_message_mb = flags.integer(1, (2**31 - 1) >> 20)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
  """Shows a flag's default only when it has one worth showing (not None, '', [] or False)."""

  def _get_help_string(self, action):
    if action.default in (None, '', [], False):
      return action.help
    return super()._get_help_string(action)


def add_subcommands(subparsers):
  """Registers `serve` and `query` on the `vaetfx` command's subparsers."""
  _add_serve_parser(subparsers)
  _add_query_parser(subparsers)


def _version_label(text: str):
  name, _, version = text.partition('=')
  if not name or not version.isdigit():
    raise argparse.ArgumentTypeError(f'{text!r}: expected LABEL=VERSION, e.g. stable=1700000000')
  return name, int(version)


def _add_serve_parser(subparsers):
  serve = subparsers.add_parser(
      'serve', help='Serve pushed model versions over TF Serving\'s gRPC API (and its REST API).',
      description='A local stand-in for TensorFlow Serving: serves the integer-named version '
                  'folders the Pusher writes under --model-dir, loads new versions and unloads '
                  'removed ones while running, and answers PredictionService.Predict, '
                  'GetModelMetadata and ModelService.GetModelStatus as TF Serving does. '
                  'SIGTERM or Ctrl-C stops it after the requests in flight finish.',
      formatter_class=_HelpFormatter)
  serve.add_argument('--model-dir', required=True,
                     help='The model\'s base path, <serving_dir>/<model_name>, holding version '
                          'folders 1/, 2/, ... (TF Serving\'s --model_base_path).')
  serve.add_argument('--model-name', default='',
                     help='Name clients ask for. Default: the last folder of --model-dir.')
  serve.add_argument('--host', default=defaults.HOST,
                     help='Address to listen on; 0.0.0.0 exposes the server to the network.')
  serve.add_argument('--port', type=flags.port, default=defaults.PORT,
                     help='gRPC port (0: any free port, printed at start).')
  serve.add_argument('--rest-port', type=flags.port, default=None,
                     help='Also serve TF Serving\'s REST API on this port (TF Serving uses 8501; '
                          '0: any free port), over the same models and limits. Default: gRPC '
                          'only.')
  serve.add_argument('--poll-seconds', type=flags.non_negative_float, default=defaults.POLL_SECONDS,
                     help='Seconds between looks at --model-dir for new or removed versions '
                          '(0: look once at start).')
  serve.add_argument('--version-policy', default=VersionPolicy(),
                     type=flags.parsed_by(VersionPolicy.parse, 'version policy'),
                     help='Versions to serve: latest, latest:N, all, or specific:V1,V2 (TF '
                          'Serving\'s model_version_policy). Requests without a version get the '
                          'highest loaded one.')
  serve.add_argument('--version-label', type=_version_label, action='append', default=[],
                     metavar='LABEL=VERSION',
                     help='Let requests ask for VERSION by LABEL (e.g. stable=1), repeatable.')
  serve.add_argument('--max-num-load-retries', type=flags.non_negative_int,
                     default=defaults.MAX_LOAD_RETRIES,
                     help='Times a version that failed to load (e.g. one still being copied in) '
                          'is tried again before the server gives up on it (TF Serving\'s '
                          '--max_num_load_retries).')
  serve.add_argument('--load-retry-interval-seconds', type=flags.non_negative_float,
                     default=defaults.LOAD_RETRY_SECONDS,
                     help='Seconds between those tries (TF Serving\'s '
                          '--load_retry_interval_micros).')
  serve.add_argument('--threads', type=flags.positive_int, default=defaults.SERVER_THREADS,
                     help='Requests handled at once; more wait in gRPC\'s queue.')
  serve.add_argument('--max-message-mb', type=max_message_mb,
                     default=defaults.MAX_MESSAGE_BYTES >> 20,
                     help='Largest request or response in MiB; bigger ones get RESOURCE_EXHAUSTED.')
  limits = serve.add_argument_group(
      'limits per request', 'Checked on the sizes a request declares, before any work; a request '
      'over one gets RESOURCE_EXHAUSTED naming the flag.')
  limits.add_argument('--max-batch-rows', type=flags.positive_int,
                      default=defaults.MAX_BATCH_ROWS,
                      help='Most rows (images, latents, examples) in one Predict.')
  limits.add_argument('--max-decoded-mb', type=flags.positive_int,
                      default=defaults.MAX_DECODED_BYTES >> 20,
                      help='Most MiB a request\'s inputs may take as sent (every value of every '
                           'field, surplus ones too) plus once decoded (a tensor of one repeated '
                           'value counts at its declared shape).')
  limits.add_argument('--max-sample-count', type=flags.positive_int,
                      default=defaults.MAX_SAMPLE_COUNT,
                      help='Most images one `sample` call may ask for.')
  limits.add_argument('--slice-rows', type=flags.positive_int, default=defaults.SLICE_ROWS,
                      help='Rows per model call: bigger requests run in slices of this many, '
                           'which bounds a request\'s memory; answers equal one call\'s up to '
                           'float rounding.')
  serve.add_argument('--max-inflight-mb', type=flags.positive_int,
                     default=defaults.MAX_INFLIGHT_BYTES >> 20,
                     help='Most MiB all admitted requests may hold at once: inputs as sent and '
                          'decoded, and answers (three copies each) until sent. A request that '
                          'does not fit waits for room up to its deadline, then gets '
                          'RESOURCE_EXHAUSTED; one bigger than this gets it at once.')
  serve.add_argument('--enable-batching', action=argparse.BooleanOptionalAction, default=True,
                     help='Batch concurrent Predict calls of a signature together, as TF '
                          'Serving\'s --enable_batching, but on by default: with 16 clients '
                          'the server spent 0.6 to 0.8 times the CPU per request, and a lone '
                          'client\'s p50 stayed within 0.2 ms (docs/serving.md). Without '
                          '--batching-parameters-file: batches of up to --max-batch-rows rows, '
                          'no timeout, one batch running at a time. Signatures with scalar '
                          'inputs, like sample, and requests of more than --slice-rows rows '
                          'run unbatched.')
  serve.add_argument('--batching-parameters-file', type=flags.readable_file,
                     help='TF Serving\'s batching_parameters.txt (max_batch_size, '
                          'batch_timeout_micros, max_enqueued_batches, num_batch_threads, '
                          'allowed_batch_sizes), instead of the defaults above.')
  serve.add_argument('--tensorflow-intra-op-parallelism', type=flags.non_negative_int,
                     default=defaults.INTRA_OP_THREADS,
                     help='Threads TensorFlow runs one operation on (TF Serving\'s '
                          '--tensorflow_intra_op_parallelism; 0: one per core). The default, 1, '
                          'runs a model call on the request\'s own thread: 0.6 to 1.3 ms less '
                          'per small request; a batch of 64 can take up to twice as long '
                          '(docs/serving.md).')
  serve.add_argument('--tensorflow-inter-op-parallelism', type=flags.non_negative_int,
                     default=defaults.INTER_OP_THREADS,
                     help='Operations TensorFlow runs at once (TF Serving\'s '
                          '--tensorflow_inter_op_parallelism; 0: one per core).')
  serve.add_argument('--tls-cert', type=flags.readable_file,
                     help='PEM certificate chain: serve over TLS.')
  serve.add_argument('--tls-key', type=flags.readable_file,
                     help='PEM private key of --tls-cert.')
  serve.add_argument('--grace-seconds', type=flags.non_negative_float,
                     default=defaults.GRACE_SECONDS,
                     help='On SIGTERM, how long requests in flight may take to finish.')
  serve.set_defaults(handler=_serve)


def _server_config(args):
  """The ServerConfig the flags describe; ValueError for inconsistent ones."""
  if bool(args.tls_cert) != bool(args.tls_key):
    raise ValueError('--tls-cert and --tls-key go together')
  if args.batching_parameters_file and not args.enable_batching:
    raise ValueError('--batching-parameters-file batches: it contradicts --no-enable-batching')
  if '://' not in args.model_dir and not os.path.isdir(args.model_dir):
    raise ValueError(f'--model-dir {args.model_dir}: no such folder')
  from vaetfx.serving import batching, limits, server  # pylint: disable=g-import-not-at-top
  parameters = None
  if args.batching_parameters_file:
    with open(args.batching_parameters_file, encoding='utf-8') as f:
      parameters = batching.BatchingParameters.from_text(f.read())
  elif args.enable_batching:
    parameters = batching.BatchingParameters(max_batch_size=args.max_batch_rows,
                                             num_batch_threads=defaults.BATCH_THREADS)
  return server.ServerConfig(
      model_dir=args.model_dir, model_name=args.model_name, host=args.host, port=args.port,
      poll_seconds=args.poll_seconds,
      version_policy=args.version_policy,
      version_labels=dict(args.version_label), max_load_retries=args.max_num_load_retries,
      load_retry_seconds=args.load_retry_interval_seconds, threads=args.threads,
      max_message_bytes=args.max_message_mb << 20, batching_parameters=parameters,
      tls_cert_file=args.tls_cert or '', tls_key_file=args.tls_key or '', rest_port=args.rest_port,
      max_inflight_bytes=args.max_inflight_mb << 20,
      intra_op_threads=args.tensorflow_intra_op_parallelism,
      inter_op_threads=args.tensorflow_inter_op_parallelism,
      limits=limits.Limits(args.max_batch_rows, args.max_decoded_mb << 20,
                           args.max_sample_count, args.slice_rows))


def _serve(args) -> int:
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s')
  try:
    config = _server_config(args)
  except (ValueError, OSError) as e:
    print(f'error: {e}', file=sys.stderr)
    return EXIT_USAGE
  from vaetfx.serving import server  # pylint: disable=g-import-not-at-top
  try:
    server.serve_until_signalled(config, args.grace_seconds)
  except OSError as e:
    print(f'error: {e}', file=sys.stderr)
    return EXIT_SERVING_ERROR
  return flags.EXIT_OK


def _connection_flags() -> argparse.ArgumentParser:
  """Flags every query command shares: where the server is and which model version to ask."""
  parser = argparse.ArgumentParser(add_help=False)
  group = parser.add_argument_group('server and model')
  group.add_argument('--server', default=defaults.ADDRESS,
                     help='host:port of TF Serving or `vaetfx serve` (gRPC), or '
                          'http(s)://host:port of its REST API.')
  group.add_argument('--rest', action='store_true',
                     help='Use TF Serving\'s REST API: --server is then its REST port (TF '
                          'Serving\'s is 8501); an http:// or https:// --server implies it.')
  group.add_argument('--model-name', default=defaults.MODEL_NAME, help='Model to query.')
  version = group.add_mutually_exclusive_group()
  version.add_argument('--version', type=flags.integer(0, flags.INT64_MAX),
                       help='Ask for this version. Default: the latest.')
  version.add_argument('--version-label', default='',
                       help='Ask for the version behind this label (e.g. stable).')
  group.add_argument('--timeout', type=flags.positive_float, default=defaults.TIMEOUT_SECONDS,
                     help='Deadline of each call, in seconds.')
  group.add_argument('--tls', action='store_true',
                     help='Connect over TLS, trusting the system\'s root certificates.')
  group.add_argument('--tls-ca', default='',
                     help='PEM file of the CA that signed the server\'s certificate; '
                          'implies --tls.')
  group.add_argument('--max-message-mb', type=max_message_mb,
                     default=defaults.MAX_MESSAGE_BYTES >> 20,
                     help='Largest request or response accepted, in MiB.')
  group.add_argument('--rows-per-request', type=flags.positive_int,
                     default=defaults.ROWS_PER_REQUEST,
                     help='Images (or latent vectors) per Predict request: more are sent in '
                          'several requests to the version that answered the first, so '
                          'neither end holds a whole data set in one message.')
  return parser


def _image_inputs(parser: argparse.ArgumentParser):
  parser.add_argument('inputs', nargs='+', metavar='INPUT',
                      help='PNG/JPEG files (one digit each, resized to 28x28 if needed, '
                           'inverted if dark on light), .npy (uint8 [N, 28, 28]) or MNIST IDX '
                           'files (.gz or not).')
  parser.add_argument('--limit', type=flags.non_negative_int, default=64,
                      help='Use the first N images of the inputs together (0: all).')


def _add_query_parser(subparsers):
  query = subparsers.add_parser(
      'query', help='Query the served VAE over gRPC or REST (TF Serving or `vaetfx serve`).',
      description='Calls the model\'s signatures through TF Serving\'s PredictionService '
                  '(or its REST API with --rest). '
                  'Exit codes: 0 done, 1 the server failed or refused, 2 bad input file or '
                  'flag, 130 interrupted.')
  commands = query.add_subparsers(dest='query_command', required=True, metavar='COMMAND')
  connection = _connection_flags()
  formatter = _HelpFormatter

  reconstruct = commands.add_parser(
      'reconstruct', parents=[connection], formatter_class=formatter,
      help='Encode and decode images; write originals next to reconstructions.',
      description='Runs serving_default; the PNG grid pairs each original (left) with its '
                  'reconstruction (right).')
  _image_inputs(reconstruct)
  reconstruct.add_argument('--output', '-o', default='reconstructions.png', help='PNG to write.')
  reconstruct.set_defaults(handler=_with_client(_reconstruct))

  encode = commands.add_parser(
      'encode', parents=[connection], formatter_class=formatter,
      help='Print or save latent vectors (mean and log-variance) of images.',
      description='Runs the encode signature. Without --output, prints one row per image.')
  _image_inputs(encode)
  encode.add_argument('--output', '-o', default='',
                      help='.npz: latent_mean and latent_logvar; .npy, .txt or .csv: latent_mean '
                           'only, the form `decode --input` reads.')
  encode.set_defaults(handler=_with_client(_encode))

  decode = commands.add_parser(
      'decode', parents=[connection], formatter_class=formatter,
      help='Decode latent vectors into digit images.',
      description='Runs the decode signature on --latent values or on an --input file.')
  source = decode.add_mutually_exclusive_group(required=True)
  source.add_argument('--latent', action='append', metavar='V1,V2,...',
                      help='One latent vector, comma-separated; repeatable. Write '
                           '--latent=-0.5,1 when the first value is negative.')
  source.add_argument('--input', help='.npy [N, L] or [L], .npz (its latent_mean), or a '
                                      '.txt/.csv with one vector per row.')
  decode.add_argument('--output', '-o', default='decoded.png', help='PNG grid to write.')
  decode.set_defaults(handler=_with_client(_decode))

  sample = commands.add_parser(
      'sample', parents=[connection], formatter_class=formatter,
      help='Draw digits from the prior.',
      description='Runs the sample signature: latents from N(0, I), decoded. A plain '
                  'autoencoder (vaetfx run --model ae) has none: decode chosen codes instead.')
  sample.add_argument('--count', type=flags.integer(1, defaults.MAX_SAMPLE_COUNT), default=16,
                      help='How many digits.')
  sample.add_argument('--seed', type=flags.integer(0, flags.INT64_MAX), default=None,
                      help='Seed for a repeatable draw, 0 to 2^63-1. Default: a fresh random '
                           'draw.')
  sample.add_argument('--output', '-o', default='samples.png', help='PNG grid to write.')
  sample.set_defaults(handler=_with_client(_sample))

  score = commands.add_parser(
      'score', parents=[connection], formatter_class=formatter,
      help='Print each image\'s ELBO (an autoencoder\'s reconstruction log-likelihood); low '
           'values are anomalies.',
      description='Runs serving_default and prints the evidence lower bound per image, in '
                  'nats: the lower, the less the model expects the image.')
  _image_inputs(score)
  score.add_argument('--threshold', type=flags.finite_float, default=None,
                     help='Mark images whose score is below this as anomalous.')
  score.set_defaults(handler=_with_client(_score))


def _import_client_without_tensorflow():
  """Imports the client and TF Serving's protos without running TensorFlow's __init__.

  tensorflow_serving.apis' generated modules import tensorflow.core.framework
  and tensorflow.core.protobuf, whose own __init__ files are empty; but the
  parent package `tensorflow` loads all of TensorFlow's runtime (about 5 s per
  `vaetfx query`), which the client never calls: tensors.py encodes with numpy.
  So while the protos load, a bare package with TensorFlow's path stands in for
  `tensorflow`; it is removed afterwards, so a later `import tensorflow` loads
  the real one, which reuses the proto modules already loaded.
  """
  if 'tensorflow' in sys.modules:
    return
  stand_in = types.ModuleType('tensorflow')
  stand_in.__path__ = list(importlib.util.find_spec('tensorflow').submodule_search_locations)
  sys.modules['tensorflow'] = stand_in
  try:
    importlib.import_module('vaetfx.serving.client')
  finally:
    if sys.modules.get('tensorflow') is stand_in:
      del sys.modules['tensorflow']


def _with_client(command):
  """Opens the client the flags describe and turns failures into a message and an exit code."""
  @functools.wraps(command)
  def handler(args) -> int:
    _import_client_without_tensorflow()
    from vaetfx.serving import client, images, status  # pylint: disable=g-import-not-at-top
    try:
      rest = args.rest or args.server.startswith(('http://', 'https://'))
      kind = client.RestClient if rest else client.ServingClient
      with kind(
          args.server, args.model_name, version=args.version, version_label=args.version_label,
          timeout=args.timeout, tls=args.tls, tls_ca_file=args.tls_ca,
          max_message_bytes=args.max_message_mb << 20,
          rows_per_request=args.rows_per_request) as serving:
        command(serving, args)
    except status.ServingError as e:
      print(f'error: {e}', file=sys.stderr)
      return EXIT_SERVING_ERROR
    except (images.InputFileError, OSError) as e:
      print(f'error: {e}', file=sys.stderr)
      return EXIT_USAGE
    return 0
  return handler


def _reconstruct(serving, args):
  from vaetfx.serving import images  # pylint: disable=g-import-not-at-top
  originals = images.read_images(args.inputs, args.limit)
  outputs = serving.reconstruct(originals)
  pairs = images.side_by_side(originals, outputs['reconstruction'])
  columns = 2 * int(np.ceil(np.sqrt(len(originals))))
  images.write_png(args.output, images.grid(pairs, columns))
  score = features.score_key(outputs)
  print(f'Wrote {len(originals)} originals and reconstructions to {args.output} '
        f'(mean {features.SCORE_NAMES[score]} {outputs[score].mean():.2f}).')


def _encode(serving, args):
  from vaetfx.serving import images  # pylint: disable=g-import-not-at-top
  mean, logvar = serving.encode(images.read_images(args.inputs, args.limit))
  suffix = os.path.splitext(args.output)[1].lower()
  if not args.output and logvar is None:
    print(f'# image, latent[{mean.shape[1]}] (an autoencoder\'s code)')
    for i, m in enumerate(mean):
      print(i, ' '.join(f'{x:.5f}' for x in m))
  elif not args.output:
    print(f'# image, latent_mean[{mean.shape[1]}], latent_logvar[{logvar.shape[1]}]')
    for i, (m, v) in enumerate(zip(mean, logvar)):
      print(i, ' '.join(f'{x:.5f}' for x in m), ' ', ' '.join(f'{x:.5f}' for x in v))
  elif suffix == '.npz' and logvar is None:
    np.savez(args.output, latent=mean)
  elif suffix == '.npz':
    np.savez(args.output, latent_mean=mean, latent_logvar=logvar)
  elif suffix == '.npy':
    np.save(args.output, mean)
  else:
    np.savetxt(args.output, mean, fmt='%.6f', delimiter=',' if suffix == '.csv' else ' ')
  if args.output:
    print(f'Wrote {len(mean)} latent vectors of size {mean.shape[1]} to {args.output}.')


def _decode(serving, args):
  from vaetfx.serving import images  # pylint: disable=g-import-not-at-top
  if args.input:
    latent = images.read_latents(args.input)
  else:
    try:
      rows = [[float(x) for x in text.split(',')] for text in args.latent]
    except ValueError as e:
      raise images.InputFileError(f'--latent: {e}') from e
    if len({len(row) for row in rows}) != 1:
      raise images.InputFileError('--latent: every vector needs the same number of values')
    latent = images.latents_array(rows, '--latent')
  decoded = serving.decode(latent)
  images.write_png(args.output, images.grid(decoded))
  print(f'Wrote {len(decoded)} decoded digits to {args.output}.')


def _sample(serving, args):
  from vaetfx.serving import client, images  # pylint: disable=g-import-not-at-top
  seed = client.RANDOM_SEED if args.seed is None else args.seed
  samples = serving.sample(args.count, seed)
  images.write_png(args.output, images.grid(samples))
  print(f'Wrote {len(samples)} sampled digits to {args.output}.')


def _score(serving, args):
  from vaetfx.serving import images  # pylint: disable=g-import-not-at-top
  elbo = serving.score(images.read_images(args.inputs, args.limit))
  print(f'image\t{serving.score_key()}')
  for i, value in enumerate(elbo):
    flag = '\tanomalous' if args.threshold is not None and value < args.threshold else ''
    print(f'{i}\t{value:.3f}{flag}')
  if args.threshold is not None:
    print(f'# {int((elbo < args.threshold).sum())} of {len(elbo)} below {args.threshold:g}')

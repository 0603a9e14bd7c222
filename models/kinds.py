"""Each kind of model the product trains, as one record the rest of the code asks.

A kind is what `--model` names: the seeds' convolutional VAE (conv), seed 002's
Keras MLP VAE (mlp) and seed 003's plain MLP autoencoder (ae). Its record says
everything that differs between kinds: its training defaults, the code that
builds, trains and exports it (dotted names, imported only when asked, so that
the command line reads a record without loading TensorFlow), the per-image
score it exports and gates on, the TFMA metric averaging that score, the
signatures it serves, the pipeline and serving names it runs under by default,
and the report's pictures. Adding a kind is its own module plus a record here.
"""
import dataclasses
import importlib
from typing import Any, Callable, Mapping, Tuple

from vaetfx.shared import features

# What a kind serves, in this order (the warmup file's); only a variational kind has a prior
# to `sample` from.
SIGNATURES = ('serving_default', 'encode', 'decode', 'sample', 'from_examples')
SAMPLE_SIGNATURE = 'sample'
# The report's pictures (components/vae_report draws each by this name).
RECONSTRUCTIONS = 'reconstructions'
PRIOR_SAMPLES = 'prior_samples'
LATENT_SPACE = 'latent_space'
MANIFOLD = 'manifold'  # A variational kind's, drawn only for a 2-D latent space.
LOG_LIKELIHOOD = 'log_likelihood'  # The IWAE bound: needs a posterior and a prior.
CODE_SPACE = 'code_space'
CODE_GRID = 'code_grid'
# The VAEs' training defaults: README's measurements (models/hparams.py says which).
VAE_DEFAULTS = {'epochs': 22, 'batch_size': 128, 'learning_rate': 4e-3,
                'learning_rate_schedule': 'cosine', 'estimator': 'analytic', 'beta': 1.0,
                'eval_samples': 2}


@dataclasses.dataclass(frozen=True)
class ModelKind:
  """One kind of model. Fields naming code are dotted `module.attribute` paths (load())."""
  name: str  # The --model value.
  title: str  # In words, for help texts, the summary and the report's title.
  help: str
  variational: bool  # A prior and a posterior: KL settings, `sample`, the IWAE bound.
  defaults: Mapping[str, Any]  # The training fields left None take these.
  score_key: str  # The exported per-image score (features.SCORE_NAMES), gated and ranked on.
  tfma_metric: str  # The name of the TFMA metric averaging score_key: what the gate reads.
  tfma_metric_class: str  # Its class in models/score_metrics.py.
  networks: str  # (latent_dim, dtype) -> (encoder, decoder) Keras models
  model_class: str  # (encoder, decoder, latent_dim) -> the model (models/vae.EncoderDecoder)
  training_loop: str  # The TrainingLoop subclass of models/trainer.py that trains and exports it.
  pipeline_name: str  # Defaults: a kind is gated and served apart from the others.
  serving_model_name: str
  report_pictures: Tuple[str, ...]
  not_drawn: str = ''  # What the report leaves out for this kind, and why.

  @property
  def score_name(self) -> str:
    return features.SCORE_NAMES[self.score_key]

  @property
  def signatures(self) -> Tuple[str, ...]:
    return tuple(name for name in SIGNATURES if self.variational or name != SAMPLE_SIGNATURE)

  def load(self, field: str) -> Any:
    """The code a field names (networks, model_class, training_loop), imported now."""
    module, _, attribute = getattr(self, field).rpartition('.')
    return getattr(importlib.import_module(module), attribute)

  def build(self, hparams) -> Any:
    """The untrained model `hparams` (a TrainingHparams of this kind) describes."""
    from vaetfx.models import vae  # pylint: disable=g-import-not-at-top  (TensorFlow)
    encoder, decoder = self.load('networks')(hparams.latent_dim, vae.layer_dtype(hparams))
    return self.load('model_class')(encoder, decoder, hparams.latent_dim)


_VAE_PICTURES = (RECONSTRUCTIONS, PRIOR_SAMPLES, LATENT_SPACE, MANIFOLD, LOG_LIKELIHOOD)

CONV = ModelKind(
    name='conv', title='convolutional VAE',
    help='the seeds\' convolutional VAE',
    variational=True, defaults=VAE_DEFAULTS, score_key=features.ELBO_KEY,
    tfma_metric='mean_elbo', tfma_metric_class='MeanElbo',
    networks='vaetfx.models.vae.conv_networks', model_class='vaetfx.models.vae.VAE',
    training_loop='vaetfx.models.trainer.TrainingLoop',
    pipeline_name='vae-mnist', serving_model_name='vae', report_pictures=_VAE_PICTURES)
MLP = dataclasses.replace(
    CONV, name='mlp', title='MLP VAE', help='the Keras MLP VAE of seed 002',
    networks='vaetfx.models.vae.mlp_networks')
AUTOENCODER = ModelKind(
    name='ae', title='autoencoder',
    help='the plain MLP autoencoder of seed 003 (784-500-300-L-300-500-784, gated on its '
         'held-out reconstruction log-likelihood, no `sample` signature)',
    variational=False,
    defaults={'epochs': 10, 'batch_size': 50, 'learning_rate': 1e-3,
              'learning_rate_schedule': 'constant'},
    score_key=features.RECONSTRUCTION_LOG_LIKELIHOOD_KEY,
    tfma_metric='mean_reconstruction_log_likelihood',
    tfma_metric_class='MeanReconstructionLogLikelihood',
    networks='vaetfx.models.autoencoder.networks',
    model_class='vaetfx.models.autoencoder.Autoencoder',
    training_loop='vaetfx.models.trainer.AutoencoderLoop',
    pipeline_name='ae-mnist', serving_model_name='ae',
    report_pictures=(RECONSTRUCTIONS, CODE_SPACE, CODE_GRID),
    not_drawn='prior samples and the IWAE log-likelihood bound: a plain autoencoder has no '
              'prior over its codes and no posterior variance')

KINDS = {kind.name: kind for kind in (CONV, MLP, AUTOENCODER)}
# The VAEs' noise and KL settings: the fields a kind that is not variational refuses.
VARIATIONAL_ONLY = tuple(sorted(set(VAE_DEFAULTS) - set(AUTOENCODER.defaults)))


def per_kind(value: Callable[[ModelKind], Any]) -> str:
  """`value` of each kind in words for --help, kinds with the same value together:
  'vae-mnist for conv/mlp, ae-mnist for ae'; kinds where it is None are left out."""
  names = {}
  for each in KINDS.values():
    if value(each) is not None:
      names.setdefault(value(each), []).append(each.name)
  return ', '.join(f'{shown} for {"/".join(kind_names)}' for shown, kind_names in names.items())


def kind(name: str) -> ModelKind:
  """The record of `--model name`; ValueError naming the known kinds."""
  if name not in KINDS:
    raise ValueError(f'model {name!r}: expected one of {", ".join(KINDS)}')
  return KINDS[name]

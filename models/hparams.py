"""The Trainer's hyperparameters: one frozen dataclass that travels as custom_config.

The CLI builds a flag per field from its `help` metadata, the pipeline passes
`to_custom_config()` to the Trainer, and run_fn reads it back with
`from_custom_config()`.

Defaults: the best configuration measured on the 22,699 real training images
within `make run`'s budget on 2 CPU cores. Sweeps scored on a noisier held-out
ELBO than today's (about 2 nats): after 8 epochs, latent_dim 32 ended 4 nats
above 16 and 15 above 8, and batch 128 at learning rate 2e-3 ended 2 nats above
1e-3; after 16 epochs at latent_dim 32, batch 128 at 2e-3 ended 1.6 nats above
batch 64 at 1e-3 for 6% less CPU, and the two estimators ended level
(closed-form KL -84.6, Monte Carlo -83.3).

Learning rate and its schedule, from whole runs on the real split (final
held-out ELBO over all 10,000 test images, seed 0, batch 128, latent_dim 32):
constant 2e-3 ended at -81.59 after 18 epochs and -81.03 after 24; a cosine
decay from 2e-3 at -81.95 after 18 (annealing a small rate overfits: the
training ELBO went on rising); cosine from 6e-3 at -81.14 after 18, from 5e-3
at -80.69 after 20, from 4e-3 at -80.52 after 22. So cosine from 4e-3 over 22
epochs, about 10 s each on an idle 2-core machine. XLA and mixed precision are off:
paired on this CPU, the train step ran 3.3x slower per CPU-second under XLA and
190x slower in float16 (default 1,056, XLA 321, float16 6 images per
CPU-second); both are for GPUs.

The plain autoencoder (`ae`, seed 003) trains with its seed's settings: Adam at
a constant 1e-3, batch 50, 10 epochs. These four fields therefore default to
None, "the model's default", which __post_init__ replaces by the VAEs' or the
autoencoder's value; a value given explicitly is kept for either model. The
VAEs' estimator, beta and eval_samples stay None for the autoencoder, and giving
one is an error: it would change nothing but the Trainer's cache key.
"""
import dataclasses
from typing import Any, Dict, Optional

from vaetfx.models import kinds
from vaetfx.shared.validation import (Range, WHOLE_NON_NEGATIVE, WHOLE_POSITIVE, check_fields,
                                     value_type)

ESTIMATORS = ('monte_carlo', 'analytic')
LEARNING_RATE_SCHEDULES = ('cosine', 'constant')
# The pipeline adds this key to the Trainer's custom_config so that a code change
# re-trains (pipeline/code_fingerprint.py); it is not a hyperparameter.
CODE_FINGERPRINT_KEY = 'code_fingerprint'
# Epochs of a warm-started retrain, from bench/warm_start_bench.py on real MNIST cut into two
# spans (docs/measurements.md): from the span-1 model, 2 epochs on span 2 ended 0.56 nats above
# 22 cold epochs (-83.90 against -84.46) in 0.15-0.19 of the cold Trainer time; 3 and 4 epochs
# ended higher still (-83.56, -83.29) but took 0.21-0.27 of it, over the quarter issue #24 allows.
WARM_START_EPOCHS = 2


def _default_help(name: str) -> str:
  """Each kind's default of a field whose default depends on the kind."""
  refused = [kind.name for kind in kinds.KINDS.values() if name not in kind.defaults]
  text = 'Default: ' + kinds.per_kind(lambda kind: kind.defaults.get(name))
  return text + (f'; refused with --model {"/".join(refused)}.' if refused else '.')


@dataclasses.dataclass(frozen=True)
class TrainingHparams:
  """Everything a user tunes about training; all values are JSON-safe scalars."""
  model: str = dataclasses.field(default='conv', metadata={
      'help': 'What to train: ' + '; '.join(f'{kind.name}: {kind.help}'
                                            for kind in kinds.KINDS.values()) + '.',
      'choices': tuple(kinds.KINDS)})
  latent_dim: int = dataclasses.field(default=32, metadata={
      'help': 'Size of the latent space (2 lets the report draw the latent manifold).',
      'range': WHOLE_POSITIVE})
  epochs: Optional[int] = dataclasses.field(default=None, metadata={
      'help': 'Passes over the whole train split. ' + _default_help('epochs'),
      'range': WHOLE_POSITIVE})
  batch_size: Optional[int] = dataclasses.field(default=None, metadata={
      'help': 'Global batch size (split across GPUs when there are several). '
              + _default_help('batch_size'),
      'range': WHOLE_POSITIVE})
  learning_rate: Optional[float] = dataclasses.field(default=None, metadata={
      'help': 'Adam learning rate (the peak one under the cosine schedule). '
              + _default_help('learning_rate'),
      'range': Range(0, above=True)})
  learning_rate_schedule: Optional[str] = dataclasses.field(default=None, metadata={
      'help': 'cosine: decay the learning rate to 0 along a half cosine over all training '
              'steps; constant: keep it. ' + _default_help('learning_rate_schedule'),
      'choices': LEARNING_RATE_SCHEDULES})
  estimator: Optional[str] = dataclasses.field(default=None, metadata={
      'help': 'VAEs only. ELBO estimator for training: closed-form KL (analytic, seed 002) or the '
              'single-sample log p(x|z) + log p(z) - log q(z|x) (monte_carlo, seed 000). '
              + _default_help('estimator'),
      'choices': ESTIMATORS})
  beta: Optional[float] = dataclasses.field(default=None, metadata={
      'help': 'VAEs only. Weight of the KL term in the training loss (beta-VAE); 1 is the '
              'ELBO. ' + _default_help('beta'),
      'range': Range(0)})
  seed: int = dataclasses.field(default=0, metadata={
      'help': 'Seed of weight initialization, shuffling and training noise.',
      'range': Range(0, 2**31 - 1, whole=True)})
  mixed_precision: bool = dataclasses.field(default=False, metadata={
      'help': 'Compute in float16 with float32 variables and loss (mixed_float16) and '
              'dynamic loss scaling; pays off on GPUs, not on CPUs.'})
  xla: bool = dataclasses.field(default=False, metadata={
      'help': 'Compile the train step with XLA (jit_compile).'})
  eval_samples: Optional[int] = dataclasses.field(default=None, metadata={
      'help': 'VAEs only. Noise draws K per image in the deterministic held-out ELBO (the '
              'per-epoch evaluation and the exported `elbo`); each image gets its own fixed '
              'draws. ' + _default_help('eval_samples'),
      'range': WHOLE_POSITIVE})
  warm_start: bool = dataclasses.field(default=True, metadata={
      'help': 'Start from the weights of the served model (the Trainer\'s base model) when it '
              'is of the same kind and architecture and was trained on other data, and train '
              '--warm-start-epochs; --no-warm-start always trains from scratch.'})
  warm_start_epochs: int = dataclasses.field(default=WARM_START_EPOCHS, metadata={
      'help': 'Passes over the train split when training starts from the served model '
              '(docs/measurements.md: continuous training).',
      'range': WHOLE_POSITIVE})
  monitor_examples: int = dataclasses.field(default=1000, metadata={
      'help': 'Held-out images scored after each epoch (evenly spaced through the split); '
              'the whole split is scored once after the last epoch. 0: the whole split '
              'after every epoch.',
      'range': WHOLE_NON_NEGATIVE})

  def __post_init__(self):
    check_fields(self)  # The model's name first: its record gives the defaults.
    given = [name for name in kinds.VARIATIONAL_ONLY
             if name not in self.kind.defaults and getattr(self, name) is not None]
    if given:
      flags = ' '.join('--' + name.replace('_', '-') for name in given)
      raise ValueError(f'{", ".join(given)} ({flags}): VAE settings, which --model '
                       f'{self.model} has not (it is deterministic and has no KL term); '
                       'leave them out')
    for name, default in self.kind.defaults.items():
      if getattr(self, name) is None:
        object.__setattr__(self, name, default)
    check_fields(self)

  @property
  def kind(self) -> kinds.ModelKind:
    """The record of the model this trains (models/kinds.py)."""
    return kinds.kind(self.model)

  @property
  def score_key(self) -> str:
    """The per-image score the model exports and the gate averages (its kind's). Models with
    the same score compare."""
    return self.kind.score_key

  def to_custom_config(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_custom_config(cls, custom_config: Dict[str, Any]) -> 'TrainingHparams':
    """Missing keys take their defaults; unknown keys are an error, so a typo never goes unseen."""
    custom_config = {k: v for k, v in custom_config.items() if k != CODE_FINGERPRINT_KEY}
    fields = {field.name: field for field in dataclasses.fields(cls)}
    unknown = sorted(set(custom_config) - set(fields))
    if unknown:
      raise ValueError(f'unknown hyperparameters {unknown}; known: {sorted(fields)}')
    return cls(**{name: _checked_value(fields[name], value)
                  for name, value in custom_config.items()})


def _checked_value(field: dataclasses.Field, value: Any) -> Any:
  """JSON writes 1.0 as 1, so an int is a valid float; any other type mismatch is an error."""
  expected = value_type(field)
  if value is None and expected is not field.type:  # Optional: the model's default.
    return value
  if expected is float and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if type(value) is not expected:  # pylint: disable=unidiomatic-typecheck
    raise TypeError(f'{field.name}={value!r}: expected {expected.__name__}')
  return value

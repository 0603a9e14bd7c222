"""Every setting of a pipeline run, in one place, with the measured defaults.

Configuration flows one way: CLI flags (vaetfx/flags.py) -> PipelineConfig ->
create_pipeline(config) -> each component's properties. Nothing below reads the
environment.
"""
import dataclasses
import os
from typing import List, Optional, Tuple

from vaetfx.models import kinds
from vaetfx.models.hparams import TrainingHparams
from vaetfx.shared import validation
from vaetfx.shared.model_name import check_model_name

# The default kind's; each kind runs under its own names by default (models/kinds.py).
PIPELINE_NAME = kinds.CONV.pipeline_name
MODEL_NAME = kinds.CONV.serving_model_name
# What a run does when the served model cannot be its gate's baseline (GateConfig).
ON_INCOMPARABLE_BASELINE = ('stop', 'floor')
# What a run does when the new data drifted from the previous data (DriftConfig).
ON_DRIFT = ('retrain', 'stop')
# apache_beam.options.pipeline_options.DirectOptions' defaults.
BEAM_DEFAULT_RUNNING_MODE = 'in_memory'
BEAM_DEFAULT_NUM_WORKERS = 1
# MnistExampleGen's split patterns: every file of the data folder, or, for a folder
# of span-1/, span-2/, ... folders, one of them (TFX's driver fills {SPAN} in).
ALL_FILES_PATTERN = '*'
SPAN_PATTERN = 'span-{SPAN}/*'
# The run-time parameter of a compiled Kubeflow spec that picks the span: TFX's RangeConfig as
# JSON (its ExampleGen driver's own form); empty picks the newest span.
SPAN_PARAMETER = 'span_range_config'


@dataclasses.dataclass(frozen=True)
class BeamConfig:
  """Beam's DirectRunner for a laptop; `extra_args` reach any runner (Dataflow, Flink, Spark)."""
  # in_memory was measured faster than multi_processing on 2 cores (README: Measured).
  direct_running_mode: str = BEAM_DEFAULT_RUNNING_MODE
  direct_num_workers: int = BEAM_DEFAULT_NUM_WORKERS
  extra_args: Tuple[str, ...] = ()

  def pipeline_args(self) -> List[str]:
    """The Beam flags, leaving out DirectRunner settings equal to Beam's own defaults.

    With any Beam argument at all, each TFX Beam executor first packages TFX as an
    sdist for remote workers (tfx/utils/dependency_utils.py: a copy of TFX's tree
    and a `setup.py sdist` subprocess: 7-9 s per component measured under a load
    of 8-9 on 2 cores), which
    the local DirectRunner never uses; the default configuration passes none.
    """
    args = []
    if self.direct_running_mode != BEAM_DEFAULT_RUNNING_MODE:
      args.append(f'--direct_running_mode={self.direct_running_mode}')
    if self.direct_num_workers != BEAM_DEFAULT_NUM_WORKERS:
      args.append(f'--direct_num_workers={self.direct_num_workers}')
    return [*args, *self.extra_args]


@dataclasses.dataclass(frozen=True)
class GateConfig:
  """The Evaluator's blessing rule on the held-out mean ELBO (nats per image).

  The floor and the tolerance apply to the overall mean only. digit_tolerance,
  when set, also refuses a model more than that many nats below the baseline on
  any one digit (None: per-digit results are reported, not gated).

  The baseline is the version TF Serving serves from the serving folder, found
  when the run runs (components/served_baseline). on_incomparable_baseline says
  what happens when that model cannot be compared (pushed by something else, a
  symlink, or a model of another kind): 'stop' the run before training, or gate
  on the 'floor' alone.
  """
  score_floor: float = -150.0
  score_tolerance: float = 2.0
  on_incomparable_baseline: str = 'stop'
  digit_tolerance: Optional[float] = None

  def __post_init__(self):
    for name in ('score_tolerance', 'digit_tolerance'):
      value = getattr(self, name)
      if value is not None and not value >= 0:
        raise ValueError(f'{name}={value}: expected a number of nats, 0 or more')
    if self.on_incomparable_baseline not in ON_INCOMPARABLE_BASELINE:
      raise ValueError(f'on_incomparable_baseline={self.on_incomparable_baseline!r}: expected '
                       f'one of {", ".join(ON_INCOMPARABLE_BASELINE)}')


@dataclasses.dataclass(frozen=True)
class PushConfig:
  """Where blessed models go: `<serving_dir>/<model_name>/<version>/`, TF Serving's layout."""
  serving_dir: str = ''
  model_name: str = MODEL_NAME
  keep_versions: int = 3

  def __post_init__(self):
    check_model_name(self.model_name)
    if self.keep_versions < 1:
      raise ValueError(f'keep_versions={self.keep_versions}: expected 1 or more '
                       '(the pushed version is always kept)')


@dataclasses.dataclass(frozen=True)
class ReportConfig:
  """The report's held-out log-likelihood: the IWAE bound (models/iwae.py) of the first
  `likelihood_examples` eval digits for K = 1, 10, ..., `likelihood_samples`.

  The defaults fit the issue's 60 s budget: the conv VAE at latent_dim 32 took
  20.4 CPU-seconds for 50 images at K=1000 (0.41 per image, measured on the
  shared 2-core machine at load 9), so 200 images cost about 82 CPU-seconds,
  under a minute of wall time on two idle cores.
  """
  likelihood_examples: int = dataclasses.field(default=200, metadata={
      'help': 'Held-out digits (the first ones of the eval split) whose log-likelihood '
              'bound the report computes; 0 skips it.',
      'range': validation.WHOLE_NON_NEGATIVE})
  likelihood_samples: int = dataclasses.field(default=1000, metadata={
      'help': 'Largest number K of importance samples per digit (a power of ten); the '
              'bound is reported for K = 1, 10, ... up to it.',
      'range': validation.PowersOfTen()})

  def __post_init__(self):
    validation.check_fields(self)


@dataclasses.dataclass(frozen=True)
class DriftConfig:
  """The drift check before training (components/drift_check): the new data's labels (TFDV's
  L-infinity distance) and the served model's scores on it (Kolmogorov-Smirnov) against the
  previous data's. Both distances are in [0, 1]; the threshold applies to each.

  The default sits between what the benchmark measured on real MNIST
  (bench/drift_bench.py, docs/measurements.md): random re-splits of one distribution, 500
  to 10,000 digits a side, stayed at or below 0.061 on both signals, while digits 0-4 after
  5-9 and inverted digits reached 0.189 or more on at least one.
  """
  drift_threshold: float = dataclasses.field(default=0.1, metadata={
      'help': 'Drift when the new data\'s label distribution (L-infinity, TFDV) or the served '
              'model\'s scores on it (Kolmogorov-Smirnov) differ from the previous data\'s by '
              'more than this: a distance from 0 (the same) to 1 (nothing in common).',
      'range': validation.Range(0.0, 1.0)})
  on_drift: str = dataclasses.field(default='retrain', metadata={
      'help': 'What a run does when the data drifted: retrain (and report it), or stop before '
              'training (exit status 3, the distances in the summary).',
      'choices': ON_DRIFT})

  def __post_init__(self):
    validation.check_fields(self)


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  """A whole run: where data and outputs live and how each component is set.

  `output_dir` is a local folder or a URI for `vaetfx run` (then `metadata_db`
  names a local SQLite file); on Kubeflow the roots are URIs given explicitly
  (pipeline_root_uri, push.serving_dir).
  """
  data_dir: str
  output_dir: str
  pipeline_name: str = PIPELINE_NAME
  digits: Tuple[int, ...] = ()
  # SPAN_PATTERN when data_dir holds span folders, decided when the pipeline is built.
  data_pattern: str = ALL_FILES_PATTERN
  # With SPAN_PATTERN: the span to read; 0 reads the newest. `vaetfx run` always names one
  # (the newest it found), so a span has one cache key however it was asked for.
  span: int = 0
  # The span is chosen when a compiled (Kubeflow) pipeline runs: SPAN_PARAMETER, default `span`.
  span_at_run_time: bool = False
  # The rolling window: train on the newest `train_spans` spans (span-K+1 .. span).
  train_spans: int = 1
  # The window's older spans found in data_dir, oldest first: the local runner runs the data
  # half of each before the run (cached once done), so the window finds them in ML Metadata.
  older_spans: Tuple[int, ...] = ()
  hparams: TrainingHparams = TrainingHparams()
  gate: GateConfig = GateConfig()
  push: PushConfig = PushConfig()
  report: ReportConfig = ReportConfig()
  drift: DriftConfig = DriftConfig()
  beam: BeamConfig = BeamConfig()
  enable_cache: bool = True
  pipeline_root_uri: str = ''
  # ML Metadata's SQLite file, which must be local; default <output_dir>/metadata.db.
  metadata_db: str = ''

  def __post_init__(self):
    if self.train_spans < 1:
      raise ValueError(f'train_spans={self.train_spans}: expected 1 or more')

  @property
  def pipeline_root(self) -> str:
    return self.pipeline_root_uri or os.path.join(self.output_dir, 'pipeline_root')

  @property
  def metadata_path(self) -> str:
    return self.metadata_db or os.path.join(self.output_dir, 'metadata.db')

  @property
  def serving_dir(self) -> str:
    return self.push.serving_dir or os.path.join(self.output_dir, 'serving')

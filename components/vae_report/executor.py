"""VaeReport's executor: pictures of what the trained VAE does with held-out digits, in one folder.

Everything comes through the exported SavedModel's signatures (serving_default,
decode, sample; models/export.py), the same ones TF Serving exposes, so the report shows the
model as it will be served, Transform layer included, and not a Python object
that may differ from it. The anomaly pictures come from BulkInferrer's scores of
the whole held-out split, made through the same model's from_examples signature.

For the plain autoencoder (--model ae) the report draws its code space and a
grid decoded over it, and names its metric, the reconstruction log-likelihood;
prior samples and the IWAE bound need a prior and an encoder's variance, which
it has not, so the page says they are left out.
"""
import dataclasses
import html
import json
import os
import statistics
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from absl import logging
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils
from tfx.utils import path_utils

from vaetfx.components import digits
from vaetfx.components.vae_report import plots
from vaetfx.models import export
from vaetfx.models import iwae, kinds
from vaetfx.shared import features

MODEL_KEY = 'model'
MODEL_RUN_KEY = 'model_run'
EXAMPLES_KEY = 'examples'
SCORED_EXAMPLES_KEY = 'scored_examples'
SCORE_FEATURE = features.ELBO_KEY  # BulkInferrer's output column for a VAE.
REPORT_KEY = 'report'
NUM_EXAMPLES_KEY = 'num_examples'
SEED_KEY = 'seed'
LIKELIHOOD_EXAMPLES_KEY = 'likelihood_examples'
LIKELIHOOD_SAMPLES_KEY = 'likelihood_samples'
MODEL_KIND_KEY = 'model_kind'

HISTORY_FILE = 'history.json'
HISTORY_SERIES = {'train_{}': 'training', 'eval_{}': 'held-out'}  # Keys by score key.
INDEX_FILE = 'index.html'
RECONSTRUCTIONS_FILE = 'reconstructions.png'
PRIOR_SAMPLES_FILE = 'prior_samples.png'
LATENT_SPACE_FILE = 'latent_space.png'
MANIFOLD_FILE = 'manifold.png'
CODE_SPACE_FILE = 'code_space.png'
CODE_GRID_FILE = 'code_grid.png'
ELBO_CURVES_FILE = 'elbo_curves.png'
LIKELIHOOD_FILE = iwae.RESULTS_FILE
LIKELIHOOD_PLOT_FILE = 'log_likelihood.png'
LOWEST_SCORING_FILE = 'lowest_scoring.png'
SCORES_BY_DIGIT_FILE = 'scores_by_digit.png'

RECONSTRUCTED_COUNT = 30
PRIOR_SAMPLE_COLUMNS = 10
PRIOR_SAMPLE_COUNT = 100
MANIFOLD_SIZE = 15
LOWEST_SCORING_COUNT = 64
LOWEST_SCORING_COLUMNS = 8


@dataclasses.dataclass(frozen=True)
class ScoredDigits:
  """Held-out digits with their anomaly scores (ELBO, nats per image; low = unusual)."""
  images: np.ndarray  # uint8 [N, 28, 28]
  labels: np.ndarray  # int64 [N]
  scores: np.ndarray  # float32 [N]


def read_scored_digits(split_uri: str, score_feature: str = SCORE_FEATURE) -> ScoredDigits:
  """Every example BulkInferrer wrote for a split: ExampleGen's features plus the score
  (`elbo`, or the autoencoder's `reconstruction_log_likelihood`)."""
  parsed = digits.read_split(split_uri, {**digits.DIGIT_SPEC,
                                         score_feature: tf.io.FixedLenFeature([], tf.float32)})
  return ScoredDigits(digits.as_images(parsed[features.IMAGE_KEY]), parsed[features.LABEL_KEY],
                      parsed[score_feature])


def scored_eval_split(scored_examples: List[types.Artifact],
                      score_feature: str = SCORE_FEATURE) -> Optional[ScoredDigits]:
  """BulkInferrer's held-out scores; None without that input."""
  if not scored_examples:
    return None
  return read_scored_digits(artifact_utils.get_split_uri(scored_examples, features.EVAL_SPLIT),
                            score_feature)


def read_elbo_history(path: str, score_key: str = SCORE_FEATURE) -> Dict[str, List[float]]:
  """Per-epoch ELBO series by label ('training', 'held-out') from the Trainer's history.json:
  {"epochs": [{"epoch": 1, "train_elbo": ..., "eval_elbo": ...}, ...], ...} (models/trainer.py);
  the autoencoder's train_ and eval_reconstruction_log_likelihood with its `score_key`.

  Empty without the file or epochs, so the report still shows its other pictures.
  """
  if not fileio.exists(path):
    return {}
  with fileio.open(path, 'r') as f:
    epochs = json.load(f).get('epochs', [])
  if not epochs:
    return {}
  return {label: [float(record[key.format(score_key)]) for record in epochs]
          for key, label in HISTORY_SERIES.items()}


@dataclasses.dataclass(frozen=True)
class Plane:
  """A plane of the latent space to draw points in: origin + (x, y) @ basis."""
  origin: np.ndarray  # [L]
  basis: np.ndarray  # [2, L], orthonormal rows
  axis_labels: Tuple[str, str]

  def project(self, latents: np.ndarray) -> np.ndarray:
    return (latents - self.origin) @ self.basis.T

  def latents(self, points: np.ndarray) -> np.ndarray:
    return (self.origin + points @ self.basis).astype(np.float32)


def latent_plane(latents: np.ndarray, name: str = 'latent mean') -> Plane:
  """The latent space itself in two dimensions; otherwise the plane of the first two principal
  components through the points' mean (numpy SVD), labelled with the variance each explains."""
  if latents.shape[1] == 2:
    return Plane(np.zeros(2), np.eye(2), (f'z1 ({name})', f'z2 ({name})'))
  origin = latents.mean(axis=0)
  _, singular_values, directions = np.linalg.svd(latents - origin, full_matrices=False)
  explained = singular_values**2 / np.sum(singular_values**2)
  return Plane(origin, directions[:2], (f'PC1 ({explained[0]:.0%} of variance)',
                                        f'PC2 ({explained[1]:.0%} of variance)'))


def project_to_2d(latent_means: np.ndarray) -> Tuple[np.ndarray, Tuple[str, str]]:
  """The means in latent_plane's two dimensions, and the axes' labels."""
  plane = latent_plane(latent_means)
  return plane.project(latent_means), plane.axis_labels


def manifold_grid(size: int) -> Tuple[np.ndarray, np.ndarray]:
  """Grid values at the prior's 5%..95% quantiles, equal steps of prior mass rather than
  of distance, and the [size * size, 2] latents row-major with z2 decreasing (image rows).
  """
  quantiles = np.linspace(0.05, 0.95, size)
  values = np.array([statistics.NormalDist().inv_cdf(q) for q in quantiles], np.float32)
  z1, z2 = np.meshgrid(values, values[::-1])
  return values, np.stack([z1.ravel(), z2.ravel()], axis=1)


def write_index_html(report_dir: str, figures: Sequence[Tuple[str, str]],
                     numbers: Sequence[Tuple[str, str]], title: str = 'VAE report'):
  """One page: the key numbers, then each PNG with its caption."""
  rows = ''.join(f'<tr><th>{html.escape(name)}</th><td>{html.escape(value)}</td></tr>\n'
                 for name, value in numbers)
  images = ''.join(
      f'<figure><img src="{html.escape(name)}" alt="{html.escape(caption)}">'
      f'<figcaption>{html.escape(caption)}</figcaption></figure>\n' for name, caption in figures)
  page = (
      '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
      f'<title>{html.escape(title)}</title>\n'
      '<style>body{font-family:sans-serif;max-width:60em;margin:auto}'
      'th{text-align:left;padding-right:1em}img{max-width:100%}'
      'figure{margin:2em 0}</style></head>\n'
      f'<body><h1>{html.escape(title)}</h1>\n'
      f'<table>\n{rows}</table>\n{images}</body></html>\n')
  with fileio.open(os.path.join(report_dir, INDEX_FILE), 'w') as f:
    f.write(page)


def _key_numbers(latent_dim: int, scores: np.ndarray, history: Dict[str, List[float]],
                 model_path: str, metric: str = 'ELBO') -> List[Tuple[str, str]]:
  numbers = [('model', model_path), ('latent dimensions', str(latent_dim)),
             (f'mean {metric} of {len(scores)} held-out digits', f'{float(np.mean(scores)):.2f}')]
  numbers += [(f'{label} {metric} after epoch {len(values)}', f'{values[-1]:.2f}')
              for label, values in history.items()]
  return numbers


def _reconstructions(images, labels, reconstructions, report_dir: str,
                     decoded_from: str = 'the latent mean') -> Tuple[str, str]:
  shown = np.argsort(labels[:RECONSTRUCTED_COUNT], kind='stable')
  plots.plot_reconstructions(images[shown] / 255.0, reconstructions[shown],
                             os.path.join(report_dir, RECONSTRUCTIONS_FILE))
  return RECONSTRUCTIONS_FILE, ('Held-out digits, each above its reconstruction: pixel '
                                f'probabilities decoded from {decoded_from}.')


def _prior_samples(vae: export.ExportedModel, seed: int, report_dir: str) -> Tuple[str, str]:
  samples = vae.sample(PRIOR_SAMPLE_COUNT, seed)
  plots.plot_digit_grid(samples, PRIOR_SAMPLE_COLUMNS, 'Samples from the prior',
                        os.path.join(report_dir, PRIOR_SAMPLES_FILE))
  return PRIOR_SAMPLES_FILE, (f'{PRIOR_SAMPLE_COUNT} digits decoded from latents drawn from '
                              f'the N(0, I) prior (seed {seed}).')


def _latent_space(latent_means: np.ndarray, labels: np.ndarray, report_dir: str) -> Tuple[str, str]:
  points, axis_labels = project_to_2d(latent_means)
  latent_dim = latent_means.shape[1]
  projection = 'latent means' if latent_dim == 2 else f'PCA of the {latent_dim}-D latent means'
  plots.plot_latent_space(points, labels, axis_labels, f'{len(labels)} held-out digits: {projection}',
                          os.path.join(report_dir, LATENT_SPACE_FILE))
  return LATENT_SPACE_FILE, (f'Latent space of {len(labels)} held-out digits ({projection}), '
                             'coloured by label.')


def _manifold(vae: export.ExportedModel, report_dir: str) -> Tuple[str, str]:
  values, latents = manifold_grid(MANIFOLD_SIZE)
  plots.plot_manifold(vae.decode(latents), values, os.path.join(report_dir, MANIFOLD_FILE))
  return MANIFOLD_FILE, (f'Digits decoded over a {MANIFOLD_SIZE}x{MANIFOLD_SIZE} grid of latent '
                         "values at the prior's 5%..95% quantiles.")


def _code_space(codes: np.ndarray, labels: np.ndarray, report_dir: str) -> Tuple[str, str]:
  plane = latent_plane(codes, 'code')
  latent_dim = codes.shape[1]
  projection = 'codes' if latent_dim == 2 else f'PCA of the {latent_dim}-D codes'
  plots.plot_latent_space(plane.project(codes), labels, plane.axis_labels,
                          f'Code space: {len(labels)} held-out digits ({projection})',
                          os.path.join(report_dir, CODE_SPACE_FILE))
  return CODE_SPACE_FILE, (f'Code space of the autoencoder: {len(labels)} held-out digits '
                           f'({projection}), coloured by label.')


def _code_grid(model: export.ExportedModel, codes: np.ndarray, report_dir: str) -> Tuple[str, str]:
  """Digits decoded over a grid spanning the held-out codes' 5%..95% quantiles on each axis of
  latent_plane: the code space has no prior whose quantiles a VAE's manifold uses."""
  plane = latent_plane(codes, 'code')
  points = plane.project(codes)
  quantiles = np.linspace(0.05, 0.95, MANIFOLD_SIZE)
  x_values, y_values = (np.quantile(points[:, axis], quantiles) for axis in (0, 1))
  x, y = np.meshgrid(x_values, y_values[::-1])
  decoded = model.decode(plane.latents(np.stack([x.ravel(), y.ravel()], axis=1)))
  where = 'the code space' if codes.shape[1] == 2 else 'the plane of the codes\' first two PCs'
  plots.plot_manifold(decoded, x_values, os.path.join(report_dir, CODE_GRID_FILE), y_values,
                      plane.axis_labels, f'Decoded over {where} (held-out codes\' 5%..95%)')
  return CODE_GRID_FILE, (
      f'Digits decoded over a {MANIFOLD_SIZE}x{MANIFOLD_SIZE} grid of {where}, spanning the '
      f'5%..95% quantiles of the {len(codes)} held-out codes on each axis.')


def _elbo_curves(history: Dict[str, List[float]], report_dir: str,
                 metric: str = 'ELBO') -> Tuple[str, str]:
  plots.plot_elbo_curves(history, os.path.join(report_dir, ELBO_CURVES_FILE), metric)
  return ELBO_CURVES_FILE, (f'Training {metric} (mean over the epoch\'s batches) and held-out '
                            f'{metric} (after the epoch) per epoch, from the Trainer\'s '
                            f'{HISTORY_FILE}.')


def heldout_likelihood(vae: export.ExportedModel, images: np.ndarray, labels: np.ndarray,
                       max_samples: int, seed: int,
                       concurrent_calls: int = iwae.CONCURRENT_CALLS
                       ) -> Optional[iwae.HeldoutLikelihood]:
  """The IWAE bounds of `images`; None for no images or a model exported without decode_logits.
  concurrent_calls: iwae.heldout_log_likelihood's (bench/iwae_bench.py compares them)."""
  if not len(images) or vae.decode_logits is None:
    return None
  def encode(batch):
    encoded = vae.encode(batch)
    return encoded['latent_mean'], encoded['latent_logvar']

  result = iwae.heldout_log_likelihood(encode, vae.decode_logits, images, labels, max_samples, seed,
                                       concurrent_calls)
  logging.info('Held-out log-likelihood of %d digits in %.1f s: %s', len(images), result.seconds,
               result.overall)
  return result


def _likelihood(result: iwae.HeldoutLikelihood, report_dir: str) -> Tuple[str, str]:
  with fileio.open(os.path.join(report_dir, LIKELIHOOD_FILE), 'w') as f:
    json.dump(result.to_json(), f, indent=1)
  plots.plot_bound_vs_samples(result.overall, result.by_digit,
                              os.path.join(report_dir, LIKELIHOOD_PLOT_FILE))
  count = len(result.labels)
  return LIKELIHOOD_PLOT_FILE, (
      f'Held-out log-likelihood: the importance-weighted bound L_K of the first {count} '
      f'held-out digits (seed {result.seed}) against K, overall and per digit. L_1 is the ELBO; '
      f'L_K rises towards log p(x) with K. Numbers in {LIKELIHOOD_FILE}.')


def _likelihood_numbers(result: iwae.HeldoutLikelihood) -> List[Tuple[str, str]]:
  """Each K's bound, with its standard error over the choice of digits when there are two or
  more (the Monte Carlo error of the bound is much smaller: docs/pipeline.md)."""
  errors = result.standard_errors
  return [(f'held-out log-likelihood, IWAE bound K={count} ({len(result.labels)} digits)'
           + ('' if errors[count] is None else ' ± standard error over the digits'),
           iwae.format_bound(value, errors[count])) for count, value in result.overall.items()]


def _lowest_scoring(scored: ScoredDigits, report_dir: str,
                    metric: str = 'ELBO') -> Tuple[str, str]:
  shown = np.argsort(scored.scores, kind='stable')[:LOWEST_SCORING_COUNT]
  plots.plot_scored_digits(scored.images[shown] / 255.0, scored.labels[shown],
                           scored.scores[shown], LOWEST_SCORING_COLUMNS,
                           os.path.join(report_dir, LOWEST_SCORING_FILE), metric)
  return LOWEST_SCORING_FILE, (
      f'The {len(shown)} lowest-scoring of {len(scored.scores)} held-out digits, lowest first, '
      f'each with its label and anomaly score ({metric}, nats): the digits least like the '
      'training data.')


def _scores_by_digit(scored: ScoredDigits, report_dir: str,
                     metric: str = 'ELBO') -> Tuple[str, str]:
  shown = min(LOWEST_SCORING_COUNT, len(scored.scores))
  cutoff = float(np.sort(scored.scores)[shown - 1])
  plots.plot_scores_by_digit(scored.scores, scored.labels, cutoff,
                             os.path.join(report_dir, SCORES_BY_DIGIT_FILE), metric)
  return SCORES_BY_DIGIT_FILE, (
      f'Anomaly scores of the {len(scored.scores)} held-out digits per label (BulkInferrer); '
      f'at and below the dashed line: the {shown} lowest-scoring digits drawn above.')


def _anomaly_numbers(scored: ScoredDigits, metric: str = 'ELBO') -> List[Tuple[str, str]]:
  return [('held-out digits scored by BulkInferrer', str(len(scored.scores))),
          (f'lowest anomaly score ({metric})', f'{float(np.min(scored.scores)):.2f}'),
          (f'median anomaly score ({metric})', f'{float(np.median(scored.scores)):.2f}')]


def write_report(model: export.ExportedModel, kind: kinds.ModelKind, model_path: str,
                 images: np.ndarray, labels: np.ndarray, history: Dict[str, List[float]],
                 report_dir: str, seed: int, likelihood: Optional[iwae.HeldoutLikelihood] = None,
                 scored: Optional[ScoredDigits] = None) -> List[str]:
  """Writes every PNG and index.html into `report_dir`; returns the PNG file names.

  The pictures are the kind's (kind.report_pictures: a VAE's prior samples,
  latent space and manifold, an autoencoder's code space and a grid decoded
  over it). The manifold needs a 2-D latent space, the curves need
  history.json, the log-likelihood plot needs `likelihood` and the anomaly
  pictures BulkInferrer's scores, so each appears only when it can be drawn.
  """
  fileio.makedirs(report_dir)
  encoded = digits.reconstruct_in_batches(model, images)
  metric = kind.score_name
  code = encoded['latent_mean' if kind.variational else 'latent']
  drawings = {
      kinds.RECONSTRUCTIONS: lambda: _reconstructions(
          images, labels, encoded['reconstruction'], report_dir,
          'the latent mean' if kind.variational else 'its code'),
      kinds.PRIOR_SAMPLES: lambda: _prior_samples(model, seed, report_dir),
      kinds.LATENT_SPACE: lambda: _latent_space(code, labels, report_dir),
      kinds.MANIFOLD: lambda: _manifold(model, report_dir) if model.latent_dim == 2 else None,
      kinds.LOG_LIKELIHOOD: lambda: _likelihood(likelihood, report_dir) if likelihood else None,
      kinds.CODE_SPACE: lambda: _code_space(code, labels, report_dir),
      kinds.CODE_GRID: lambda: _code_grid(model, code, report_dir),
  }
  figures = [figure for figure in (drawings[name]() for name in kind.report_pictures) if figure]
  if history:
    figures.append(_elbo_curves(history, report_dir, metric))
  numbers = _key_numbers(model.latent_dim, encoded[kind.score_key], history, model_path, metric)
  if kind.not_drawn:
    numbers.append(('not drawn', kind.not_drawn))
  if likelihood is not None:
    numbers += _likelihood_numbers(likelihood)
  if scored is not None:
    figures += [_lowest_scoring(scored, report_dir, metric),
                _scores_by_digit(scored, report_dir, metric)]
    numbers += _anomaly_numbers(scored, metric)
  write_index_html(report_dir, figures, numbers, f'{kind.title[0].upper()}{kind.title[1:]} report')
  return [name for name, _ in figures]


class Executor(base_executor.BaseExecutor):
  """Loads the Trainer's serving model and writes the report into the `report` artifact."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    model_artifact = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
    model_path = path_utils.serving_model_path(model_artifact.uri,
                                               path_utils.is_old_model_artifact(model_artifact))
    model_run = artifact_utils.get_single_instance(input_dict[MODEL_RUN_KEY])
    split_uri = artifact_utils.get_split_uri(input_dict[EXAMPLES_KEY], features.EVAL_SPLIT)
    report = artifact_utils.get_single_instance(output_dict[REPORT_KEY])
    num_examples = exec_properties[NUM_EXAMPLES_KEY]
    likelihood_examples = exec_properties[LIKELIHOOD_EXAMPLES_KEY]
    images, labels = digits.read_heldout_digits(split_uri, max(num_examples, likelihood_examples))
    model = export.load_exported_model(model_path)
    kind = kinds.kind(exec_properties[MODEL_KIND_KEY])
    likelihood = None
    if kinds.LOG_LIKELIHOOD in kind.report_pictures:
      likelihood = heldout_likelihood(model, images[:likelihood_examples],
                                      labels[:likelihood_examples],
                                      exec_properties[LIKELIHOOD_SAMPLES_KEY],
                                      exec_properties[SEED_KEY])
    written = write_report(model, kind, model_path, images[:num_examples], labels[:num_examples],
                           read_elbo_history(os.path.join(model_run.uri, HISTORY_FILE),
                                             kind.score_key),
                           report.uri, exec_properties[SEED_KEY], likelihood,
                           scored_eval_split(input_dict.get(SCORED_EXAMPLES_KEY, []),
                                             kind.score_key))
    logging.info('Report written to %s: %s', os.path.join(report.uri, INDEX_FILE), written)

"""DriftCheck's executor: the new data against the previous data, before anything trains.

Two signals, each the largest difference between two distributions (0: the same,
1: nothing in common), so one threshold reads on both:

- labels, against the previous span: TFDV's drift comparator, the L-infinity
  distance between the label distributions (a schema with
  `drift_comparator.infinity_norm` on `label`, tfdv.validate_statistics with
  previous_statistics; the anomalies are kept);
- the served model's view, against what it knows: its per-image score (the
  kind's score_key: a VAE's ELBO, an autoencoder's reconstruction
  log-likelihood) on the new data against its score on the data it was
  evaluated on, which its provenance record names (ServedModelImporter's
  `provenance`): the two-sample Kolmogorov-Smirnov statistic, with the shift of
  the median in nats. Digits the model has not seen, or seen differently
  (inverted), score lower whatever their labels say.

The previous span comes from the driver (driver.py: ML Metadata, on local
runs); without one (the first span, data without spans, Kubeflow) the labels
are compared with the served model's data too. Both sides compare their
held-out `eval` split, the data the gate scores.

The served model's scores of both sides are drawn as two histograms
(score_drift.png, beside drift.json); the run summary names the file. A signal
is not checked when its previous data is missing (nothing served yet, a served
model that is not comparable, data that is gone); the result says why. With
on_drift='stop', drift fails this component with DataDrifted, which carries the
result: the run ends before the Trainer.
"""
import dataclasses
import json
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pandas as pd
import tensorflow_data_validation as tfdv
from absl import logging
from scipy import stats
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils
from tfx.utils import path_utils

from vaetfx.components.served_baseline import executor as served_baseline
from vaetfx.components.vae_report import plots
from vaetfx.components.digits import read_heldout_digits, reconstruct_in_batches
from vaetfx.models import export
from vaetfx.shared import features

EXAMPLES_KEY = 'examples'
BASELINE_MODEL_KEY = 'baseline_model'
DRIFT_KEY = 'drift'
THRESHOLD_KEY = 'threshold'
ON_DRIFT_KEY = 'on_drift'
ON_DRIFT_CHOICES = ('retrain', 'stop')
SCORE_KEY = 'score_key'
SCORED_EXAMPLES_KEY = 'scored_examples'
SEED_KEY = 'seed'
# Set by the driver when the component runs: the previous span's Examples (JSON), or ''.
PREVIOUS_SPAN_KEY = 'previous_span'

RESULT_FILE = 'drift.json'
ANOMALIES_FILE = 'anomalies.pbtxt'
PICTURE_FILE = 'score_drift.png'
# Custom properties of the DataDrift artifact, for readers of ML Metadata.
CHECKED_PROPERTY = 'checked'
DRIFTED_PROPERTY = 'drifted'


class DataDrifted(RuntimeError):
  """The data drifted past the threshold and the run was asked to stop (on_drift='stop')."""

  def __init__(self, result: 'DriftResult'):
    self.result = result
    super().__init__(result.describe())


@dataclasses.dataclass
class DriftResult:
  """What the check found. `labels_against` and `scores_against` say what each signal compared
  the new data with ({'what': in words, 'examples_uri', 'span', ...}); `not_checked` says why a
  signal was not measured."""
  threshold: float
  labels_against: Dict[str, Any] = dataclasses.field(default_factory=dict)
  scores_against: Dict[str, Any] = dataclasses.field(default_factory=dict)
  not_checked: List[str] = dataclasses.field(default_factory=list)
  label_l_infinity: Optional[float] = None
  score_name: str = ''
  score_ks: Optional[float] = None
  score_ks_pvalue: Optional[float] = None
  previous_median: Optional[float] = None
  new_median: Optional[float] = None
  scored: Tuple[int, int] = (0, 0)  # images scored on each side (previous, new)
  picture: str = ''  # the histograms of both sides' scores (PICTURE_FILE), once drawn

  @property
  def checked(self) -> bool:
    return self.label_l_infinity is not None or self.score_ks is not None

  @property
  def median_shift(self) -> Optional[float]:
    """New minus previous median score, nats per image: negative when the new data is less
    like what the model knows."""
    return None if self.new_median is None else self.new_median - self.previous_median

  @property
  def over_threshold(self) -> List[str]:
    """The signals above the threshold, in words."""
    signals = {'label distribution (L-infinity)': self.label_l_infinity,
               f'served model\'s {self.score_name} (Kolmogorov-Smirnov)': self.score_ks}
    return [name for name, value in signals.items()
            if value is not None and value > self.threshold]

  @property
  def drifted(self) -> bool:
    return bool(self.over_threshold)

  def describe(self) -> str:
    """One line for the summary and the error."""
    if not self.checked:
      return 'not checked: ' + '; '.join(self.not_checked)
    verdict = ('DRIFTED: ' + ' and '.join(self.over_threshold) + f' above {self.threshold:g}'
               if self.drifted else f'no drift (threshold {self.threshold:g})')
    parts = [verdict]
    if self.label_l_infinity is not None:
      parts.append(f'labels L-infinity {self.label_l_infinity:.3f} against '
                   f'{self.labels_against.get("what", "")}')
    if self.score_ks is not None:
      parts.append(
          f'served model\'s {self.score_name} KS {self.score_ks:.3f}, median '
          f'{self.previous_median:.2f} -> {self.new_median:.2f} nats ({self.median_shift:+.2f}), '
          f'{self.scored[1]} new against {self.scored[0]} held-out digits of '
          f'{self.scores_against.get("what", "")}')
    return '; '.join(parts + [f'not checked: {why}' for why in self.not_checked])

  def to_json(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, record: Dict[str, Any]) -> 'DriftResult':
    return cls(**{**record, 'scored': tuple(record.get('scored', (0, 0)))})


def label_schema(threshold: float) -> schema_pb2.Schema:
  """`label` as a categorical feature with TFDV's L-infinity drift comparator."""
  schema = schema_pb2.Schema()
  label = schema.feature.add(name=features.LABEL_KEY, type=schema_pb2.INT)
  label.int_domain.is_categorical = True
  label.drift_comparator.infinity_norm.threshold = threshold
  return schema


def label_statistics(labels: np.ndarray, schema: schema_pb2.Schema):
  """TFDV statistics of the labels alone, categorical as the schema says (in process, no Beam)."""
  return tfdv.generate_statistics_from_dataframe(
      pd.DataFrame({features.LABEL_KEY: labels.astype(np.int64)}),
      stats_options=tfdv.StatsOptions(schema=schema))


def label_drift(previous: np.ndarray, new: np.ndarray,
                threshold: float) -> Tuple[float, anomalies_pb2.Anomalies]:
  """TFDV's L-infinity distance between the two label distributions, and its anomalies."""
  schema = label_schema(threshold)
  anomalies = tfdv.validate_statistics(label_statistics(new, schema), schema,
                                       previous_statistics=label_statistics(previous, schema))
  [distance] = [measurement.value for info in anomalies.drift_skew_info
                for measurement in info.drift_measurements
                if measurement.type == anomalies_pb2.DriftSkewInfo.Measurement.L_INFTY]
  return distance, anomalies


def sample(count: int, limit: int, seed: int) -> np.ndarray:
  """Sorted indices of at most `limit` of `count` items, drawn without replacement: a file
  sorted by label must not give its first digits only."""
  if count <= limit:
    return np.arange(count)
  return np.sort(np.random.default_rng(seed).choice(count, limit, replace=False))


def score_images(model: export.ExportedModel, images: np.ndarray, score_key: str) -> np.ndarray:
  return reconstruct_in_batches(model, images)[score_key].astype(np.float64)


def score_drift(model: export.ExportedModel, score_key: str, previous: np.ndarray,
                new: np.ndarray, scored_examples: int, seed: int
                ) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
  """The served model's scores of at most `scored_examples` images of each side: the
  Kolmogorov-Smirnov statistic and p-value, both medians (DriftResult's fields), and the scores."""
  scores = {side: score_images(model, images[sample(len(images), scored_examples, seed)],
                               score_key)
            for side, images in (('previous', previous), ('new', new))}
  ks = stats.ks_2samp(scores['previous'], scores['new'])
  return {'score_name': features.SCORE_NAMES[score_key], 'score_ks': float(ks.statistic),
          'score_ks_pvalue': float(ks.pvalue),
          'previous_median': float(np.median(scores['previous'])),
          'new_median': float(np.median(scores['new'])),
          'scored': (len(scores['previous']), len(scores['new']))}, scores


def measure(model: export.ExportedModel, score_key: str,
            previous: Tuple[np.ndarray, np.ndarray], new: Tuple[np.ndarray, np.ndarray],
            threshold: float, scored_examples: int, seed: int) -> DriftResult:
  """Both signals for (images, labels) of one previous data set and the new data (the bench's
  cases; the executor may compare the labels with another data set than the scores)."""
  label_l_infinity, _ = label_drift(previous[1], new[1], threshold)
  fields, _ = score_drift(model, score_key, previous[0], new[0], scored_examples, seed)
  return DriftResult(threshold=threshold, label_l_infinity=label_l_infinity, **fields)


def served_data(baseline: Optional[types.Artifact]) -> Tuple[Optional[str], Dict[str, Any]]:
  """(the eval split folder of the data the served model was evaluated on, what it is), or
  (None, {'reason': why there is none})."""
  if baseline is None or not served_baseline.has_served_model(baseline):
    why = baseline and baseline.get_string_custom_property(served_baseline.NOT_COMPARED_KEY)
    return None, {'reason': f'the served model is not comparable ({why})' if why else
                            'nothing is served yet, so there is no previous data to compare with'}
  version = baseline.get_int_custom_property(served_baseline.SERVED_VERSION_KEY)
  provenance = json.loads(baseline.get_string_custom_property(served_baseline.PROVENANCE_KEY)
                          or '{}')
  data = provenance.get('data', {})
  examples_uri = data.get('examples_uri')
  split_uri = examples_uri and os.path.join(examples_uri, f'Split-{features.EVAL_SPLIT}')
  if not split_uri or not fileio.exists(split_uri):
    return None, {'reason': f'the data served version {version} was evaluated on '
                            f'({examples_uri or "not named in its provenance record"}) is '
                            'not readable'}
  return split_uri, {'what': f'served version {version}\'s evaluation data (span '
                             f'{data.get("span")})', 'examples_uri': examples_uri,
                     'span': data.get('span'), 'served_version': version}


def previous_span_data(record: str) -> Tuple[Optional[str], Dict[str, Any]]:
  """The driver's `previous_span` record as (its eval split folder, what it is); (None, {})
  without one."""
  if not record:
    return None, {}
  found = json.loads(record)
  return (os.path.join(found['examples_uri'], f'Split-{features.EVAL_SPLIT}'),
          {**found, 'what': f'the previous span, {found["span"]}'})


def draw_scores(scores: Dict[str, np.ndarray], result: DriftResult, path: str) -> str:
  """The two sides' scores as overlaid histograms, titled with the distance."""
  return plots.plot_score_drift(
      scores['previous'], scores['new'], path,
      f'Served model\'s {result.score_name}: {result.scores_against.get("what", "")} and the '
      f'new data\nKolmogorov-Smirnov {result.score_ks:.3f} (threshold {result.threshold:g})',
      result.score_name)


def write_result(drift_dir: str, result: DriftResult,
                 anomalies: Optional[anomalies_pb2.Anomalies] = None) -> None:
  fileio.makedirs(drift_dir)
  with fileio.open(os.path.join(drift_dir, RESULT_FILE), 'w') as f:
    json.dump(result.to_json(), f, indent=1)
  if anomalies is not None:
    tfdv.write_anomalies_text(anomalies, os.path.join(drift_dir, ANOMALIES_FILE))


def read_result(drift_dir: str) -> Optional[DriftResult]:
  """The result a DriftCheck wrote, None when there is none."""
  path = os.path.join(drift_dir, RESULT_FILE)
  if not fileio.exists(path):
    return None
  with fileio.open(path, 'r') as f:
    return DriftResult.from_json(json.load(f))


class Executor(base_executor.BaseExecutor):
  """Writes drift.json (and TFDV's anomalies, the scores' histograms) into the `drift` artifact;
  raises DataDrifted when the data drifted and on_drift is 'stop'."""

  def kept_dir(self, drift_uri: str) -> str:
    """Where a stopping run's files go: TFX removes a failed execution's outputs but keeps its
    stateful working directory (the artifact's folder when run without TFX's launcher)."""
    kept = self._context and self._context.stateful_working_dir
    return kept or drift_uri

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    drift = artifact_utils.get_single_instance(output_dict[DRIFT_KEY])
    threshold = float(exec_properties[THRESHOLD_KEY])
    score_key = exec_properties[SCORE_KEY]
    baselines = input_dict.get(BASELINE_MODEL_KEY)
    served_split, served = served_data(
        artifact_utils.get_single_instance(baselines) if baselines else None)
    span_split, span = previous_span_data(exec_properties.get(PREVIOUS_SPAN_KEY) or '')
    result = DriftResult(threshold=threshold)
    labels_split, result.labels_against = (span_split, span) if span_split else (served_split,
                                                                                 served)
    anomalies = scores = None
    if labels_split:  # Else there is nothing to compare with, and the new data is not read.
      new_images, new_labels = read_heldout_digits(
          artifact_utils.get_split_uri(input_dict[EXAMPLES_KEY], features.EVAL_SPLIT), -1)
      result.label_l_infinity, anomalies = label_drift(
          read_heldout_digits(labels_split, -1)[1], new_labels, threshold)
    if served_split:  # Then labels_split too: without a previous span, it is this.
      model = export.load_exported_model(
          path_utils.serving_model_path(artifact_utils.get_single_instance(baselines).uri))
      fields, scores = score_drift(model, score_key, read_heldout_digits(served_split, -1)[0],
                                   new_images, exec_properties[SCORED_EXAMPLES_KEY],
                                   exec_properties[SEED_KEY])
      result.scores_against = served
      for name, value in fields.items():
        setattr(result, name, value)
    else:
      result.not_checked.append(
          served['reason'] if not labels_split else
          f'the served model\'s {features.SCORE_NAMES[score_key]}: {served["reason"]}')
    stop = result.drifted and exec_properties[ON_DRIFT_KEY] == 'stop'
    result_dir = self.kept_dir(drift.uri) if stop else drift.uri
    fileio.makedirs(result_dir)
    if scores is not None:
      result.picture = draw_scores(scores, result, os.path.join(result_dir, PICTURE_FILE))
    write_result(result_dir, result, anomalies)
    drift.set_int_custom_property(CHECKED_PROPERTY, int(result.checked))
    drift.set_int_custom_property(DRIFTED_PROPERTY, int(result.drifted))
    logging.info('Drift: %s', result.describe())
    if stop:
      raise DataDrifted(result)

"""What a run ended with, read back from ML Metadata: the gated metric (a VAE's ELBO, the
autoencoder's reconstruction log-likelihood), the gate's verdict, the push, the report.

Read from the executions this run registered (cached ones included), so a
re-run that recomputed nothing still reports the model it reused.
"""
import dataclasses
import json
import os
from typing import Dict, List, Optional

import tensorflow as tf
import tensorflow_model_analysis as tfma
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tensorflow_model_analysis.proto import metrics_for_slice_pb2, validation_result_pb2

from vaetfx.components.atomic_pusher import executor as pusher
from vaetfx.components.drift_check import executor as drift_check
from vaetfx.components.served_baseline import executor as served_baseline
from vaetfx.components.serving_infra_validator import executor as infra_validator
from vaetfx.components.warm_start_base import executor as warm_start_base
from vaetfx.models import score_metrics, iwae, kinds
from vaetfx.shared import features, serving_folder


@dataclasses.dataclass
class ComponentRun:
  component: str
  seconds: float
  cached: bool
  execution_id: Optional[int] = None
  error: str = ''


# By TFMA metric name (models/kinds.py): the gated score in words, and what a kind's report
# leaves out.
SPAN = 'span'  # the custom property TFX's ExampleGen driver sets (SpanTransform copies it)
GATED_METRICS = {kind.tfma_metric: kind.score_name for kind in kinds.KINDS.values()}
NOT_DRAWN = {kind.tfma_metric: kind.not_drawn for kind in kinds.KINDS.values() if kind.not_drawn}


@dataclasses.dataclass
class RunSummary:
  """candidate_score and baseline_score hold the gated metric, gate_metric, whatever it is."""
  runs: List[ComponentRun]
  candidate_score: Optional[float] = None
  baseline_score: Optional[float] = None
  gate_metric: str = score_metrics.MEAN_ELBO
  blessed: Optional[bool] = None
  gate_failures: List[str] = dataclasses.field(default_factory=list)
  pushed_path: str = ''
  pushed_version: str = ''
  already_served: bool = False
  rollback_of: Optional[int] = None  # the older version whose model this push republished
  pushed_on_disk: bool = False  # read after the run: is the pushed version still there?
  baseline_version: Optional[int] = None  # the served version the gate compared with (-1: none)
  baseline_not_compared: str = ''  # why the served model was not the baseline (floor gate)
  foreign_versions: List[str] = dataclasses.field(default_factory=list)
  report_path: str = ''
  report_error: str = ''
  infra_blessed: Optional[bool] = None
  infra_failures: List[str] = dataclasses.field(default_factory=list)
  # The report's iwae.RESULTS_FILE: IWAE bounds by K, overall and by digit.
  log_likelihood: Dict = dataclasses.field(default_factory=dict)
  eval_span: Optional[int] = None  # the span ExampleGen ingested: the gate's eval split
  train_spans: List[int] = dataclasses.field(default_factory=list)  # the Trainer's examples'
  # DriftCheck's result (or why it did not check); drift_stopped: it ended the run (on_drift stop).
  drift: Optional[drift_check.DriftResult] = None
  drift_stopped: bool = False
  start: str = ''  # How the Trainer began: describe_start().


def output_artifacts(store: metadata_store.MetadataStore,
                     execution_id: int) -> Dict[str, metadata_store_pb2.Artifact]:
  """The execution's output artifacts by output key (e.g. 'blessing', 'pushed_model')."""
  events = [e for e in store.get_events_by_execution_ids([execution_id])
            if e.type in (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.PENDING_OUTPUT)]
  artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
  return {e.path.steps[0].key: artifacts[e.artifact_id] for e in events}


def input_artifacts(store: metadata_store.MetadataStore,
                    execution_id: int) -> Dict[str, List[metadata_store_pb2.Artifact]]:
  """The execution's input artifacts by input key (a rolling window gives several)."""
  events = [e for e in store.get_events_by_execution_ids([execution_id])
            if e.type == metadata_store_pb2.Event.INPUT]
  artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
  found: Dict[str, List[metadata_store_pb2.Artifact]] = {}
  for event in events:
    found.setdefault(event.path.steps[0].key, []).append(artifacts[event.artifact_id])
  return found


def overall_mean_elbo(evaluation_uri: str,
                      metric: str = score_metrics.MEAN_ELBO) -> Dict[str, float]:
  """The unsliced mean ELBO (or another `metric`) per model name ('candidate', 'baseline', or ''
  without a baseline)."""
  return score_metrics.overall_means(evaluation_uri).get(metric, {})


def slice_name(slice_key: metrics_for_slice_pb2.SliceKey) -> str:
  """'over all digits', 'on digit 8', or 'on <column> <value>, ...' for other slices."""
  parts = []
  for key in slice_key.single_slice_keys:
    value = getattr(key, key.WhichOneof('kind'))
    value = value.decode() if isinstance(value, bytes) else value
    parts.append(f'digit {value}' if key.column == features.LABEL_KEY else f'{key.column} {value}')
  return f'on {", ".join(parts)}' if parts else 'over all digits'


def describe_failure(slice_description: str,
                     failure: validation_result_pb2.ValidationFailure) -> str:
  """One failed threshold in words: the metric, the slice, its value and the threshold."""
  metric = failure.metric_key.name
  value = failure.metric_value.double_value.value
  threshold = failure.metric_threshold
  if failure.metric_key.is_diff and threshold.change_threshold.HasField('absolute'):
    return (f'{metric} {slice_description} is {-value:.2f} nats below the baseline\'s, '
            f'more than the {-threshold.change_threshold.absolute.value:.2f} allowed')
  if not failure.metric_key.is_diff and threshold.value_threshold.HasField('lower_bound'):
    return (f'{metric} {slice_description} is {value:.2f} nats, below the floor of '
            f'{threshold.value_threshold.lower_bound.value:.2f}')
  return f'{metric} {slice_description} = {value:.2f} failed: {failure.message}'


def gate_failures(evaluation_uri: str) -> List[str]:
  """One line per failed threshold, as TFMA's validator recorded it, with its slice."""
  result = tfma.load_validation_result(evaluation_uri)
  return [describe_failure(slice_name(per_slice.slice_key), failure)
          for per_slice in result.metric_validations_per_slice
          for failure in per_slice.failures]


def _custom(artifact: metadata_store_pb2.Artifact, name: str):
  value = artifact.custom_properties.get(name)
  if value is None:
    return None
  return getattr(value, value.WhichOneof('value'))


def describe_start(base_version: int, base_reason: str, history: Dict,
                   decided_earlier: bool = False) -> str:
  """'warm start from version V (N epochs)' or 'cold start: why (N epochs)', from
  WarmStartBase's base Model (its version, or -1 and why none) and the Trainer's history.json,
  whose `start` says whether the weights were loaded (and why not when they did not fit).

  decided_earlier: WarmStartBase was cached, so its decision (and reason) is the one made when
  this data first came (components/warm_start_base/executor.py): the serving folder may have
  changed since, and a reason stated in the present tense would no longer be true of it.
  """
  start = history.get('start', {})
  epochs = f' ({len(history.get("epochs", []))} epochs)'
  when = ', as decided when this data first came' if decided_earlier else ''
  if start.get('warm'):
    return f'warm start from version {base_version}{when}{epochs}'
  if base_version == warm_start_base.NO_BASE:
    reason = f'when this data first came, {base_reason}' if decided_earlier else base_reason
    return f'cold start: {reason}{epochs}'
  return f'cold start: version {base_version} did not fit: {start.get("reason", "?")}{epochs}'


def read_history(model_run_dir: str) -> Dict:
  """The Trainer's history.json (models/trainer.py), {} when it has none."""
  path = os.path.join(model_run_dir, 'history.json')
  if not tf.io.gfile.exists(path):
    return {}
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def summarize(store: metadata_store.MetadataStore, runs: List[ComponentRun]) -> RunSummary:
  summary = RunSummary(runs=runs)
  outputs = {run.component: output_artifacts(store, run.execution_id)
             for run in runs if run.execution_id is not None}
  examples = outputs.get('MnistExampleGen', {}).get('examples')
  if examples is not None:
    summary.eval_span = _custom(examples, SPAN)
  trainer = next((run for run in runs if run.component == 'Trainer' and run.execution_id), None)
  if trainer is not None:
    summary.train_spans = sorted(
        _custom(artifact, SPAN) for artifact in input_artifacts(
            store, trainer.execution_id).get('examples', [])
        if _custom(artifact, SPAN) is not None)
  evaluation = outputs.get('Evaluator', {}).get('evaluation')
  if evaluation is not None:
    scores = score_metrics.gated_scores(evaluation.uri)
    summary.gate_metric = scores['metric']
    summary.candidate_score, summary.baseline_score = scores['candidate'], scores['baseline']
    summary.gate_failures = gate_failures(evaluation.uri)
  baseline = outputs.get('ServedModelImporter', {}).get('baseline_model')
  if baseline is not None:
    summary.baseline_version = _custom(baseline, served_baseline.SERVED_VERSION_KEY)
    summary.baseline_not_compared = _custom(baseline, served_baseline.NOT_COMPARED_KEY) or ''
  base_model = outputs.get('WarmStartBase', {}).get('base_model')
  model_run = outputs.get('Trainer', {}).get('model_run')
  if base_model is not None and model_run is not None:
    summary.start = describe_start(_custom(base_model, warm_start_base.BASE_VERSION_KEY),
                                   _custom(base_model, warm_start_base.REASON_KEY) or '',
                                   read_history(model_run.uri),
                                   any(run.component == 'WarmStartBase' and run.cached
                                       for run in runs))
  blessing = outputs.get('Evaluator', {}).get('blessing')
  if blessing is not None:
    summary.blessed = bool(_custom(blessing, 'blessed'))
  pushed = outputs.get('AtomicPusher', {}).get('pushed_model')
  if pushed is not None and _custom(pushed, 'pushed'):
    summary.pushed_path = _custom(pushed, 'pushed_destination') or ''
    summary.pushed_version = str(_custom(pushed, 'pushed_version') or '')
    summary.already_served = bool(_custom(pushed, pusher.ALREADY_SERVED_KEY))
    summary.rollback_of = _custom(pushed, pusher.ROLLBACK_OF_KEY)
    summary.pushed_on_disk = serving_folder.holds_saved_model(summary.pushed_path)
  if pushed is not None:
    summary.foreign_versions = json.loads(_custom(pushed, pusher.FOREIGN_KEY) or '[]')
  drift = outputs.get('DriftCheck', {}).get(drift_check.DRIFT_KEY)
  if drift is not None:
    summary.drift = drift_check.read_result(drift.uri)
  report = outputs.get('VaeReport', {}).get('report')
  if report is not None:
    summary.report_path = os.path.join(report.uri, 'index.html')
    summary.log_likelihood = read_log_likelihood(report.uri)
  summary.report_error = next((run.error for run in runs if run.component == 'VaeReport'), '')
  infra_blessing = outputs.get('ServingInfraValidator', {}).get('blessing')
  if infra_blessing is not None:
    summary.infra_blessed = bool(_custom(infra_blessing, infra_validator.BLESSED_KEY))
    summary.infra_failures = infra_validator.read_failures(
        _custom(infra_blessing, infra_validator.FAILURES_KEY))
  return summary


def read_log_likelihood(report_dir: str) -> Dict:
  """The report's held-out log-likelihood (components/vae_report), {} when it has none."""
  path = os.path.join(report_dir, iwae.RESULTS_FILE)
  if not tf.io.gfile.exists(path):
    return {}
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def _log_likelihood_lines(result: Dict) -> List[str]:
  """Each K's bound with its standard error over the digits (absent from reports written before
  it was stated, and for a single digit), then the per-digit bounds at the largest K."""
  errors = result.get('standard_error', {})
  bounds = ', '.join(f'K={k} ' + iwae.format_bound(result['overall'][str(k)], errors.get(str(k)))
                     for k in result['samples'])
  stated = (', ± standard error over the digits'
            if any(errors.get(str(k)) is not None for k in result['samples']) else '')
  by_digit = ', '.join(f'{digit}: {values[str(result["samples"][-1])]:.1f}'
                       for digit, values in result['by_digit'].items())
  return [f'Held-out log-likelihood (IWAE bound, first {result["num_examples"]} eval digits, '
          f'nats per image{stated}): {bounds}',
          f'  by digit at K={result["samples"][-1]}: {by_digit}']


def _spans_words(spans: List[int]) -> str:
  if not spans:
    return 'spans not recorded'
  return (f'span {spans[0]}' if len(spans) == 1
          else f'spans {", ".join(str(span) for span in spans)}')


def format_summary(summary: RunSummary) -> str:
  """The end-of-run text: timings, then what the run decided and where its outputs are."""
  lines = ['Component wall times:']
  for run in summary.runs:
    timing = ('stopped' if run.error and summary.drift_stopped and run.component == 'DriftCheck'
              else 'FAILED' if run.error else 'cached' if run.cached else f'{run.seconds:7.1f} s')
    lines.append(f'  {run.component:<30} {timing}')
  if summary.eval_span or len(summary.train_spans) > 1:
    lines.append(f'Data: trained on {_spans_words(summary.train_spans)}, gated on span '
                 f'{summary.eval_span}\'s eval split')
  if summary.drift is not None:
    lines.append(f'Data drift: {summary.drift.describe()}')
    if summary.drift.picture:
      lines.append(f'  the served model\'s scores of both, as histograms: {summary.drift.picture}')
  if summary.drift_stopped:
    lines.append('Stopped before training, as --on-drift stop asks: nothing trained or pushed')
  if summary.start:
    lines.append(f'Trainer: {summary.start}')
  if summary.candidate_score is not None:
    baseline = (f'{summary.baseline_score:.2f} nats (version {summary.baseline_version}, served)'
                if summary.baseline_score is not None else
                'none (nothing served: gated on the floor)')
    if summary.baseline_not_compared:
      baseline = f'none: {summary.baseline_not_compared}; gated on the floor alone, as asked'

    lines += [f'Held-out {GATED_METRICS[summary.gate_metric]}: candidate '
              f'{summary.candidate_score:.2f} nats, baseline {baseline}']
  if summary.blessed is not None:
    verdict = 'BLESSED' if summary.blessed else 'NOT blessed'
    reasons = '; '.join(summary.gate_failures) or 'every threshold passed'
    lines.append(f'Evaluator: {verdict} ({reasons})')
  if summary.log_likelihood:
    lines += _log_likelihood_lines(summary.log_likelihood)
  if summary.gate_metric in NOT_DRAWN:
    lines.append(f'Not computed or drawn: {NOT_DRAWN[summary.gate_metric]}')
  if summary.infra_blessed is not None:
    lines.append('Infra validation: ' + (
        'BLESSED (served by `vaetfx serve`, every signature answered as in process)'
        if summary.infra_blessed else 'NOT blessed: ' + '; '.join(summary.infra_failures)))
  if summary.pushed_path and not summary.pushed_on_disk:
    lines.append(f'Pushed: MISSING: version {summary.pushed_version} ({summary.pushed_path}) is '
                 'no longer on disk; a re-run publishes it again')
  elif summary.pushed_path and summary.already_served:
    lines.append(f'Pushed: nothing new; version {summary.pushed_version}, the served one, '
                 f'already holds this model ({summary.pushed_path})')
  elif summary.pushed_path and summary.rollback_of is not None and summary.rollback_of >= 0:
    lines.append(f'Pushed: {summary.pushed_path} (version {summary.pushed_version}): the model '
                 f'of version {summary.rollback_of} served again (a rollback)')
  elif summary.pushed_path:
    lines.append(f'Pushed: {summary.pushed_path} (version {summary.pushed_version})')
  elif summary.blessed is not None or summary.infra_blessed is not None:
    lines.append('Pushed: nothing; the serving directory keeps its earlier versions')
  if summary.foreign_versions:
    lines.append('Left alone in the serving folder (not written by vaetfx): '
                 + '; '.join(summary.foreign_versions))
  if summary.report_error:
    lines.append(f'Report: FAILED ({summary.report_error}); the push above did not depend on it')
  elif summary.report_path:
    lines.append(f'Report: {summary.report_path}')
  return '\n'.join(lines)

"""models/kinds.py: each record's dotted names resolve, and its metric is the class it names."""
import pytest

from vaetfx.models import kinds, score_metrics
from vaetfx.shared import features


@pytest.mark.parametrize('kind', kinds.KINDS.values(), ids=lambda kind: kind.name)
def test_a_kinds_metric_class_computes_the_metric_the_gate_reads(kind):
  metric_class = getattr(score_metrics, kind.tfma_metric_class)
  assert metric_class().name == kind.tfma_metric
  assert kind.tfma_metric in score_metrics.GATED_METRICS
  assert kind.score_key in features.SCORE_NAMES


@pytest.mark.parametrize('kind', kinds.KINDS.values(), ids=lambda kind: kind.name)
def test_a_kinds_code_fields_name_importable_code(kind):
  for field in ('networks', 'model_class', 'training_loop'):
    assert callable(kind.load(field)), field


def test_only_a_variational_kind_serves_sample():
  assert 'sample' in kinds.CONV.signatures and 'sample' in kinds.MLP.signatures
  assert 'sample' not in kinds.AUTOENCODER.signatures
  assert kinds.AUTOENCODER.signatures[0] == 'serving_default'


def test_an_unknown_kind_is_refused_naming_the_known_ones():
  with pytest.raises(ValueError, match="model 'gan': expected one of conv, mlp, ae"):
    kinds.kind('gan')

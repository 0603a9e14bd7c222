"""The end-of-run text says why a model was not infra-blessed and what its log-likelihood is."""
from vaetfx.pipeline import run_summary

LIKELIHOOD = {'num_examples': 200, 'samples': [1, 10], 'overall': {'1': -90.5, '10': -86.25},
              'by_digit': {'0': {'1': -80.0, '10': -77.0}, '1': {'1': -40.0, '10': -38.5}}}


def test_not_infra_blessed_says_why_and_that_nothing_was_pushed():
  summary = run_summary.RunSummary(runs=[], blessed=True, infra_blessed=False,
                                   infra_failures=['decode.images: 8 of 8 values are not finite',
                                                   'sample: DEADLINE_EXCEEDED'])
  text = run_summary.format_summary(summary)
  assert ('Infra validation: NOT blessed: decode.images: 8 of 8 values are not finite; '
          'sample: DEADLINE_EXCEEDED') in text
  assert 'Pushed: nothing' in text


def test_log_likelihood_overall_and_by_digit():
  text = run_summary.format_summary(run_summary.RunSummary(runs=[], log_likelihood=LIKELIHOOD))
  assert ('Held-out log-likelihood (IWAE bound, first 200 eval digits, nats per image): '
          'K=1 -90.50, K=10 -86.25') in text
  assert 'by digit at K=10: 0: -77.0, 1: -38.5' in text


def test_log_likelihood_states_each_standard_error_when_the_report_has_them():
  stated = {**LIKELIHOOD, 'standard_error': {'1': 1.604, '10': 1.5}}
  text = run_summary.format_summary(run_summary.RunSummary(runs=[], log_likelihood=stated))
  assert ('Held-out log-likelihood (IWAE bound, first 200 eval digits, nats per image, '
          '± standard error over the digits): K=1 -90.50 ± 1.60, K=10 -86.25 ± 1.50') in text
  single = {**LIKELIHOOD, 'num_examples': 1, 'standard_error': {'1': None, '10': None}}
  text = run_summary.format_summary(run_summary.RunSummary(runs=[], log_likelihood=single))
  assert '±' not in text
  assert 'first 1 eval digits, nats per image): K=1 -90.50, K=10 -86.25' in text


def test_spans_are_named_only_when_the_data_has_spans():
  assert 'Data:' not in run_summary.format_summary(
      run_summary.RunSummary(runs=[], eval_span=0, train_spans=[0]))
  assert "Data: trained on span 4, gated on span 4's eval split" in run_summary.format_summary(
      run_summary.RunSummary(runs=[], eval_span=4, train_spans=[4]))
def _history(warm, reason='', epochs=4):
  return {'start': {'warm': warm, 'base_model': '/b', 'reason': reason},
          'epochs': [{}] * epochs}


def test_the_summary_says_whether_training_started_warm_and_from_which_version():
  warm = run_summary.describe_start(1700000000, '', _history(True))
  assert warm == 'warm start from version 1700000000 (4 epochs)'
  cold = run_summary.describe_start(-1, '/s/vae serves no model', _history(False, epochs=22))
  assert cold == 'cold start: /s/vae serves no model (22 epochs)'
  text = run_summary.format_summary(run_summary.RunSummary(runs=[], start=warm))
  assert 'Trainer: warm start from version 1700000000 (4 epochs)' in text


def test_a_base_whose_weights_did_not_fit_is_a_cold_start_with_the_trainers_reason():
  text = run_summary.describe_start(5, '', _history(False, 'variable dense/kernel:0 is [2, 4] '
                                                          'there and [2, 6] here', 22))
  assert text.startswith('cold start: version 5 did not fit: variable dense/kernel:0')


def test_a_start_decided_by_a_cached_run_says_it_was_decided_when_the_data_first_came():
  # Folder serving a model now, but WarmStartBase cached from the run that found it empty: the
  # reason is true of the folder as it was, and the line must not state it as the present.
  cold = run_summary.describe_start(-1, '/s/vae serves no model', _history(False, epochs=3),
                                    decided_earlier=True)
  assert cold == 'cold start: when this data first came, /s/vae serves no model (3 epochs)'
  warm = run_summary.describe_start(7, '', _history(True), decided_earlier=True)
  assert warm == 'warm start from version 7, as decided when this data first came (4 epochs)'

"""vaetfx: a TFX pipeline that trains a convolutional VAE on MNIST and serves it.

The package's sub-packages live in the repository's top-level folders
(`pipeline/`, `components/`, `models/`, `serving/`); setup.py maps them here.
"""
__version__ = '0.1.0'


def __getattr__(name):
  """`vaetfx.VaeReport` and `vaetfx.DataDrift`, the custom artifact classes, imported only when
  asked for.

  TFX's Kubeflow V2 container entrypoint finds a custom artifact's class by
  importing its type name, which Kubeflow requires to be `<namespace>.<Name>`
  (tfx/orchestration/kubeflow/v2/container/kubeflow_v2_entrypoint_utils.py):
  the VaeReport task's output is typed `vaetfx.VaeReport`, DriftCheck's
  `vaetfx.DataDrift`. Lazy, so that `import vaetfx` stays free of TFX.
  """
  if name == 'VaeReport':
    from vaetfx.components.vae_report.component import VaeReportArtifact  # pylint: disable=g-import-not-at-top
    return VaeReportArtifact
  if name == 'DataDrift':
    from vaetfx.components.drift_check.component import DataDrift  # pylint: disable=g-import-not-at-top
    return DataDrift
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')

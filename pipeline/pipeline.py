"""The pipeline definition, shared by every orchestrator: a pure create_pipeline(...).

Every setting is an argument; runners (local_runner, kubeflow_runner) decide them.
Module code is referenced by dotted names inside the installed `vaetfx` package,
so it travels with the package instead of being staged as a module file.
"""
from typing import List, Optional, Sequence

from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx

from vaetfx.components.mnist_example_gen.component import MnistExampleGen

PREPROCESSING_FN = 'vaetfx.models.preprocessing.preprocessing_fn'


def create_pipeline(
    pipeline_name: str,
    pipeline_root: str,
    data_root: str,
    digits: Sequence[int] = (),
    beam_pipeline_args: Optional[List[str]] = None,
    metadata_connection_config: Optional[metadata_store_pb2.ConnectionConfig] = None,
    enable_cache: bool = True,
) -> tfx.dsl.Pipeline:
  """MNIST -> statistics, schema, validation -> Transform (pixels binarized at 0.5)."""
  example_gen = MnistExampleGen(input_base=data_root, digits=digits)
  statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs['examples'])
  schema_gen = tfx.components.SchemaGen(statistics=statistics_gen.outputs['statistics'])
  example_validator = tfx.components.ExampleValidator(
      statistics=statistics_gen.outputs['statistics'], schema=schema_gen.outputs['schema'])
  transform = tfx.components.Transform(
      examples=example_gen.outputs['examples'],
      schema=schema_gen.outputs['schema'],
      preprocessing_fn=PREPROCESSING_FN,
      disable_statistics=True)  # StatisticsGen already describes the raw data.

  components = [example_gen, statistics_gen, schema_gen, example_validator, transform]
  return tfx.dsl.Pipeline(
      pipeline_name=pipeline_name,
      pipeline_root=pipeline_root,
      components=components,
      enable_cache=enable_cache,
      metadata_connection_config=metadata_connection_config,
      beam_pipeline_args=beam_pipeline_args or [],
  )

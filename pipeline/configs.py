"""Every setting of a pipeline run, in one place, with the measured defaults.

Configuration flows one way: CLI flags -> PipelineConfig -> create_pipeline()
arguments -> each component's custom_config. Nothing below reads the environment.
"""
import dataclasses
import os
from typing import Dict, List, Tuple

PIPELINE_NAME = 'vae-mnist'
MODEL_NAME = 'vae'


@dataclasses.dataclass(frozen=True)
class BeamConfig:
  """Beam's DirectRunner for a laptop; `extra_args` reach any runner (Dataflow, Flink, Spark)."""
  # in_memory was measured faster than multi_processing on 2 cores (README: Beam).
  direct_running_mode: str = 'in_memory'
  direct_num_workers: int = 1
  extra_args: Tuple[str, ...] = ()

  def pipeline_args(self) -> List[str]:
    return [f'--direct_running_mode={self.direct_running_mode}',
            f'--direct_num_workers={self.direct_num_workers}', *self.extra_args]


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  """A whole run: where data and outputs live and how each component is set."""
  data_dir: str
  output_dir: str
  pipeline_name: str = PIPELINE_NAME
  digits: Tuple[int, ...] = ()
  beam: BeamConfig = BeamConfig()
  enable_cache: bool = True

  @property
  def pipeline_root(self) -> str:
    return os.path.join(self.output_dir, 'pipeline_root')

  @property
  def metadata_path(self) -> str:
    return os.path.join(self.output_dir, 'metadata.db')

  def as_dict(self) -> Dict:
    return dataclasses.asdict(self)

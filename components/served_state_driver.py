"""A TFX driver that reads, when the component runs, what the serving folder serves.

TFX's cache key (tfx/orchestration/portable/cache_utils.py) hashes a component's
inputs and execution properties, all known before it runs; nothing in it sees
the serving folder, which TF Serving, other pipelines and people change. A
custom driver runs before the cache lookup and may add execution properties, as
ExampleGen's driver adds its input fingerprint: this one adds
`served_state` (serving_folder.served_state: the served version's number and
content digest), so a cached baseline is reused only while the folder still
serves what it served then. The Pusher's driver (atomic_pusher/driver.py) asks
a stricter question, since its result is a change to the folder. Local runs
(LocalDagRunner) run drivers; Kubeflow runs no custom driver, so the compiled
spec turns caching off for these tasks instead
(kubeflow_runner.ALWAYS_RUN_COMPONENTS).
"""
import os

from tfx.dsl.components.base import base_driver
from tfx.orchestration.portable import data_types
from tfx.orchestration import data_types_utils
from tfx.proto.orchestration import driver_output_pb2

from vaetfx.shared import serving_folder

SERVING_DIR_KEY = 'serving_dir'
MODEL_NAME_KEY = 'model_name'
SERVED_STATE_KEY = 'served_state'


class ServedStateDriver(base_driver.BaseDriver):
  """Adds `served_state` of `<serving_dir>/<model_name>` to the execution properties."""

  def served_state(self, model_dir: str, execution_info: data_types.ExecutionInfo) -> str:
    del execution_info  # What is served is the whole story for a reader of the folder.
    return serving_folder.served_state(model_dir)

  def run(self, execution_info: data_types.ExecutionInfo) -> driver_output_pb2.DriverOutput:
    properties = execution_info.exec_properties
    model_dir = os.path.join(properties[SERVING_DIR_KEY], properties[MODEL_NAME_KEY])
    output = driver_output_pb2.DriverOutput()
    data_types_utils.set_metadata_value(output.exec_properties[SERVED_STATE_KEY],
                                        self.served_state(model_dir, execution_info))
    return output

"""The Pusher's driver: a cached push is reused only while its model is the one served.

A push changes the folder it is keyed on, so keying it on what was served
before it ran (as ServedModelImporter is) would let a later run, finding the
folder as it was then (say, emptied), reuse a push whose version is gone. The
key says instead whether the blessed candidate is what TF Serving serves now:
if it is, the cached push is still true and is reused; if it is not, the key
is new every time, so the Pusher runs and makes it true (or reports why not).
An unblessed candidate's "nothing pushed" holds whatever the folder holds.
"""
import uuid

from tfx.orchestration.portable import data_types

from vaetfx.components import served_state_driver
from vaetfx.components.atomic_pusher import executor
from vaetfx.shared import serving_folder


class PushedStateDriver(served_state_driver.ServedStateDriver):

  def served_state(self, model_dir: str, execution_info: data_types.ExecutionInfo) -> str:
    if not executor.blessed(execution_info.input_dict):
      return 'not blessed'
    served = serving_folder.served_version(serving_folder.list_versions(model_dir))
    candidate = executor.model_to_push(execution_info.input_dict)
    if served is not None and not served.is_link and serving_folder.same_content(
        candidate, served.path):
      return f'serves the candidate: {serving_folder.served_state(model_dir)}'
    return f'to push: {uuid.uuid4().hex}'

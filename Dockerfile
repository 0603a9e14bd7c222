# The pipeline image: TFX 1.16's own image (Python 3.10 with CUDA, TFX, Beam and
# kfp) plus this project, installed non-editable against the same lock as the
# local venv. Every Kubeflow task runs `python -m vaetfx.pipeline.kubeflow_entrypoint`
# in it; the base's ENTRYPOINT (Beam's SDK harness boot) stays, so the image can
# also serve as Dataflow's or Flink's SDK container (--sdk_container_image).
FROM tensorflow/tfx:1.16.0

# TFX 1.16 and its Transform layer are Keras 2: tf.keras must be tf_keras,
# which TensorFlow decides on its first import.
ENV TF_USE_LEGACY_KERAS=1

# Installed from a copy that is then deleted: a source tree on the tasks'
# working path would shadow the installed `vaetfx` package.
COPY . /tmp/vaetfx-src
RUN python -m pip install --no-cache-dir -c /tmp/vaetfx-src/constraints.txt /tmp/vaetfx-src \
    && rm -rf /tmp/vaetfx-src

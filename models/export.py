"""The serving SavedModel: the trained VAE with Transform's graph inside, under named signatures.

Clients send what MNIST ships, uint8 images, and the model binarizes them with
the very graph Transform used for training. Signatures (N: batch, L: latent_dim):
  serving_default  images uint8 [N, 28, 28] -> reconstruction float32 [N, 28, 28]
                   (Bernoulli probabilities decoded from the latent mean),
                   latent_mean [N, L], latent_logvar [N, L], elbo [N] (nats per image)
  encode           images uint8 [N, 28, 28] -> latent_mean [N, L], latent_logvar [N, L]
  decode           latent float32 [N, L] -> images float32 [N, 28, 28] (probabilities)
  sample           count int32 [], seed int64 [] -> images float32 [count, 28, 28];
                   seed < 0 draws fresh noise (a signature has no optional inputs)
  from_examples    examples string [N] (serialized tf.Examples as ExampleGen writes
                   them) -> the outputs of serving_default; for TFMA and batch inference
`elbo` is vae.fixed_noise_elbo: deterministic and independent of batching.
Besides the signatures, the SavedModel holds `decode_logits` (latent [N, L] ->
Bernoulli logits [N, 784]), a function for evaluation in Python, not a
signature: the held-out log-likelihood (models/iwae.py) needs log p(x|z), which
probabilities rounded to 1.0 in float32 cannot give.

The plain autoencoder (models/autoencoder.py) exports the signatures that make
sense for it, with the same inputs; its code has no prior, so it has no `sample`:
  serving_default  images -> reconstruction [N, 28, 28], latent [N, L] (the code),
                   reconstruction_log_likelihood [N] (nats per image)
  encode           images -> latent [N, L]
  decode           latent [N, L] -> images [N, 28, 28] (probabilities)
  from_examples    examples -> the outputs of serving_default
"""
import os
from typing import Dict

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from vaetfx.models import autoencoder as autoencoder_lib
from vaetfx.models import kinds
from vaetfx.models import vae as vae_lib
from vaetfx.models.hparams import TrainingHparams
from vaetfx.models.vae import EncoderDecoder
from vaetfx.shared import features

# The per-image score each kind of model outputs: the gate's metric averages it.
IMAGES_SPEC = tf.TensorSpec([None, features.IMAGE_SIZE, features.IMAGE_SIZE], tf.uint8,
                            name='images')


class _TransformingModule(tf.Module):
  """The Transform layer, tracked, and the signatures every model has: serving_default on images
  and from_examples on tf.Examples, both returning `_outputs` of Transform's pixels, and decode."""

  def __init__(self, tf_transform_output: tft.TFTransformOutput, latent_dim: int):
    super().__init__()
    self.transform_layer = tf_transform_output.transform_features_layer()
    example_spec = {name: spec for name, spec in tf_transform_output.raw_feature_spec().items()
                    if name != features.LABEL_KEY}
    self.serving_default = _signature(
        lambda images: self._outputs(self._pixels_from_images(images)), IMAGES_SPEC)
    self.decode = _signature(self._decode, _latent_spec(latent_dim))
    self.from_examples = _signature(
        lambda examples: self._outputs(self._transform(tf.io.parse_example(examples, example_spec))),
        tf.TensorSpec([None], tf.string, name='examples'))

  def _outputs(self, pixels: tf.Tensor) -> Dict[str, tf.Tensor]:
    raise NotImplementedError

  def _decode(self, latent: tf.Tensor) -> Dict[str, tf.Tensor]:
    raise NotImplementedError

  def _transform(self, raw_features: Dict[str, tf.Tensor]) -> tf.Tensor:
    """Transform's `pixels`, float32 [N, 784].

    The layer's call(), not the layer itself: Keras' __call__ would record an
    input spec, and saving would then trace the layer again under autograph to
    serialize it as Keras, most of a minute for nothing the signatures use.
    """
    pixels = self.transform_layer.call(raw_features)[features.PIXELS_KEY]
    return tf.ensure_shape(pixels, [None, features.NUM_PIXELS])

  def _pixels_from_images(self, images: tf.Tensor) -> tf.Tensor:
    """The raw `image` feature, int64 [N, 784], fed through Transform."""
    rows = _as_rows(images, features.NUM_PIXELS, 'images: expected uint8 [N, 28, 28]')
    return self._transform({features.IMAGE_KEY: tf.cast(rows, tf.int64)})


class VaeServingModule(_TransformingModule):
  """What the VAE's SavedModel holds: its variables, the Transform layer and the signatures."""

  WEIGHTS = 'vae_variables'  # The attribute holding the model's variables (restore_weights).

  def __init__(self, vae: vae_lib.VAE, tf_transform_output: tft.TFTransformOutput,
               eval_samples: int):
    super().__init__(tf_transform_output, vae.latent_dim)
    self.vae = vae  # Not trackable: the SavedModel keeps its variables, below.
    setattr(self, self.WEIGHTS, vae.variables)
    self.eval_noise = tf.constant(vae_lib.eval_noise(eval_samples, vae.latent_dim))
    self.encode = _signature(self._encode, IMAGES_SPEC)
    self.decode_logits = _signature(self.vae.decode, _latent_spec(vae.latent_dim))
    self.sample = _signature(self._sample, tf.TensorSpec([], tf.int32, name='count'),
                             tf.TensorSpec([], tf.int64, name='seed'))

  def _outputs(self, pixels: tf.Tensor) -> Dict[str, tf.Tensor]:
    mean, logvar = self.vae.encode(pixels)
    return {
        'reconstruction': _as_images(tf.sigmoid(self.vae.decode(mean))),
        'latent_mean': mean,
        'latent_logvar': logvar,
        features.ELBO_KEY: vae_lib.fixed_noise_elbo(self.vae.decode, pixels, mean, logvar,
                                                    self.eval_noise),
    }

  def _encode(self, images: tf.Tensor) -> Dict[str, tf.Tensor]:
    mean, logvar = self.vae.encode(self._pixels_from_images(images))
    return {'latent_mean': mean, 'latent_logvar': logvar}

  def _decode(self, latent: tf.Tensor) -> Dict[str, tf.Tensor]:
    return {'images': _as_images(tf.sigmoid(self.vae.decode(latent)))}

  def _sample(self, count: tf.Tensor, seed: tf.Tensor) -> Dict[str, tf.Tensor]:
    """Decodes `count` prior draws; the raw op's zero seeds make it seed itself from the OS.

    tf.random.normal would take its seed from any global seed set when the
    model was traced (training sets one), and every freshly loaded model would
    then repeat the same first "random" draw.
    """
    tf.debugging.assert_non_negative(count, message='sample: count must be >= 0')
    shape = tf.stack([count, self.vae.latent_dim])
    latent = tf.cond(
        seed >= 0,
        lambda: tf.random.stateless_normal(shape, seed=tf.stack([seed, tf.zeros_like(seed)])),
        lambda: tf.raw_ops.RandomStandardNormal(shape=shape, dtype=tf.float32, seed=0, seed2=0))
    return self._decode(latent)


class AutoencoderServingModule(_TransformingModule):
  """What the autoencoder's SavedModel holds: its variables, the Transform layer and the
  signatures that make sense for it (no `sample`: its code space has no prior)."""

  WEIGHTS = 'autoencoder_variables'

  def __init__(self, autoencoder: autoencoder_lib.Autoencoder,
               tf_transform_output: tft.TFTransformOutput):
    super().__init__(tf_transform_output, autoencoder.latent_dim)
    self.autoencoder = autoencoder  # Not trackable: the SavedModel keeps its variables, below.
    setattr(self, self.WEIGHTS, autoencoder.variables)
    self.encode = _signature(
        lambda images: {'latent': self.autoencoder.encode(self._pixels_from_images(images))},
        IMAGES_SPEC)

  def _outputs(self, pixels: tf.Tensor) -> Dict[str, tf.Tensor]:
    code = self.autoencoder.encode(pixels)
    logits = self.autoencoder.decode(code)
    return {
        'reconstruction': _as_images(tf.sigmoid(logits)),
        'latent': code,
        features.RECONSTRUCTION_LOG_LIKELIHOOD_KEY:
            vae_lib.bernoulli_log_likelihood(pixels, logits),
    }

  def _decode(self, latent: tf.Tensor) -> Dict[str, tf.Tensor]:
    return {'images': _as_images(tf.sigmoid(self.autoencoder.decode(latent)))}


def _latent_spec(latent_dim: int) -> tf.TensorSpec:
  return tf.TensorSpec([None, latent_dim], tf.float32, name='latent')


def _signature(function, *input_signature: tf.TensorSpec):
  """A tf.function without autograph: these have no Python control flow, and converting them
  would transpile all of tf_keras they call, which makes export take minutes."""
  return tf.function(function, input_signature=input_signature, autograph=False)


def _as_rows(tensor: tf.Tensor, row_size: int, message: str) -> tf.Tensor:
  """`tensor` as [N, row_size], N being its first dimension, or an error saying `message`.

  Neither the loaded signatures nor TF Serving check a request against the
  signature's shape, and a bare reshape would regroup an [N, 27, 28] batch into
  fewer images. Both sides of the check are computed at run time, so graph
  optimization, which trusts the declared shape, cannot fold it away.
  """
  check = tf.debugging.assert_equal(tf.size(tensor), tf.shape(tensor)[0] * row_size,
                                    message=message)
  with tf.control_dependencies([check]):
    return tf.reshape(tensor, [-1, row_size])


def _as_images(pixels: tf.Tensor) -> tf.Tensor:
  return tf.reshape(pixels, [-1, features.IMAGE_SIZE, features.IMAGE_SIZE])


def export_serving_model(vae: vae_lib.VAE, hparams: TrainingHparams,
                         tf_transform_output: tft.TFTransformOutput, export_dir: str) -> str:
  """Saves a float32 copy of `vae` (whatever precision and strategy trained it) with all signatures."""
  module = VaeServingModule(vae_lib.float32_copy(vae, hparams), tf_transform_output,
                            hparams.eval_samples)
  return _save(module, hparams.kind.signatures, export_dir)


def export_autoencoder(autoencoder: autoencoder_lib.Autoencoder, hparams: TrainingHparams,
                       tf_transform_output: tft.TFTransformOutput, export_dir: str) -> str:
  """Saves a float32 copy of the trained autoencoder with its signatures."""
  copy = vae_lib.float32_copy(autoencoder, hparams)
  return _save(AutoencoderServingModule(copy, tf_transform_output), hparams.kind.signatures,
               export_dir)


def _save(module: _TransformingModule, signature_names, export_dir: str) -> str:
  tf.saved_model.save(module, export_dir,
                      signatures={name: getattr(module, name) for name in signature_names})
  return export_dir


class WeightsDoNotFit(ValueError):
  """A SavedModel's weights cannot start this model; the message says which and why."""


def restore_weights(model: EncoderDecoder, export_dir: str, weights_attribute: str):
  """Assigns to `model`'s variables the weights a serving SavedModel of this module saved.

  Why from the serving SavedModel itself: it is what the serving folder holds,
  pushed by any earlier run (or rolled back to), so there is no second file to
  keep in step with it. Its variables/ folder is an object-based checkpoint in
  which the module's list `weights_attribute` (VaeServingModule.WEIGHTS, ...)
  holds the model's variables in model.variables order, as `<attribute>/<i>/`;
  each is read by that key (tf.train.load_checkpoint), never by loading the
  SavedModel, so nothing is traced, and checked first: the same number of
  variables with the same shapes, else WeightsDoNotFit and nothing is assigned.
  The export always saves float32 (float32_copy) and the trained model's
  variables are float32 under mixed precision too (layer_dtype keeps variables
  float32), so the values fit whatever precision the new training computes in;
  assign() on a distributed variable writes every replica.
  """
  try:
    reader = tf.train.load_checkpoint(os.path.join(export_dir, 'variables', 'variables'))
  except (tf.errors.OpError, ValueError) as e:
    raise WeightsDoNotFit(f'{export_dir} holds no readable weights ({type(e).__name__})') from e
  saved_shapes = reader.get_variable_to_shape_map()
  keys = [f'{weights_attribute}/{i}/.ATTRIBUTES/VARIABLE_VALUE' for i in range(len(model.variables))]
  saved_count = sum(1 for key in saved_shapes if key.startswith(f'{weights_attribute}/')
                    and key.endswith('/.ATTRIBUTES/VARIABLE_VALUE'))
  if saved_count != len(keys):
    raise WeightsDoNotFit(f'{export_dir} holds {saved_count} {weights_attribute}, this model has '
                          f'{len(keys)} variables: another kind or architecture')
  for key, variable in zip(keys, model.variables):
    if saved_shapes.get(key) != variable.shape.as_list():
      raise WeightsDoNotFit(f'{export_dir}: variable {variable.name} is {saved_shapes.get(key)} '
                            f'there and {variable.shape.as_list()} here: another architecture '
                            'or latent size')
  for key, variable in zip(keys, model.variables):
    variable.assign(tf.cast(reader.get_tensor(key), variable.dtype))


class NoSuchSignature(KeyError):
  """The model lacks a signature (an autoencoder's `sample`); the message says which and why."""

  def __str__(self):
    return self.args[0]


class ExportedModel:
  """The exported model from Python: each method calls its signature and returns numpy arrays.

  A VAE or the plain autoencoder (which kind it is shows in its signatures): an
  autoencoder's outputs carry `latent` and score_key
  `reconstruction_log_likelihood` where a VAE's carry `latent_mean`,
  `latent_logvar` and `elbo`, and it has no `sample`.
  Images go in as given, never cast, so wrong dtypes fail as they would in TF
  Serving; latents and counts are converted, as a client would.
  """

  def __init__(self, export_dir: str):
    self.saved_model = tf.saved_model.load(export_dir)
    self.signatures = self.saved_model.signatures
    decode_inputs = self.signatures['decode'].structured_input_signature[1]
    self.latent_dim = int(decode_inputs['latent'].shape[1])
    outputs = self.signatures['serving_default'].structured_outputs
    self.score_key = features.score_key(outputs)
    # A prior to sample from, and a posterior: what the report draws depends on it.
    self.variational = kinds.SAMPLE_SIGNATURE in self.signatures

  def _call(self, name: str, **inputs) -> Dict[str, np.ndarray]:
    if name not in self.signatures:
      raise NoSuchSignature(f'the model has no {name!r} signature (it has '
                            f'{", ".join(sorted(self.signatures))})')
    return {key: value.numpy() for key, value in self.signatures[name](**inputs).items()}

  def reconstruct(self, images: np.ndarray) -> Dict[str, np.ndarray]:
    """serving_default of uint8 images: reconstruction, latent_mean, latent_logvar and elbo
    (an autoencoder's: reconstruction, latent and reconstruction_log_likelihood)."""
    return self._call('serving_default', images=tf.convert_to_tensor(images))

  def encode(self, images: np.ndarray) -> Dict[str, np.ndarray]:
    return self._call('encode', images=tf.convert_to_tensor(images))

  def decode(self, latent: np.ndarray) -> np.ndarray:
    return self._call('decode', latent=tf.constant(latent, tf.float32))['images']

  @property
  def decode_logits(self):
    """latent float32 [N, L] -> logits [N, 784], a tf.function; None in models exported before it."""
    return getattr(self.saved_model, 'decode_logits', None)

  def sample(self, count: int, seed: int = -1) -> np.ndarray:
    return self._call('sample', count=tf.constant(count, tf.int32),
                      seed=tf.constant(seed, tf.int64))['images']

  def from_examples(self, serialized_examples) -> Dict[str, np.ndarray]:
    return self._call('from_examples', examples=tf.constant(serialized_examples, tf.string))


def load_exported_model(export_dir: str) -> ExportedModel:
  """The serving SavedModel Trainer wrote (fn_args.serving_model_dir), ready to call from Python."""
  return ExportedModel(export_dir)

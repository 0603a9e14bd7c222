"""The report's pictures, drawn from numpy arrays into PNG files.

Each figure is rendered into memory and written with TFX's fileio: matplotlib
only writes local files, and on Kubeflow the report's folder is gs://...

Digit grids are tiled into one image and drawn with a single imshow: crisper
and much faster than a subplot per digit. Pixel values are in [0, 1], ink white
on black as in MNIST.
"""
import io
from typing import Dict, List, Optional, Sequence

import matplotlib
import numpy as np
from tfx.dsl.io import fileio

matplotlib.use('Agg')  # Files only, no display: set before pyplot picks a backend.

import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
from matplotlib import ticker  # pylint: disable=g-import-not-at-top,wrong-import-position

DPI = 100
SEPARATOR = 0.35  # Grey lines between tiles: visible against both ink and background.


def tile(images: np.ndarray, columns: int) -> np.ndarray:
  """[N, H, W] images -> one [rows * (H + 1) - 1, columns * (W + 1) - 1] image, row-major."""
  count, height, width = images.shape
  rows = -(-count // columns)
  canvas = np.full((rows * (height + 1) - 1, columns * (width + 1) - 1), SEPARATOR, np.float32)
  for index, image in enumerate(images):
    top, left = (index // columns) * (height + 1), (index % columns) * (width + 1)
    canvas[top:top + height, left:left + width] = image
  return canvas


def _save(figure, path: str) -> str:
  """Renders `figure` as PNG bytes and writes them to `path`, a local path or a URI."""
  png = io.BytesIO()
  try:
    figure.savefig(png, format='png', dpi=DPI, bbox_inches='tight')
  finally:
    plt.close(figure)
  with fileio.open(path, 'wb') as f:
    f.write(png.getvalue())
  return path


def _show_digits(axes, canvas: np.ndarray):
  axes.imshow(canvas, cmap='gray', vmin=0.0, vmax=1.0, interpolation='nearest')
  axes.set_xticks([])
  axes.set_yticks([])


def plot_reconstructions(originals: np.ndarray, reconstructions: np.ndarray, path: str,
                         columns: int = 10) -> str:
  """Rows alternate: held-out digits, then their reconstructions right below each one."""
  pair_rows = -(-len(originals) // columns)
  padded = pair_rows * columns
  blank = np.zeros((padded - len(originals),) + originals.shape[1:], np.float32)
  top = np.concatenate([originals, blank]).reshape(pair_rows, columns, *originals.shape[1:])
  bottom = np.concatenate([reconstructions, blank]).reshape(top.shape)
  interleaved = np.stack([top, bottom], axis=1).reshape(-1, *originals.shape[1:])
  figure, axes = plt.subplots(figsize=(columns * 0.6, pair_rows * 1.2 + 0.4))
  _show_digits(axes, tile(interleaved, columns))
  row_height = originals.shape[1] + 1
  axes.set_yticks([(row + 0.5) * row_height for row in range(2 * pair_rows)])
  axes.set_yticklabels(['held-out', 'reconstructed'] * pair_rows, fontsize=8)
  axes.set_title('Held-out digits, each above its reconstruction', fontsize=10)
  return _save(figure, path)


def plot_digit_grid(images: np.ndarray, columns: int, title: str, path: str) -> str:
  figure, axes = plt.subplots(figsize=(columns * 0.6, -(-len(images) // columns) * 0.6 + 0.4))
  _show_digits(axes, tile(images, columns))
  axes.set_title(title, fontsize=10)
  return _save(figure, path)


def plot_latent_space(points: np.ndarray, labels: np.ndarray, axis_labels: Sequence[str],
                      title: str, path: str) -> str:
  """A scatter of 2-D latent points, one colour per digit label."""
  figure, axes = plt.subplots(figsize=(7, 6))
  colours = plt.get_cmap('tab10')
  for digit in np.unique(labels):
    chosen = labels == digit
    axes.scatter(points[chosen, 0], points[chosen, 1], s=6, alpha=0.7,
                 color=colours(int(digit) % 10), label=str(digit))
  axes.set_xlabel(axis_labels[0])
  axes.set_ylabel(axis_labels[1])
  axes.set_title(title, fontsize=10)
  axes.legend(title='digit', markerscale=3, fontsize=8, loc='center left',
              bbox_to_anchor=(1.0, 0.5))
  return _save(figure, path)


def _tick_labels(values: np.ndarray) -> List[str]:
  return [f'{round(float(value), 1) + 0.0:.1f}' for value in values]  # No '-0.0'.


def plot_manifold(images: np.ndarray, grid_values: np.ndarray, path: str,
                  y_values: Optional[np.ndarray] = None, axis_labels: Sequence[str] = ('z1', 'z2'),
                  title: str = 'Decoded latent manifold (grid at prior quantiles)') -> str:
  """Decoded digits over a square grid of (z1, z2) at `grid_values` (z2 at `y_values` when
  given); images are row-major with z2 decreasing."""
  size = len(grid_values)
  y_values = grid_values if y_values is None else y_values
  figure, axes = plt.subplots(figsize=(8, 8))
  _show_digits(axes, tile(images, size))
  step = images.shape[1] + 1
  centres = [(index + 0.5) * step for index in range(size)]
  axes.set_xticks(centres)
  axes.set_xticklabels(_tick_labels(grid_values), fontsize=7)
  axes.set_yticks(centres)
  axes.set_yticklabels(_tick_labels(y_values)[::-1], fontsize=7)
  axes.set_xlabel(axis_labels[0])
  axes.set_ylabel(axis_labels[1])
  axes.set_title(title, fontsize=10)
  return _save(figure, path)


def plot_elbo_curves(series: Dict[str, List[float]], path: str, metric: str = 'ELBO') -> str:
  """One line per series of `metric`, in the given order, against the epoch (1-based)."""
  figure, axes = plt.subplots(figsize=(7, 4.5))
  for name, values in series.items():
    epochs = np.arange(1, len(values) + 1)
    axes.plot(epochs, values, marker='o', markersize=3, label=name)
  axes.set_xlabel('epoch')
  axes.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  axes.set_ylabel(f'{metric} (nats per image, higher is better)')
  axes.set_title(f'{metric} per epoch', fontsize=10)
  axes.grid(alpha=0.3)
  axes.legend(fontsize=8)
  return _save(figure, path)


def plot_bound_vs_samples(overall: Dict[int, float], by_digit: Dict[int, Dict[int, float]],
                          path: str) -> str:
  """The IWAE bound against K on a log axis: the mean over all digits bold, each digit thin."""
  figure, axes = plt.subplots(figsize=(7, 4.5))
  colours = plt.get_cmap('tab10')
  for digit, bounds in sorted(by_digit.items()):
    axes.plot(list(bounds), list(bounds.values()), marker='.', linewidth=0.8, alpha=0.6,
              color=colours(digit % 10), label=f'digit {digit}')
  axes.plot(list(overall), list(overall.values()), marker='o', linewidth=2.5, color='black',
            label='all digits')
  axes.set_xscale('log')
  axes.set_xticks(list(overall))
  axes.get_xaxis().set_major_formatter(ticker.ScalarFormatter())
  axes.set_xlabel('K (importance samples per image)')
  axes.set_ylabel('IWAE bound L_K (nats per image, higher is better)')
  axes.set_title('Held-out log-likelihood bound against K', fontsize=10)
  axes.grid(alpha=0.3)
  axes.legend(fontsize=7, loc='center left', bbox_to_anchor=(1.0, 0.5))
  return _save(figure, path)


def plot_scored_digits(images: np.ndarray, labels: np.ndarray, scores: np.ndarray, columns: int,
                       path: str, metric: str = 'ELBO') -> str:
  """A digit grid, row-major, each tile captioned with its label and score in its bottom-left
  corner (on a dark box, so it reads over ink and background alike)."""
  rows = -(-len(images) // columns)
  figure, axes = plt.subplots(figsize=(columns * 0.9, rows * 0.9 + 0.4))
  _show_digits(axes, tile(images, columns))
  step = images.shape[1] + 1
  for index, (label, score) in enumerate(zip(labels, scores)):
    top, left = (index // columns) * step, (index % columns) * step
    axes.text(left + 0.5, top + images.shape[1] - 0.5, f'{int(label)}: {score:.0f}',
              color='yellow', fontsize=6, ha='left', va='bottom',
              bbox={'facecolor': 'black', 'alpha': 0.6, 'pad': 0.5, 'linewidth': 0})
  axes.set_title(f'Lowest-scoring held-out digits (label: {metric} in nats)', fontsize=10)
  return _save(figure, path)


def plot_scores_by_digit(scores: np.ndarray, labels: np.ndarray, cutoff: float, path: str,
                         metric: str = 'ELBO') -> str:
  """One box per digit label (whiskers at the 1st and 99th percentiles, the rest as dots),
  with a dashed line at `cutoff`."""
  digits = np.unique(labels)
  figure, axes = plt.subplots(figsize=(8, 4.5))
  axes.boxplot([scores[labels == digit] for digit in digits], whis=(1, 99),
               flierprops={'markersize': 2, 'alpha': 0.5})
  axes.set_xticks(np.arange(1, len(digits) + 1))
  axes.set_xticklabels([f'{int(d)}\n({int(np.sum(labels == d))})' for d in digits], fontsize=8)
  axes.axhline(cutoff, color='tab:red', linestyle='--', linewidth=1)
  axes.set_xlabel('digit (held-out images)')
  axes.set_ylabel(f'anomaly score: {metric} (nats per image, low = unusual)')
  axes.set_title('Anomaly scores per digit', fontsize=10)
  axes.grid(axis='y', alpha=0.3)
  return _save(figure, path)


def plot_score_drift(previous: np.ndarray, new: np.ndarray, path: str, title: str,
                     metric: str = 'ELBO') -> str:
  """The served model's scores of the previous and the new data as two overlaid histograms
  (density, shared bins), each median a dashed line."""
  both = np.concatenate([previous, new])
  bins = np.linspace(np.min(both), np.max(both), 60)
  figure, axes = plt.subplots(figsize=(8, 4.5))
  for scores, name, colour in ((previous, 'previous data', 'tab:blue'),
                               (new, 'new data', 'tab:orange')):
    axes.hist(scores, bins=bins, density=True, alpha=0.5, color=colour,
              label=f'{name} ({len(scores)} digits, median {np.median(scores):.1f})')
    axes.axvline(np.median(scores), color=colour, linestyle='--', linewidth=1)
  axes.set_xlabel(f'served model\'s {metric} (nats per image, low = unusual)')
  axes.set_ylabel('density')
  axes.set_title(title, fontsize=10)
  axes.legend(fontsize=8)
  axes.grid(alpha=0.3)
  return _save(figure, path)

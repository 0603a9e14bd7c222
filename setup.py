"""Installs the project as one package, `vaetfx`, whatever its folders are called.

The repository keeps the layout TFX users know (pipeline/, components/, models/,
serving/) but those folders are installed as `vaetfx.pipeline`, `vaetfx.components`
and so on, so installing the project never puts a module named `models` or
`pipeline` into site-packages. TFX refers to module files by these dotted names
(`vaetfx.models.preprocessing.preprocessing_fn`), so they travel with the package.
"""
import setuptools

FOLDERS = ('pipeline', 'components', 'models', 'serving', 'shared')


def _packages():
  packages = {'vaetfx': 'vaetfx'}
  for folder in FOLDERS:
    for sub in setuptools.find_packages(where=folder):
      packages[f'vaetfx.{folder}.{sub}'] = f'{folder}/' + sub.replace('.', '/')
    packages[f'vaetfx.{folder}'] = folder
  return packages


PACKAGES = _packages()

setuptools.setup(
    name='vaetfx',
    version='0.1.0',
    description='A TFX pipeline that trains a convolutional VAE on MNIST and serves it.',
    python_requires='>=3.10,<3.11',
    packages=sorted(PACKAGES),
    package_dir=PACKAGES,
    package_data={'vaetfx.serving': ['deploy/*']},
    install_requires=[
        'tfx==1.16.0',
        'apache-beam==2.59.0',
        'tensorflow==2.16.2',
        'tf-keras==2.16.0',
        'tensorflow-serving-api==2.16.1',
        'kfp==2.5.0',
        'kfp-pipeline-spec==0.2.2',
        'numpy==1.26.4',
        'pillow',
        'portpicker',  # the infra validator's server port
        'matplotlib',
        'google-crc32c',  # TFRecord checksums (shared/tfrecords.py); TFX's GCS client needs it too
    ],
    # cryptography: the self-signed certificate of the tests' GCS emulator (tests/gcs_emulator.py).
    extras_require={'test': ['pytest', 'pytest-xdist', 'cryptography']},
    entry_points={'console_scripts': ['vaetfx = vaetfx.cli:command_line']},
)

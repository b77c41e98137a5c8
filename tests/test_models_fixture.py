"""The ``pretrained_model`` fixture with real sources: a model that cannot be loaded fails briefly, once."""

from __future__ import annotations

import re

CONFTEST = '''
import numpy as np

CALLS = []


def broken():
    CALLS.append(1)
    raise FileNotFoundError("weights for 'broken' are not in /nowhere/cache: expected /nowhere/cache/w.pth")


def pytest_transfer_register_models(registry):
    registry.register("broken", broken)


def pytest_transfer_register_datasets(registry):
    rng = np.random.default_rng(0)
    registry.register("rgb", lambda: (rng.random((12, 3, 8, 8), dtype=np.float32), np.arange(12) % 2))
'''


def test_a_model_that_cannot_be_loaded_fails_each_test_in_one_line_and_loads_once(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile('''
        import pytest

        @pytest.mark.parametrize("i", range(3))
        @pytest.mark.transfer(model="broken", dataset="rgb")
        def test_uses_it(pretrained_model, target_dataset, i):
            pass

        def test_load_count():
            import conftest
            assert len(conftest.CALLS) == 1
    ''')
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=3, passed=1)
    text = result.stdout.str()
    # the ERRORS section only: the short summary repeats the lines, cut to the terminal's width unless $CI is
    # set; a warnings summary (pytest's own, e.g. about assertion rewriting under an editable install) is not ours,
    # and pytest-transfer's summary lists the three as test errors (tests/test_test_errors.py)
    errors = re.split(r"=+ (?:warnings summary|short test summary info|pytest-transfer summary) =+",
                      text.split("= ERRORS =")[1])[0]
    assert errors.count("pytest-transfer: cannot load model 'broken': FileNotFoundError: weights for 'broken' are "
                        "not in /nowhere/cache") == 3
    assert "def model_for" not in text and "_load_once" not in text  # no fixture traceback
    assert len(errors.splitlines()) < 16  # three short errors (the message and the loader's line), not 3 × 75 lines
    assert errors.count("raised at (innermost last):") == 3 and errors.count("conftest.py:") == 3


def test_check_hash_false_from_the_marker(pytester, tmp_path, monkeypatch):
    """Weights re-saved on purpose: ``model_kwargs={"check_hash": False}`` lets them through; without it,
    the test fails with the hash message."""
    import torch
    from torchvision.models import ResNet18_Weights, resnet18

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    path = tmp_path / "torch" / "hub" / "checkpoints" / ResNet18_Weights.DEFAULT.url.rsplit("/", 1)[-1]
    path.parent.mkdir(parents=True)
    torch.save(resnet18().state_dict(), path)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile('''
        import pytest

        @pytest.mark.transfer(model="torchvision:resnet18", model_kwargs={"check_hash": False, "image_size": 32})
        def test_resaved(pretrained_model):
            assert pretrained_model.categories[0] == "tench"

        @pytest.mark.transfer(model="torchvision:resnet18", model_kwargs={"image_size": 32})
        def test_checked(pretrained_model):
            pass
    ''')
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*cannot load model 'torchvision:resnet18': ValueError: *resnet18-f37072fd.pth: "
                                 "sha256 * does not start with 'f37072fd'*check_hash=False*"])

"""Spec prefixes added from outside the package: ``pytest_transfer_register_model_sources`` and
``pytest_transfer_register_dataset_sources`` (a team's model store, its own data format)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests._helpers import pytester_pyproject

# The docs' "extending" example, verbatim: a local model store laid out as <store>/<name>/<version>/model.pt,
# and a dataset format (.npz of images and labels).
STORE_CONFTEST = '''
import os

def pytest_transfer_register_model_sources(registry):
    def from_store(rest, *, context, **kwargs):
        from pytest_transfer import load_model
        name, _, version = rest.partition("/")
        path = os.path.join(os.environ["MODEL_STORE"], name, version, "model.pt")
        return load_model(f"checkpoint:{path}", context=context, **kwargs)

    registry.register("mystore", from_store, form="mystore:<name>/<version>")


def pytest_transfer_register_dataset_sources(registry):
    def from_npz(rest, *, settings, scale=1.0):
        import numpy as np
        data = np.load(settings.path(rest))
        return (data["images"] * scale).astype("float32"), data["labels"]

    registry.register("npz", from_npz, form="npz:<file.npz>")
'''


def _store(tmp_path):
    """A model store holding a small torchvision net's state dict (random weights), and an .npz dataset."""
    import numpy as np
    import torch
    from torchvision import models as tvm

    from tests._helpers import make_blobs_images

    torch.manual_seed(0)
    folder = tmp_path / "store" / "mobilenet_v3_small" / "3"
    folder.mkdir(parents=True)
    torch.save(tvm.mobilenet_v3_small(num_classes=3).state_dict(), folder / "model.pt")
    images, labels = make_blobs_images(n_per_class=20)
    np.savez(tmp_path / "blobs.npz", images=images, labels=labels)


@pytest.fixture()
def store_project(pytester, tmp_path, monkeypatch):
    _store(tmp_path)
    monkeypatch.setenv("MODEL_STORE", str(tmp_path / "store"))
    pytester.makeconftest(STORE_CONFTEST + '''

def pytest_transfer_register_models(registry):
    pass
''')
    pytester.makefile(".toml", pyproject=pytester_pyproject())
    return pytester


def test_a_conftest_source_serves_markers(store_project, tmp_path):
    """Both prefixes work in a marker; the model is the stored one (its logits equal the saved net's)."""
    store = tmp_path / "store" / "mobilenet_v3_small" / "3" / "model.pt"
    store_project.makepyfile(test_store=f'''
        import pytest, torch
        from torchvision import models as tvm

        @pytest.mark.transfer(model="mystore:mobilenet_v3_small/3", dataset="npz:{tmp_path / 'blobs.npz'}",
                              model_kwargs={{"arch": "mobilenet_v3_small", "image_size": 32}})
        def test_x(pretrained_model, target_dataset):
            assert pretrained_model.name == "mystore:mobilenet_v3_small/3"
            assert target_dataset.name == "npz:{tmp_path / 'blobs.npz'}"
            assert len(target_dataset) == 60
            ref = tvm.mobilenet_v3_small(num_classes=3)
            ref.load_state_dict(torch.load({str(store)!r}, weights_only=True))
            x = target_dataset.images[:4]
            with torch.no_grad():
                torch.testing.assert_close(pretrained_model(x), ref.eval()(pretrained_model.inputs(x)))
    ''')
    result = store_project.runpytest()
    result.assert_outcomes(passed=1)


def test_unknown_prefix_lists_the_registered_ones(store_project):
    store_project.makepyfile(test_typo='''
        import pytest

        @pytest.mark.transfer(model="mystor:mobilenet_v3_small/3", dataset="digits")
        def test_x(pretrained_model):
            pass
    ''')
    result = store_project.runpytest()
    result.stdout.fnmatch_lines(["*unknown model source prefix 'mystor' in 'mystor:mobilenet_v3_small/3'; did you mean "
                                 "'mystore:'? Registered prefixes: torchvision:<arch>*mystore:<name>/<version>*"])


def test_a_source_option_it_does_not_take_is_refused_by_name(store_project, tmp_path):
    store_project.makepyfile(test_option=f'''
        import pytest

        @pytest.mark.transfer(model="torchvision:resnet18:none", dataset="npz:{tmp_path / 'blobs.npz'}",
                              dataset_kwargs={{"scal": 2.0}})
        def test_x(target_dataset):
            pass
    ''')
    result = store_project.runpytest()
    result.stdout.fnmatch_lines(["*unknown option 'scal'; did you mean 'scale'? Valid options: scale"])  # not rest


def test_builtin_prefixes_cannot_be_taken_twice(pytester):
    pytester.makeconftest('''
        def pytest_transfer_register_model_sources(registry):
            registry.register("timm", lambda rest: None)
    ''')
    pytester.makefile(".toml", pyproject=pytester_pyproject())
    pytester.makepyfile('''
        import pytest

        @pytest.mark.transfer(model="timm:resnet18", dataset="digits")
        def test_x(pretrained_model):
            pass
    ''')
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(["*model source 'timm' is already registered by pytest_transfer; registered again by "
                                 "conftest (*conftest.py); pick another name*"])


def test_outside_pytest_the_builtin_prefixes_are_known():
    from pytest_transfer.models.sources import new_model_sources

    sources = new_model_sources()
    assert sources.names() == ["checkpoint", "hf", "timm", "torchvision"]
    with pytest.raises(ValueError, match=r"did you mean 'torchvision:'\?"):
        sources.split("torchvison:resnet18")
    assert sources.split("resnet18") is None


@pytest.mark.parametrize("prefix", ["", "a:b", " pad"])
def test_a_prefix_must_be_a_plain_name(prefix):
    from pytest_transfer.registry import SourceRegistry

    with pytest.raises(ValueError, match="prefix must be a non-empty name"):
        SourceRegistry("model source").register(prefix, lambda rest: None)


def test_a_dataset_loader_naming_seed_gets_the_sessions(tmp_path):
    """A loader that names ``seed`` receives the session's; one that does not is split with it afterwards."""
    import numpy as np

    from pytest_transfer import load_dataset
    from pytest_transfer.context import Context, set_current_context
    from pytest_transfer.settings import resolve

    images, labels = np.random.default_rng(0).random((40, 1, 4, 4), dtype=np.float32), np.arange(40) % 2
    seen = {}

    def seeded(rest, *, seed, name):
        seen.update(seed=seed, name=name)
        return images, labels

    ctx = Context(resolve({"seed": "7"}, rootdir=str(tmp_path)))
    ctx.dataset_sources.register("seeded", seeded)
    ctx.dataset_sources.register("plain", lambda rest: (images, labels))
    previous = set_current_context(ctx)
    try:
        a = load_dataset("seeded:x")
        b = load_dataset("plain:x")
    finally:
        set_current_context(previous)
    assert seen == {"seed": 7, "name": "seeded:x"}
    assert a.seed == b.seed == 7
    np.testing.assert_array_equal(a.indices("test"), b.indices("test"))


def test_loaders_naming_settings_get_the_given_sessions_not_the_current_one(tmp_path):
    """Issue 22 item 3: the session is an argument below the door. A loader of either kind that names
    ``settings`` gets the settings of the context the call was made in (here one that is *not* current),
    and the built-in ``checkpoint:`` and ``imagefolder:`` take relative paths from that context's rootdir."""
    import numpy as np

    from pytest_transfer import load_dataset, load_model
    from pytest_transfer.context import Context, current_context
    from pytest_transfer.settings import resolve
    from tests._helpers import tiny_net

    root = tmp_path / "project"
    root.mkdir()
    ctx = Context(resolve({"seed": "5"}, rootdir=str(root)))
    assert current_context().settings.rootdir != ctx.settings.rootdir
    seen = {}

    def model_loader(rest, *, settings):
        seen["model"] = (settings.path(rest), settings.seed)
        return tiny_net(seed=settings.seed)

    def data_loader(rest, *, settings):
        seen["dataset"] = settings.path(rest)
        return np.zeros((4, 1, 4, 4), np.float32), np.array([0, 1, 0, 1])

    ctx.model_sources.register("store", model_loader)
    ctx.dataset_sources.register("zeros", data_loader)
    load_model("store:runs/tiny.pt", context=ctx)
    load_dataset("zeros:data", context=ctx)
    assert seen == {"model": (root / "runs" / "tiny.pt", 5), "dataset": root / "data"}
    ctx.model_sources.register("via", lambda rest, *, context: seen.setdefault("via", context) and
                               load_model(f"store:{rest}", context=context))
    # a loader that delegates resolves the inner spec in the same session; the model is named by the outer spec
    assert load_model("via:m.pt", context=ctx).name == "via:m.pt"
    assert seen["via"] is ctx and seen["model"] == (root / "m.pt", 5)
    for load, spec in ((load_model, "store:x"), (load_dataset, "zeros:x")):
        with pytest.raises(ValueError, match="'settings' cannot be given as an option: the session passes it"):
            load(spec, context=ctx, settings=ctx.settings)
    ctx.dataset_sources.register("builtin", str)  # no signature to read: no session argument, no crash
    with pytest.raises(ValueError, match=r"expected \(image, label\), got str"):
        load_dataset("builtin:x", context=ctx)
    with pytest.raises(FileNotFoundError, match="rootdir " + re.escape(str(root))):
        load_model("checkpoint:runs/missing.pt", arch="resnet18", context=ctx)
    with pytest.raises(FileNotFoundError, match=re.escape(str(root / "images"))):
        load_dataset("imagefolder:images", context=ctx)


def test_below_the_door_the_engine_takes_objects_and_says_how_to_resolve_a_spec(fresh_context):
    from pytest_transfer.engine import evaluate

    with pytest.raises(TypeError, match=r"pytest_transfer\.evaluate, which takes either"):
        evaluate("torchvision:resnet18:none", "digits", context=fresh_context)
    with pytest.raises(TypeError, match="context"):
        evaluate(object(), object())  # the session is an argument: no default to fall back on
    from pytest_transfer.methods import predict

    with pytest.raises(TypeError, match=r"methods\.predict takes a TransferModel and a TargetDataset \(got str"):
        predict("torchvision:resnet18:none", "digits", context=fresh_context)


def _installed_plugin(site, name: str, module_source: str, *, requires: str) -> None:
    """A distribution laid out as pip installs it (``<name>-0.1.dist-info`` with METADATA and a ``pytest11``
    entry point) under ``site``, whose plugin module is ``<name>_plugin``."""
    info = site / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    info.joinpath("METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n"
                                         + (f"Requires-Dist: {requires}\n" if requires else ""))
    info.joinpath("entry_points.txt").write_text(f"[pytest11]\n{name} = {name}_plugin\n")
    (site / f"{name}_plugin.py").write_text(module_source)


def test_outside_pytest_installed_plugins_register_their_sources(tmp_path):
    """In a script (no pytest session) the registration hooks of installed plugins that require
    pytest-transfer run on the first lookup; plugins that do not require it are not imported; a hook that
    raises names itself and its plugin, and the loader's own line is kept in the traceback."""
    import subprocess
    import sys

    site = tmp_path / "site"
    _installed_plugin(site, "teamstore", '''
def pytest_transfer_register_model_sources(registry):
    from tests._helpers import tiny_net
    registry.register("teamstore", lambda rest, *, settings: tiny_net(seed=settings.seed), form="teamstore:<n>")

def pytest_transfer_register_datasets(registry):
    import numpy as np
    registry.register("zeros", lambda: (np.zeros((8, 1, 4, 4), np.float32), np.arange(8) % 2))
''', requires="pytest-transfer>=0.1")
    _installed_plugin(site, "unrelated", "raise RuntimeError('imported although it does not require us')\n",
                      requires="numpy")
    script = '''
import pytest_transfer as pt
m = pt.load_model("teamstore:x")
print(m.name, pt.list_datasets(), len(pt.load_dataset("zeros")))
'''
    root = Path(__file__).resolve().parents[1]  # tests._helpers is imported by the plugin
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{root}"}
    done = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "teamstore:x" and "'zeros'" in done.stdout and done.stdout.split()[-1] == "8"

    broken = tmp_path / "site2"
    _installed_plugin(broken, "brokenstore", '''
def pytest_transfer_register_model_sources(registry):
    import teamstore_missing_dependency  # noqa: F401
''', requires="pytest-transfer")
    env["PYTHONPATH"] = f"{broken}{os.pathsep}{root}"
    done = subprocess.run([sys.executable, "-c", "import pytest_transfer as pt; pt.load_model('torchvision:x')"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert "RegistrationError: pytest_transfer_register_model_sources in the plugin brokenstore (brokenstore_plugin) " \
           "raised ModuleNotFoundError" in done.stderr
    assert "brokenstore_plugin.py" in done.stderr  # the original error is chained: its traceback is shown


def test_a_failing_hook_or_loader_is_named_with_its_own_line(pytester):
    pytester.makeconftest('''
def pytest_transfer_register_datasets(registry):
    registry.register("bad", lambda: {}["missing key"])
''')
    pytester.makefile(".toml", pyproject=pytester_pyproject())
    pytester.makepyfile(test_bad='''
        import pytest

        @pytest.mark.transfer(model="torchvision:resnet18:none", dataset="bad")
        def test_x(target_dataset):
            pass
    ''')
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*cannot load dataset 'bad': KeyError: 'missing key'",
                                 "raised at (innermost last):", "*conftest.py:2 in <lambda>*"])
    pytester.makeconftest('''
def pytest_transfer_register_models(registry):
    import teamstore_missing_dependency  # noqa: F401
''')
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*cannot load dataset 'bad': RegistrationError: pytest_transfer_register_models in "
                                 "*conftest.py raised ModuleNotFoundError*", "raised at (innermost last):",
                                 "*conftest.py:2 in pytest_transfer_register_models*"])


def test_registration_hooks_are_called_as_pluggy_calls_them(pytester):
    """An implementation may take fewer arguments than the hook declares (pluggy passes only those it names),
    and a hook wrapper registers nothing of its own: both work with the registrar that names each hook's
    plugin."""
    pytester.makeconftest('''
import pytest

CALLS = []


def pytest_transfer_register_datasets():
    CALLS.append("no registry")


@pytest.hookimpl(wrapper=True)
def pytest_transfer_register_models(registry):
    CALLS.append("wrapper")
    return (yield)
''')
    pytester.makefile(".toml", pyproject=pytester_pyproject())
    pytester.makepyfile(test_x='''
        from pytest_transfer import load_dataset

        def test_x():
            import conftest
            assert len(load_dataset("digits")) == 1797
            assert conftest.CALLS == ["no registry"]
    ''')
    pytester.runpytest().assert_outcomes(passed=1)

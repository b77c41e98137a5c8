"""The pytest11 entry point: options, marker, thin fixtures, summary.

Only pytest and the standard library are imported here; torch, torchvision
and numpy are imported when a transfer fixture or function is first used.
"""

from __future__ import annotations

import difflib
import json
import os
import time
from collections.abc import Generator
from typing import Any

import pytest

from .context import REGISTRATION_HOOKS, Context, run_registration, set_current_context
from .report.session import PASSES_PROPERTY, PROPERTY, without_group
from .settings import OPTIONS, resolve
from .text import printable
from .thresholds import Provided

CONTEXT_KEY = pytest.StashKey[Context]()
PREVIOUS_KEY = pytest.StashKey[Any]()
LIVE_KEY = pytest.StashKey[Any]()
ITEM_KEY = pytest.StashKey[list]()
MARKER_KEYWORDS = ("model", "dataset", "model_kwargs", "dataset_kwargs")


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from . import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("transfer", "pytest-transfer: transfer, accuracy and robustness gates")
    for opt in OPTIONS:
        shown = "off" if opt.flag else ("none" if opt.default is None else opt.default)
        help_text = f"{opt.help} (default: {shown}; [tool.pytest_transfer] {opt.key}; env {opt.env})"
        if opt.flag:
            group.addoption(opt.cli, action="store_true", default=None, dest=f"transfer_{opt.key}", help=help_text)
        else:
            group.addoption(opt.cli, action="store", default=None, dest=f"transfer_{opt.key}",
                            metavar=opt.metavar, help=help_text)


def get_context(config: pytest.Config) -> Context:
    """The session's :class:`Context` (settings, registries, measurements)."""
    return config.stash[CONTEXT_KEY]


def _hook_impls(config: pytest.Config, hook: str) -> list[tuple[Any, str]]:
    """``(implementation, where)`` of ``hook`` in the order pluggy calls them (the last registered first,
    ``tryfirst``/``trylast`` kept), wrappers left out, ``where`` its plugin's file or name (printable)."""
    impls = [i for i in reversed(getattr(config.hook, hook).get_hookimpls())
             if not (i.hookwrapper or getattr(i, "wrapper", False))]
    return [(i, printable(str(getattr(i.plugin, "__file__", None) or i.plugin_name))) for i in impls]


def _threshold_provider(config: pytest.Config) -> Any:
    """The ``pytest_transfer_threshold`` hook as pluggy's ``firstresult`` call, answering with the plugin or
    ``conftest.py`` that gave the threshold (its source says which: a plugin's answer beats the files)."""
    def provide(model: str, dataset: str, metric: str) -> Provided | None:
        args = {"model": model, "dataset": dataset, "metric": metric}
        for impl, where in _hook_impls(config, "pytest_transfer_threshold"):
            got = impl.function(**{a: args[a] for a in impl.argnames})
            if got is not None:
                return Provided(got, where)
        return None

    return provide


def _register(config: pytest.Config) -> Any:
    """The session's registrar: each registration hook's implementations, called in pluggy's order (the last
    registered first) one by one, so that an error names its hook and its plugin or ``conftest.py``."""
    def registrar(ctx: Context) -> None:
        for hook in REGISTRATION_HOOKS:
            for impl, where in _hook_impls(config, hook):  # wrappers register nothing of their own
                run_registration(ctx, hook, impl.function, where)

    return registrar


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "transfer(model=None, dataset=None, model_kwargs=None, dataset_kwargs=None): the model and dataset specs "
        "(or lists of them, to run the test over each pair) for the pretrained_model and target_dataset fixtures",
    )
    cli = {opt.key: config.getoption(f"transfer_{opt.key}") for opt in OPTIONS}
    pyproject = config.inipath if config.inipath and config.inipath.name == "pyproject.toml" else None
    settings = resolve(cli, rootdir=str(config.rootpath), pyproject=pyproject)
    ctx = Context(settings)
    ctx.registrars.append(_register(config))
    ctx.thresholds.providers.append(_threshold_provider(config))
    ctx.device_override = lambda: _device_from_hook(config)
    ctx.worker = getattr(config, "workerinput", {}).get("workerid")
    config.stash[CONTEXT_KEY] = ctx
    config.stash[PREVIOUS_KEY] = set_current_context(ctx)
    from .report.session import install

    config.stash[LIVE_KEY] = install(config, ctx, lambda item: [m.to_dict() for m in item.stash.get(ITEM_KEY, [])])
    if settings.suggest_thresholds:
        from .suggest import SuggestionWriter

        collector = config.pluginmanager.get_plugin("transfer-session")
        config.pluginmanager.register(SuggestionWriter(config, collector), "transfer-suggest")


def _device_from_hook(config: pytest.Config) -> Any:
    import torch

    from .device import xdist_worker_index

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return config.hook.pytest_transfer_device(worker_index=xdist_worker_index(), device_count=count)


def pytest_unconfigure(config: pytest.Config) -> None:
    if PREVIOUS_KEY in config.stash:
        set_current_context(config.stash[PREVIOUS_KEY])


# --- marker ------------------------------------------------------------------

def _marker(item: Any) -> Any:
    return item.get_closest_marker("transfer") if hasattr(item, "get_closest_marker") else None


def _check_marker(mark: Any, where: str, error: type[Exception] = pytest.UsageError) -> None:
    """Refuse a malformed ``transfer`` marker with ``error`` (one line naming the test, the mistake and the fix)."""
    if mark.args:
        raise error(f"{where}: @pytest.mark.transfer takes keywords only ({', '.join(MARKER_KEYWORDS)}), "
                    f"got positional {mark.args!r}; write @pytest.mark.transfer(model=..., dataset=...)")
    unknown = sorted(set(mark.kwargs) - set(MARKER_KEYWORDS))
    if unknown:
        close = difflib.get_close_matches(unknown[0], MARKER_KEYWORDS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise error(f"{where}: @pytest.mark.transfer got unknown keyword(s) {', '.join(unknown)}{hint}; "
                    f"valid: {', '.join(MARKER_KEYWORDS)}")
    for key in ("model_kwargs", "dataset_kwargs"):
        if key in mark.kwargs and not isinstance(mark.kwargs[key], (dict, list, tuple, type(None))):
            raise error(f"{where}: @pytest.mark.transfer({key}=...) must be a dict (or one dict per listed spec), "
                        f"got {mark.kwargs[key]!r}")


def _spec_id(spec: Any) -> str:
    return spec if isinstance(spec, str) else getattr(spec, "name", type(spec).__name__)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``@pytest.mark.transfer(model=[...], dataset=[...])`` runs the test once per listed spec."""
    mark = metafunc.definition.get_closest_marker("transfer")
    if mark is None:
        return
    # a collection error shows only its message (no plugin traceback) and stops the run
    _check_marker(mark, metafunc.definition.nodeid, pytest.Collector.CollectError)
    for key, fixture in (("model", "pretrained_model"), ("dataset", "target_dataset")):
        specs = mark.kwargs.get(key)
        if isinstance(specs, (list, tuple)) and fixture in metafunc.fixturenames:
            metafunc.parametrize(fixture, list(specs), indirect=True, ids=[_spec_id(s) for s in specs])


def model_group(item: Any) -> str | None:
    """``transfer:<model spec>`` for a test that uses one model (its parametrised spec when several are listed)."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    if "pretrained_model" in params:
        spec = params["pretrained_model"]
    else:
        mark = _marker(item)
        spec = mark.kwargs.get("model") if mark is not None else None
        if spec is None or isinstance(spec, (list, tuple)):
            return None
    return "transfer:" + _spec_id(spec).replace("@", "_")  # xdist splits the group off the node id at "@"


@pytest.hookimpl(wrapper=True)  # around pytest-xdist's worker, which reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> Generator[None, None, None]:
    """Under ``--dist loadgroup``, every test of one model runs on the same xdist worker.

    Each transfer test without an ``xdist_group`` mark of its own gets
    ``xdist_group(name="transfer:<model spec>")``, so the model is loaded, and
    its passes run, in one process.
    """
    # the controller has --dist; xdist's workers get dist="no" and loadgroup=True
    loadgroup = config.getoption("dist", None) == "loadgroup" or getattr(config.option, "loadgroup", False)
    if loadgroup:
        for item in items:
            if item.get_closest_marker("xdist_group") is None and (group := model_group(item)) is not None:
                item.add_marker(pytest.mark.xdist_group(name=group))
    result = yield
    if loadgroup and os.environ.get("PYTEST_XDIST_WORKER"):
        _suffix_xdist_groups(items)
    return result


def _suffix_xdist_groups(items: list[pytest.Item]) -> None:
    """Make xdist's ``nodeid@group`` renaming take effect where pytest no longer reads it.

    pytest-xdist (3.8 and earlier) tells its loadgroup scheduler a test's
    group by setting ``item._nodeid``, which pytest 9.2 replaced by a
    structured id (pytest-dev/pytest-xdist#1386), so groups were silently
    ignored. This does the same renaming through the structured id, for
    tests whose id xdist could not change; it does nothing once xdist does.
    """
    try:
        from _pytest.nodeid import NodeId
    except ImportError:  # a pytest without structured ids: xdist's own renaming works there
        return
    for item in items:
        names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                        for m in item.iter_markers("xdist_group")})
        suffix = "@" + "_".join(names)
        if not names or item.nodeid.endswith(suffix) or not hasattr(item, "_id"):
            continue
        item._id = NodeId.parse(item.nodeid + suffix)


def nodeid_without_group(item: pytest.Item) -> str:
    """The node id without the ``@group`` suffix of ``--dist loadgroup`` (measurements and baselines use it)."""
    return without_group(item.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
    ctx = item.config.stash.get(CONTEXT_KEY, None)
    if ctx is None:
        yield
        return
    ctx.current_test = nodeid_without_group(item)
    ctx.current_test_path = str(item.path)
    item.stash[ITEM_KEY] = []  # the test's own measurements
    ctx.take_new_measurements()  # what was recorded between tests belongs to none of them
    try:
        yield
    finally:
        ctx.current_test = None
        ctx.current_test_path = None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    ctx = item.config.stash.get(CONTEXT_KEY, None)
    if ctx is not None:
        ctx.clock = time.perf_counter()  # a gate's duration counts from here (fixture setup excluded)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)  # outermost: the report as pytest-xfail made it
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Generator[None, Any, None]:
    ctx = item.config.stash.get(CONTEXT_KEY, None)
    live = item.config.stash.get(LIVE_KEY, None)
    if live is not None:
        live.clear()  # pytest writes the test's outcome next
        if call.when == "teardown":  # under pytest-xdist, the passes the test ran travel to the controller
            item.user_properties.extend((PASSES_PROPERTY, json.dumps(p)) for p in live.take())
    if ctx is not None:
        # measurements travel with the reports (and so through pytest-xdist and --junitxml); only those
        # recorded since the previous report are looked at, so the cost per test does not grow with the session
        test = nodeid_without_group(item)
        for m in ctx.take_new_measurements():
            if m.test == test:
                item.stash[ITEM_KEY].append(m)
                item.user_properties.append((PROPERTY, json.dumps(m.to_dict(), default=str)))
                item.user_properties.append((f"transfer.{m.metric}", m.value))
    outcome = yield
    report = outcome.get_result()
    if ctx is not None and report.failed:
        _record_test_error(item, call, report)


def _record_test_error(item: pytest.Item, call: Any, report: pytest.TestReport) -> None:
    """A failed phase of a test that uses pytest-transfer and recorded no failing gate: a test error
    (:mod:`pytest_transfer.report.errors`), carried by this report and the test's later ones (so through
    pytest-xdist and into JUnit XML, which reads the teardown report's properties)."""
    from .report.errors import ERROR_PROPERTY, error_entry

    entry = error_entry(item, call, report, item.stash.get(ITEM_KEY, []), nodeid_without_group(item))
    if entry is not None:
        prop = (ERROR_PROPERTY, json.dumps(entry))  # ASCII: execnet refuses strings that are not UTF-8
        item.user_properties.append(prop)
        report.user_properties.append(prop)


# --- fixtures ----------------------------------------------------------------

@pytest.fixture(scope="session")
def transfer_device(pytestconfig: pytest.Config) -> Any:
    """``transfer_device -> torch.device`` (session scope): the device the transfer gates run on
    (``--transfer-device``, default ``auto``: a CUDA GPU (one per pytest-xdist worker), else MPS, else the CPU).

    Example::

        def test_uses_gpu_when_there(transfer_device):
            print(transfer_device)
    """
    return get_context(pytestconfig).device


def _requested_spec(request: pytest.FixtureRequest, key: str, fixture: str) -> tuple[Any, dict[str, Any]]:
    mark = _marker(request.node)
    if mark is not None:
        _check_marker(mark, request.node.nodeid)
    from .fixtures import kwargs_for

    listed = mark.kwargs.get(key) if mark is not None else None
    given = mark.kwargs.get(f"{key}_kwargs") if mark is not None else None
    if hasattr(request, "param"):
        return request.param, kwargs_for(request.param, given, listed, key)
    if listed is not None:
        return listed, kwargs_for(listed, given, listed, key)
    # the one line, without the plugin's traceback
    pytest.fail(f"{request.node.nodeid}: the {fixture} fixture needs a {key}: mark the test with "
                f'@pytest.mark.transfer({key}="...") or parametrize {fixture} indirectly', pytrace=False)


@pytest.fixture
def pretrained_model(request: pytest.FixtureRequest) -> Any:
    """``pretrained_model -> TransferModel``: the model named by ``@pytest.mark.transfer(model=...,
    model_kwargs={...})`` (a list of specs runs the test once per model), or by indirect parametrisation.

    Loaded once per session and spec. Example::

        @pytest.mark.transfer(model="torchvision:resnet18", dataset="digits")
        def test_probe(pretrained_model, target_dataset):
            assert_transfer_accuracy_above(pretrained_model, target_dataset, 0.9)
    """
    from .fixtures import model_for

    spec, kwargs = _requested_spec(request, "model", "pretrained_model")
    return model_for(get_context(request.config), spec, kwargs)


@pytest.fixture
def target_dataset(request: pytest.FixtureRequest) -> Any:
    """``target_dataset -> TargetDataset``: the dataset named by ``@pytest.mark.transfer(dataset=...,
    dataset_kwargs={...})`` (a list of specs runs the test once per dataset), or by indirect parametrisation.

    Loaded once per session and spec. Example::

        @pytest.mark.transfer(model="torchvision:resnet18", dataset="imagefolder:data/xray")
        def test_classes(target_dataset):
            assert target_dataset.classes == ["normal", "pneumonia"]
    """
    from .fixtures import dataset_for

    spec, kwargs = _requested_spec(request, "dataset", "target_dataset")
    return dataset_for(get_context(request.config), spec, kwargs)


@pytest.fixture
def transfer_baseline(request: pytest.FixtureRequest) -> Any:
    """``transfer_baseline(model, dataset, *, metrics=('accuracy',), method='linear_probe', split='test',
    min_effect=None, alpha=None, tolerance=None, relative_tolerance=None, confidence=None, path=None, k=20,
    C=1.0) -> dict[str, Measurement]``: :func:`~pytest_transfer.assert_no_regression` against this test's
    baseline; also ``.path(model, dataset)``, ``.load(model, dataset)``, ``.directory``, ``.update``.

    Baselines live in ``__transfer_baselines__/<test module>/`` next to the
    test file; ``--transfer-update-baselines`` rewrites them. Example::

        @pytest.mark.transfer(model="my-backbone", dataset="digits")
        def test_no_regression(transfer_baseline, pretrained_model, target_dataset):
            transfer_baseline(pretrained_model, target_dataset, metrics=["accuracy", "f1"])
    """
    from .gates.regression import BaselineFixture

    return BaselineFixture(get_context(request.config), request.node.nodeid, request.node.path)

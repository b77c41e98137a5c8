"""Installed but unused, the plugin costs nothing: pytest on a project without transfer tests imports neither torch
nor numpy because of it (checked in a fresh interpreter, against the same run with -p no:transfer)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

HEAVY = ("torch", "torchvision", "numpy", "scipy", "sklearn", "PIL", "filelock", "matplotlib")

PROBE = textwrap.dedent("""
    import json, sys
    import pytest
    code = pytest.main(sys.argv[1:])
    print(json.dumps({"code": int(code), "modules": sorted(m for m in sys.modules if "." not in m)}))
""")


def imported(cwd, *args):
    out = subprocess.run([sys.executable, "-c", PROBE, "-q", "-p", "no:cacheprovider", *args], cwd=cwd,
                         capture_output=True, text=True, timeout=120)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["code"], set(result["modules"])


@pytest.fixture
def plain_project(pytester):
    # a [tool.pytest_transfer] table is read at start-up, and the test module imports the public API (lazily)
    pytester.makepyprojecttoml('[tool.pytest_transfer]\nseed = 3\nbatch_size = 32\n')
    pytester.makepyfile(test_plain="""
        import pytest_transfer

        def test_arithmetic():
            assert 1 + 1 == 2

        def test_public_names_resolve_lazily():
            assert "assert_transfer_accuracy_above" in dir(pytest_transfer)
    """)
    return pytester.path


def test_a_project_without_transfer_tests_imports_no_heavy_module(plain_project):
    code, with_plugin = imported(plain_project)
    assert code == 0
    assert "pytest_transfer" in with_plugin  # the plugin was loaded ...
    assert not with_plugin & set(HEAVY)  # ... and imported none of them


def test_nothing_heavy_is_imported_that_pytest_alone_would_not(plain_project):
    _, with_plugin = imported(plain_project)
    code, without = imported(plain_project, "-p", "no:transfer")
    assert code == 0
    assert not (with_plugin - without) & set(HEAVY)


def test_help_and_collect_only_import_no_heavy_module(plain_project):
    for args in (["--help"], ["--collect-only"]):
        out = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=plain_project, capture_output=True,
                             text=True, timeout=120)
        modules = set(json.loads(out.stdout.strip().splitlines()[-1])["modules"])
        assert not modules & set(HEAVY), args


def test_a_transfer_test_does_import_torch(pytester):
    # the other side of the coin: the probe above can see torch when it is imported
    pytester.makepyfile(test_t="""
        def test_device(transfer_device):
            assert str(transfer_device) == "cpu"
    """)
    code, modules = imported(pytester.path, "--transfer-device=cpu")
    assert code == 0 and "torch" in modules

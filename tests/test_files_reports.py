"""Files, paths, runs, reports (issue 20): one rule for relative paths, the "thresholds never used" rule in
every kind of run, names that are not UTF-8 or hold control characters in every report writer and every line
printed, display width, report and baseline paths that cannot be written, settings refused instead of coerced.

Every file-system fault is a real one in a temporary folder: a directory given as the file, a path under a
file, a read-only folder (a read-only tmpfs when the tests run as root, who ignores folder permissions) and a
full disk (a tiny tmpfs, root only).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.test_reports import CONFTEST

# --------------------------------------------------------------------------- "thresholds never used"

RUNS_PYPROJECT = '''
[tool.pytest.ini_options]
addopts = "-p no:unraisableexception -p no:hypothesispytest"

[tool.pytest_transfer]
device = "cpu"
no_cache = true

[tool.pytest_transfer.thresholds."pooled"."spots"]
knn_accuracy = 0.5
[tool.pytest_transfer.thresholds."pooled"."spots-b"]
knn_accuracy = 0.5
[tool.pytest_transfer.thresholds."pooled"."spotz"]
knn_accuracy = 0.5
[tool.pytest_transfer.thresholds."torchvision:resnet18"."spots"]
knn_accuracy = 0.5
[tool.pytest_transfer.thresholds."torchvision:resnet81"."spots"]
knn_accuracy = 0.5
'''

#: pytest's options of the pytester projects (no hypothesis plugin: it costs seconds per in-process run)
INI = '[tool.pytest.ini_options]\naddopts = "-p no:cacheprovider -p no:hypothesispytest"\n'
TYPOS = ('"pooled"."spotz"', '"torchvision:resnet81"."spots"')  # a registered name and a spec, misspelt
WARNING = "thresholds never used"


@pytest.fixture
def runs(pytester, monkeypatch):
    """A suite of two files in tests/ and their tables, and two misspelt tables. The tests only name their
    model and dataset (no gate runs: the rule is about what the suite names)."""
    monkeypatch.delenv("FAIL_B", raising=False)
    pytester.makeconftest(CONFTEST + '''
def pytest_transfer_register_datasets(registry):
    registry.register("spots", make_spots)
    registry.register("spots-b", make_spots)
''')
    pytester.makefile(".toml", pyproject=RUNS_PYPROJECT)
    tests = pytester.mkdir("tests")
    (tests / "test_a.py").write_text('import pytest\n\n@pytest.mark.transfer(model="pooled", dataset="spots")\n'
                                     'def test_a():\n    pass\n')
    (tests / "test_a.py").write_text((tests / "test_a.py").read_text() + '\n\n@pytest.mark.transfer('
                                     'model="torchvision:resnet18", dataset="spots")\ndef test_spec():\n    pass\n')
    (tests / "test_empty.py").write_text('"""A module that defines nothing: still collected."""\n')
    (tests / "test_b.py").write_text('import os\nimport pytest\n\n'
                                     '@pytest.mark.transfer(model="pooled", dataset="spots-b")\n'
                                     'def test_b():\n    assert os.environ.get("FAIL_B") != "1"\n')
    return pytester


def _unused(result) -> str:
    """The "thresholds never used" line, or ``""``."""
    return next((line for line in result.outlines if WARNING in line), "")


def _names_the_typo_only(result) -> None:
    line = _unused(result)
    assert all(typo in line for typo in TYPOS), result.stdout.str()
    assert line.count("[tool.pytest_transfer.thresholds.") == 2  # no false alarm


@pytest.mark.parametrize("args", [(), ("tests",), ("tests/",), ("-k", "test_a"),
                                  ("--deselect", "tests/test_b.py::test_b"), ("-m", "not slow")],
                         ids=["whole-suite", "tests", "tests-slash", "-k", "--deselect", "-m"])
def test_a_run_that_collected_the_whole_suite_names_a_misspelt_table(runs, args):
    result = runs.runpytest(*args)
    result.assert_outcomes(passed=2 if ("-k" in args or "--deselect" in args) else 3)
    _names_the_typo_only(result)


def test_a_run_of_one_file_says_nothing(runs):
    result = runs.runpytest("tests/test_a.py")
    result.assert_outcomes(passed=2)
    assert _unused(result) == ""  # spots-b's table belongs to a file this run did not collect


def test_last_failed_says_nothing_and_stepwise_names_the_typo(runs, monkeypatch):
    monkeypatch.setenv("FAIL_B", "1")
    runs.runpytest().assert_outcomes(passed=2, failed=1)
    lf = runs.runpytest("--lf")  # --lf skips test_a.py altogether: its table is not seen
    lf.assert_outcomes(failed=1)
    assert _unused(lf) == ""
    runs.runpytest("--sw").assert_outcomes(passed=2, failed=1)
    sw = runs.runpytest("--sw")  # --sw deselects test_a, which was collected: the typo is named, spots is not
    sw.assert_outcomes(failed=1)
    assert "deselected" in sw.stdout.str()
    _names_the_typo_only(sw)


def test_a_folder_outside_testpaths_is_not_part_of_the_suite(runs):
    runs.makefile(".toml", pyproject=RUNS_PYPROJECT.replace('addopts', 'testpaths = ["tests"]\naddopts'))
    (runs.path / "scratch").mkdir()
    (runs.path / "scratch" / "test_scratch.py").write_text("def test_s():\n    pass\n")
    _names_the_typo_only(runs.runpytest("tests"))
    assert _unused(runs.runpytest("tests/test_b.py")) == ""


def test_under_xdist_the_workers_tell_what_they_collected(runs):
    result = runs.runpytest_subprocess("-n", "2")
    result.assert_outcomes(passed=3)
    _names_the_typo_only(result)


# --------------------------------------------------------------------------- names that are not UTF-8, injection

EVIL_MODEL = "pooled\\n::error::injected"  # as Python source: a newline, then a workflow command
NAMES_TEST = '''
import os
import pytest
from pytest_transfer import assert_transfer_accuracy_above

DATA = "imagefolder:" + os.fsdecode(b"data_caf\\xe9")


@pytest.mark.transfer(model="''' + EVIL_MODEL + '''", dataset=DATA)
def test_gates(pretrained_model, target_dataset):
    assert_transfer_accuracy_above(pretrained_model, target_dataset, 0.0, method="knn", k=1)
    with pytest.raises(AssertionError):
        assert_transfer_accuracy_above(pretrained_model, target_dataset, 0.99, method="knn", k=1)
'''


def _image_folder(root: Path, name: bytes, *, signal: bool = True) -> None:
    """Three classes of eight 8×8 grey PNGs under a folder whose name is the bytes ``name`` (a bright square
    at a place of its own per class with ``signal``, else noise only)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = os.fsencode(root) + b"/" + name
    for c, cls in enumerate(("a", "b", "c")):
        os.makedirs(folder + b"/" + cls.encode())
        for i in range(8):
            img = (rng.random((8, 8)) * 80).astype(np.uint8)
            if signal:
                img[c * 2:c * 2 + 3, c * 2:c * 2 + 3] = 250
            Image.fromarray(img, mode="L").save(os.fsdecode(folder + f"/{cls}/{i}.png".encode()))


@pytest.mark.skipif(os.name == "nt", reason="names that are not UTF-8 are a POSIX file-system matter")
def test_names_that_are_not_utf8_or_hold_newlines_reach_every_report(pytester, monkeypatch):
    """The session passes, every writer writes valid UTF-8, JSON keeps the name losslessly, and no line of
    output begins with a workflow command the test did not ask for."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    for key in ("GITHUB_STEP_SUMMARY", "GITHUB_WORKSPACE", "PYTHONIOENCODING"):
        monkeypatch.delenv(key, raising=False)
    pytester.makeconftest(CONFTEST.replace('registry.register("pooled"', 'registry.register("pooled\\n::error::'
                                                                         'injected", make_net)\n    registry.'
                                                                         'register("pooled"'))
    pytester.makefile(".toml", pyproject='[tool.pytest.ini_options]\naddopts = "-p no:hypothesispytest"\n'
                                         '[tool.pytest_transfer]\ndevice = "cpu"\nno_cache = true\n')
    _image_folder(pytester.path, b"data_caf\xe9", signal=False)
    pytester.makepyfile(test_names=NAMES_TEST)
    result = pytester.runpytest_subprocess(  # under pytest-xdist: the names also travel from a worker
        "-n", "2", "-p", "no:cacheprovider", "--transfer-report=r.json", "--transfer-html=r.html",
        "--transfer-openmetrics=m.txt", "--transfer-github-summary=summary.md", "--junitxml=junit.xml")
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    assert "Traceback" not in result.stderr.str() + result.stdout.str()
    dataset = "imagefolder:data_caf\udce9"
    doc = json.loads((pytester.path / "r.json").read_bytes().decode("utf-8"))  # strict UTF-8
    assert {r["dataset"] for r in doc["measurements"]} == {dataset}  # lossless
    assert {r["model"] for r in doc["measurements"]} == {"pooled\n::error::injected"}
    page = (pytester.path / "r.html").read_bytes().decode("utf-8")
    assert "data_caf\\xe9" in page
    metrics = (pytester.path / "m.txt").read_bytes().decode("utf-8")
    samples = [s for f in text_string_to_metric_families(metrics) for s in f.samples if "dataset" in s.labels]
    assert {s.labels["dataset"] for s in samples} == {"imagefolder:data_caf\\xe9"}
    summary = (pytester.path / "summary.md").read_bytes().decode("utf-8")
    assert "data_caf\\\\xe9" in summary and "pooled\\\\n::error::injected" in summary
    assert "\n::" not in summary
    ET.parse(pytester.path / "junit.xml")
    out = result.stdout.str()
    assert "pooled\\n::error::injected" in out and "data_caf\\xe9" in out  # the table shows the names escaped
    commands = [line for line in result.outlines if line.startswith("::")]
    assert len(commands) == 1 and commands[0].startswith("::warning file=test_names.py,line=")
    assert "pooled\\n::error::injected" in commands[0]


def test_escapes_of_the_text_module():
    from pytest_transfer.text import markdown_cell, printable, workflow_data, workflow_property

    name = "a\n::error::b\r\x1b[31m\u2028caf\udce9\ud800"
    shown = printable(name)
    assert shown == "a\\n::error::b\\r\\x1b[31m\\u2028caf\\xe9\\ud800"
    assert shown.encode("utf-8") and "\n" not in shown and "\x1b" not in shown
    assert printable("猫 résumé 🙂") == "猫 résumé 🙂"  # nothing else changes
    assert workflow_data("50%\nx") == "50%25\\nx" and workflow_property("a:b,c") == "a%3Ab%2Cc"
    assert markdown_cell("a|b\\c\n") == "a\\|b\\\\c\\\\n"
    assert markdown_cell("<lambda>") == "&lt;lambda>"  # not an HTML tag GitHub drops
    from pytest_transfer.text import markdown_code

    # an exception's text as written: no bold __init__, no dropped <lambda>, backticks and pipes kept
    assert markdown_code("__init__() in <lambda>") == "`__init__() in <lambda>`"
    assert markdown_code("got `x` | y") == "`` got `x` \\| y ``"
    from pytest_transfer.text import json_surrogates

    text = json_surrogates(json.dumps({"k": "caf\udce9"}, ensure_ascii=False))
    assert json.loads(text.encode("utf-8").decode("utf-8")) == {"k": "caf\udce9"}


# --------------------------------------------------------------------------- display width

def test_the_summary_table_pads_by_display_width():
    """Hand-worked: 猫 and 🙂 take two columns each, é written as e + a combining accent takes one."""
    from pytest_transfer.context import Measurement
    from pytest_transfer.report.terminal import format_table
    from pytest_transfer.text import display_width

    assert [display_width(s) for s in ("猫猫", "🙂", "e\u0301", "ab", "Ａ")] == [4, 2, 1, 2, 2]
    names = ["猫猫", "ab🙂", "cafe\u0301", "abcd"]  # each four columns wide
    ms = [Measurement(gate="transfer_accuracy", metric="acc", value=0.5, model=n, dataset="d", threshold=0.4,
                      test=f"t.py::test_{i}", passed=True) for i, n in enumerate(names)]
    lines = format_table(ms)
    assert lines[0] == "test" + " " * 10 + "model  dataset  metric  value [interval]  threshold  result"
    for i, (line, name) in enumerate(zip(lines[2:], names, strict=True)):
        assert line == f"t.py::test_{i}  {name}   d        acc     0.5000            >= 0.4     PASS"


def test_a_wide_cell_wraps_by_display_width():
    from pytest_transfer.report.terminal import wrap_cell
    from pytest_transfer.text import display_width

    lines = wrap_cell("猫" * 9, 6)
    assert lines == ["猫猫猫", "猫猫猫", "猫猫猫"] and all(display_width(x) <= 6 for x in lines)


# --------------------------------------------------------------------------- paths that cannot be written

@contextlib.contextmanager
def _mounted(folder: Path, options: str):
    """A tmpfs on ``folder`` with mount ``options`` (root only; skipped where it cannot be mounted)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@contextlib.contextmanager
def _read_only(folder: Path, old: str):
    """``folder`` holding ``old.json`` (text ``old``), then read-only: by its mode for a user, a read-only
    tmpfs for root (who writes into a folder whatever its mode)."""
    if os.geteuid() != 0:
        folder.mkdir()
        (folder / "old.json").write_text(old)
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)
        return
    with _mounted(folder, "size=64k"):
        (folder / "old.json").write_text(old)
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        yield folder


PASSING = '''
import pytest
from pytest_transfer import assert_transfer_accuracy_above

@pytest.mark.transfer(model="pooled", dataset="spots")
def test_accuracy(pretrained_model, target_dataset):
    assert_transfer_accuracy_above(pretrained_model, target_dataset, 0.3, method="knn")
'''


@pytest.fixture
def passing(pytester, monkeypatch):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    pytester.makeconftest(CONFTEST)
    pytester.makefile(".toml", pyproject=INI + '[tool.pytest_transfer]\ndevice = "cpu"\nno_cache = true\n')
    pytester.makepyfile(test_pass=PASSING)
    (pytester.path / "a_file").write_text("not a folder")
    return pytester


def test_reports_that_cannot_be_written_are_named_and_the_session_passes(passing):
    result = passing.runpytest("--transfer-report=.", "--transfer-html=a_file/r.html",
                               "--transfer-openmetrics=m.txt", "--transfer-github-summary=a_file/s.md")
    assert result.ret == 0
    out = result.stdout.str()
    assert "Traceback" not in out and "IsADirectoryError" in out  # the kind named on the line, no traceback
    result.stdout.fnmatch_lines([
        f"pytest-transfer: could not write the JSON report to {passing.path}: it is a directory; give a file "
        "name in it (IsADirectoryError); any previous file there is left unchanged",
        f"pytest-transfer: could not write the HTML report to {passing.path}/a_file/r.html: a part of the path "
        "is a file, not a folder (*Error); any previous file there is left unchanged",
        f"pytest-transfer: could not write the GitHub job summary to {passing.path}/a_file/s.md: a part of the "
        "path is a file, not a folder (*Error)*"])
    assert f"OpenMetrics report written to {passing.path}/m.txt" in out  # the others are still written
    assert (passing.path / "a_file").read_text() == "not a folder"


def test_a_report_into_a_read_only_folder_keeps_the_old_file(passing):
    with _read_only(passing.path / "ro", old="old report") as folder:
        result = passing.runpytest(f"--transfer-report={folder}/old.json")
        assert result.ret == 0
        result.stdout.fnmatch_lines([f"pytest-transfer: could not write the JSON report to {folder}/old.json: "
                                     "* (*Error); any previous file there is left unchanged"])
        assert (folder / "old.json").read_text() == "old report"


def test_a_report_on_a_full_disk_keeps_the_old_file(passing):
    with _mounted(passing.path / "full", "size=16k") as folder:
        (folder / "old.json").write_text("old report")
        with contextlib.suppress(OSError), open(folder / "filler", "wb") as fh:
            fh.write(b"x" * 64 * 1024)  # fills the 16 KiB
        result = passing.runpytest(f"--transfer-report={folder}/old.json")
        assert result.ret == 0
        result.stdout.fnmatch_lines([f"pytest-transfer: could not write the JSON report to {folder}/old.json: "
                                     "no space left on the device (OSError); any previous file there is left "
                                     "unchanged"])
        assert (folder / "old.json").read_text() == "old report"


BASELINE_TEST = '''
import pytest

@pytest.mark.transfer(model="pooled", dataset="spots")
def test_no_regression(transfer_baseline, pretrained_model, target_dataset):
    transfer_baseline(pretrained_model, target_dataset, metrics=["accuracy"], method="knn")
'''


def test_baselines_that_cannot_be_written_fail_their_test_in_one_line(passing):
    passing.makepyfile(test_pass=BASELINE_TEST)
    (passing.path / "__transfer_baselines__").write_text("a file where the folder goes")
    result = passing.runpytest("--transfer-update-baselines")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*BaselineError: could not write the baseline to __transfer_baselines__/test_pass/"
                                 "*.json: a part of the path is a file, not a folder (*Error); any previous file "
                                 "there is left unchanged"])
    assert "Traceback" not in result.stdout.str() and "os.replace" not in result.stdout.str()


def test_a_cache_folder_that_cannot_be_written_costs_a_warning_not_the_result(passing):
    passing.makefile(".toml", pyproject=INI + '[tool.pytest_transfer]\ndevice = "cpu"\ncache_dir = "a_file/cache"\n')
    result = passing.runpytest("-W", "default")
    result.assert_outcomes(passed=1)
    assert "CacheWarning" in result.stdout.str() and "a_file/cache" in result.stdout.str()


# --------------------------------------------------------------------------- settings refused, not coerced

@pytest.mark.parametrize(("line", "key", "valid"), [
    ("seed = 1.7", "seed", "expected an integer"),
    ("seed = -1", "seed", "integer >= 0"),
    ("batch_size = 64.9", "batch_size", "expected an integer"),
    ("batch_size = true", "batch_size", "expected an integer"),
    ('cache_dir = ""', "cache_dir", "no_cache = true"),
    ('cache_dir = ["a"]', "cache_dir", "expected text, got a list"),
    ('report = ["r.json"]', "report", "expected text, got a list"),
    ("html = 1", "html", "expected text, got a int"),
    ('confidence = ["strict"]', "confidence", "expected text"),
    ("confidence_level = nan", "confidence_level", "finite"),
    ("test_fraction = true", "test_fraction", "expected a number"),
    ("num_workers = 2.5", "num_workers", "'auto' or an integer"),
    ('device = ["cpu"]', "device", "expected text"),
    ("no_cache = 2", "no_cache", "expected true/false"),
])
def test_a_setting_of_the_wrong_kind_is_refused_by_name(tmp_path, line, key, valid):
    from pytest_transfer.settings import resolve

    (tmp_path / "pyproject.toml").write_text(f"[tool.pytest_transfer]\n{line}\n")
    with pytest.raises(pytest.UsageError, match=f"invalid value .* for {key}: .*{valid}"):
        resolve({}, rootdir=tmp_path, environ={})


def test_settings_from_the_environment_are_refused_the_same_way(tmp_path):
    from pytest_transfer.settings import resolve

    with pytest.raises(pytest.UsageError, match=r"PYTEST_TRANSFER_SEED: invalid value '1\.7' for seed"):
        resolve({}, rootdir=tmp_path, environ={"PYTEST_TRANSFER_SEED": "1.7"})
    assert resolve({}, rootdir=tmp_path, environ={"PYTEST_TRANSFER_SEED": "7"}).seed == 7
    assert resolve({"batch_size": "32"}, rootdir=tmp_path, environ={}).batch_size == 32


@pytest.mark.parametrize("value", ["-inf", "inf", "nan"])
@pytest.mark.parametrize("key", ["logme", "transfer_accuracy", "max_relative_mce"])
def test_a_threshold_that_is_not_finite_is_refused_for_every_key(tmp_path, key, value):
    from pytest_transfer.context import build_thresholds
    from pytest_transfer.settings import resolve

    (tmp_path / "pyproject.toml").write_text(f'[tool.pytest_transfer.thresholds."m"."d"]\n{key} = {value}\n')
    with pytest.raises(pytest.UsageError, match=f"{key} = {value}"):
        build_thresholds(resolve({}, rootdir=tmp_path, environ={}))


def test_an_infinite_threshold_argument_is_refused():
    from pytest_transfer.thresholds import check_threshold_value

    for value in (float("-inf"), float("inf")):
        with pytest.raises(ValueError, match="infinite threshold"):
            check_threshold_value(value, key="logme", argument="threshold")
        with pytest.raises(ValueError, match="infinite threshold"):
            check_threshold_value(value, key=None, argument="margin")


# --------------------------------------------------------------------------- one rule for relative paths

def _squeezenet(path: Path) -> None:
    import torch
    from torchvision import models as tvm

    torch.manual_seed(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tvm.squeezenet1_1(num_classes=3).state_dict(), path)


def test_every_path_of_a_run_from_a_sub_folder_is_taken_from_the_rootdir(pytester, monkeypatch):
    """``cd tests && pytest``: the checkpoint, the image folder, the thresholds file and the report of one
    marker and one command line are all found from the rootdir, and the model keeps its spec as its name."""
    _squeezenet(pytester.path / "weights" / "m.pt")
    _image_folder(pytester.path, b"imgs")
    pytester.makefile(".toml", pyproject=INI + '[tool.pytest_transfer]\ndevice = "cpu"\nno_cache = true\n'
                                         'thresholds = "limits.toml"\n')
    pytester.makefile(".toml", limits='[thresholds."checkpoint:weights/m.pt"."imagefolder:imgs"]\n'
                                      'knn_accuracy = 0.0\n')
    tests = pytester.mkdir("tests")
    (tests / "test_paths.py").write_text('''
import pytest
from pytest_transfer import assert_transfer_accuracy_above

@pytest.mark.transfer(model="checkpoint:weights/m.pt", dataset="imagefolder:imgs",
                      model_kwargs={"arch": "squeezenet1_1", "num_classes": 3, "image_size": 32})
def test_paths(pretrained_model, target_dataset):
    assert pretrained_model.name == "checkpoint:weights/m.pt"
    assert_transfer_accuracy_above(pretrained_model, target_dataset, method="knn", k=1)
''')
    monkeypatch.chdir(tests)
    result = pytester.runpytest("--transfer-report=out/r.json")
    result.assert_outcomes(passed=1)
    doc = json.loads((pytester.path / "out" / "r.json").read_text())
    assert doc["measurements"][0]["threshold_source"].startswith("limits.toml")
    assert not (tests / "out").exists()


def test_spec_paths_and_path_keywords_are_taken_from_the_rootdir(fresh_context, tmp_path, monkeypatch):
    from pytest_transfer import load_model

    _squeezenet(tmp_path / "weights" / "m.pt")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    model = load_model("checkpoint:weights/m.pt", arch="squeezenet1_1", num_classes=3)
    assert model.name == "checkpoint:weights/m.pt"
    missing = f"weights file {tmp_path}/weights/nope.pt does not exist .*rootdir {tmp_path}"
    with pytest.raises(FileNotFoundError, match=missing):
        load_model("checkpoint:weights/nope.pt", arch="squeezenet1_1")


def test_a_timm_weights_file_is_taken_from_the_rootdir(fresh_context, tmp_path, monkeypatch):
    timm = pytest.importorskip("timm")
    import torch

    from pytest_transfer import load_model

    torch.manual_seed(0)
    reference = timm.create_model("resnet10t", pretrained=False, num_classes=3)
    (tmp_path / "w").mkdir()
    torch.save(reference.state_dict(), tmp_path / "w" / "r.pt")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    model = load_model("timm:resnet10t", weights="w/r.pt", num_classes=3)
    expected = reference.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in model.module.state_dict().items())


def test_an_hf_folder_is_taken_from_the_rootdir(fresh_context, tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers")
    import torch

    from pytest_transfer import load_model

    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=64, num_labels=3)
    torch.manual_seed(0)
    transformers.ViTForImageClassification(config).save_pretrained(tmp_path / "models" / "vit")
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "models" / "vit")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    model = load_model("hf:models/vit")
    assert model.name == "hf:models/vit" and model.num_classes == 3

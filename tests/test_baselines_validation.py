"""Baselines are validated on read: real files in a temporary folder, edited as a hand (or a bad merge) would,
are refused by name with the fix, before any gate can pass on them."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from pytest_transfer import assert_no_regression
from pytest_transfer.baselines import BaselineError, document_digest, load_baseline


@pytest.fixture
def stored(fresh_context, tmp_path, monkeypatch):
    """A real baseline written by the gate, and a function that re-runs the gate against it."""
    from pytest_transfer import load_dataset, load_model
    from tests._helpers import make_blobs_images, tiny_net

    monkeypatch.chdir(tmp_path)
    model, data = load_model(tiny_net(), name="tiny"), load_dataset(make_blobs_images(), name="blobs")
    fresh_context.current_test, fresh_context.current_test_path = "t/test_a.py::test_one", str(tmp_path / "test_a.py")
    metrics = ("accuracy", "f1")
    with pytest.raises(AssertionError, match="no baseline"):
        assert_no_regression(model, data, metrics=metrics)
    path = tmp_path / "__transfer_baselines__" / "test_a" / "test_one--tiny--blobs.json"
    assert all(m.passed for m in assert_no_regression(model, data, metrics=metrics).values())
    return path, lambda: assert_no_regression(model, data, metrics=metrics)


def edit(path, change, *, redigest):
    doc = json.loads(path.read_text())
    change(doc)
    if redigest:
        doc["digest"] = document_digest(doc)
    path.write_text(json.dumps(doc, indent=2))


def zero_bits(doc):
    doc["correct"] = base64.b64encode(bytes(len(base64.b64decode(doc["correct"])))).decode()


def refused(check, path, words):
    with pytest.raises(BaselineError, match=f"baseline file {path}") as info:
        check()
    assert words in str(info.value) and "--transfer-update-baselines" in str(info.value)


def test_an_edited_file_fails_its_digest(stored):
    path, check = stored
    edit(path, zero_bits, redigest=False)  # passed McNemar on main, while reporting a drop of 0.5
    refused(check, path, "does not match its digest")


def test_a_file_without_a_digest_is_refused(stored):
    path, check = stored
    edit(path, lambda doc: doc.pop("digest"), redigest=False)
    refused(check, path, "has no digest")


def test_reformatting_keeps_the_digest(stored):
    path, check = stored
    doc = json.loads(path.read_text())
    path.write_text(json.dumps(doc, indent=7, sort_keys=True, ensure_ascii=True))
    assert all(m.passed for m in check().values())


@pytest.mark.parametrize(("change", "words"), [
    (zero_bits, "holds impossible values (accuracy"),
    (lambda doc: doc["metrics"].update(f1_macro=float("-inf")), "metrics outside [0, 1] or not finite"),
    (lambda doc: doc["metrics"].update(accuracy=float("nan")), "metrics outside [0, 1] or not finite"),
    (lambda doc: doc["metrics"].update(accuracy=1.5), "metrics outside [0, 1] or not finite"),
    (lambda doc: doc.update(num_classes=1), "predictions outside 0..0"),
])
def test_impossible_values_are_refused_even_with_a_matching_digest(stored, change, words):
    path, check = stored
    edit(path, change, redigest=True)
    with pytest.raises(BaselineError, match="holds impossible values"):
        load_baseline(path)
    refused(check, path, words)


def test_a_record_that_disagrees_with_its_own_predictions_is_refused(stored):
    path, check = stored

    def zero_bits_and_accuracy(doc):
        zero_bits(doc)
        doc["metrics"]["accuracy"] = 0.0

    edit(path, zero_bits_and_accuracy, redigest=True)
    assert load_baseline(path) is not None  # possible on its own: the labels show the lie
    refused(check, path, "per-sample correctness disagrees with its predictions")


def test_a_lowered_metric_is_refused(stored):
    """On main a lowered F1 reported a drop outside its own interval."""
    path, check = stored
    value = json.loads(path.read_text())["metrics"]["f1_macro"]
    edit(path, lambda doc: doc["metrics"].update(f1_macro=value - 0.2), redigest=True)
    refused(check, path, f"stores f1_macro = {value - 0.2!r}, but its predictions give {value!r}")


def test_predictions_of_another_class_count_are_refused(stored):
    path, check = stored

    def big(doc):
        raw = np.frombuffer(base64.b64decode(doc["predictions"]["data"]), dtype=np.uint8).copy()
        raw[0] = 200
        doc["predictions"]["data"] = base64.b64encode(raw.tobytes()).decode()

    edit(path, big, redigest=True)
    refused(check, path, "predictions outside 0..2")


def test_an_update_rewrites_a_damaged_baseline(stored, fresh_context):
    path, check = stored
    edit(path, zero_bits, redigest=False)
    import dataclasses

    settings = fresh_context.settings
    fresh_context.settings = dataclasses.replace(settings, update_baselines=True)
    check()
    fresh_context.settings = settings
    assert all(m.passed for m in check().values())

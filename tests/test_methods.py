"""The transfer methods' one interface (pytest_transfer.methods): get_method → fit → predict.

Checked here: names and options are validated together, before any pass; the feature methods' array level
equals scikit-learn on the same arrays and is cached; a method fitted once predicts another dataset (a shifted
one) as scikit-learn does on that dataset's features computed here; and a new method is one class plus one
declaration, which a gate, its config key, the shift gate, a corruption sweep and the layer-wise gate then take
by name.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import pytest_transfer
from pytest_transfer import assert_transfer_accuracy_above, load_dataset, load_model
from pytest_transfer.methods import Fitted, TransferMethod, get_method, predict
from pytest_transfer.methods.features import FeatureMethod
from tests._helpers import make_blobs_images, probe_package_copy, tiny_net

PACKAGE = Path(pytest_transfer.__file__).resolve().parent


@pytest.fixture
def pair():
    x, y = make_blobs_images(20, 3, 16)
    return load_model(tiny_net(), name="tiny"), load_dataset((x, y), name="blobs"), x


def test_an_unknown_method_is_refused_with_the_declared_names_and_a_guess():
    with pytest.raises(ValueError, match=r"method: expected one of linear_probe, knn, direct, finetune, got "
                                         r"'linear-probe'; did you mean 'linear_probe'\?"):
        get_method("linear-probe")
    with pytest.raises(ValueError, match=r"got 'svm'$"):
        get_method("svm")


def test_options_go_to_the_methods_that_take_them_and_finetune_options_are_refused_elsewhere():
    assert (get_method("knn", k=7).k, get_method("linear_probe", C=0.5).C) == (7, 0.5)
    assert get_method("finetune", finetune={"epochs": 2}).config.epochs == 2
    with pytest.raises(ValueError, match=r"finetune= options apply to method='finetune' only; method='knn' takes k"):
        get_method("knn", finetune={"epochs": 2})
    with pytest.raises(ValueError, match="finetune: unknown option"):  # checked here, before any pass
        get_method("finetune", finetune={"epoch": 2})


def test_a_gate_refuses_bad_options_before_any_pass(pair, fresh_context):
    model, data, _ = pair
    with pytest.raises(ValueError, match="method='finetune' only"):
        assert_transfer_accuracy_above(model, data, 0.5, method="direct", finetune={"epochs": 1})
    assert fresh_context.forward_passes == 0


def test_the_linear_probe_at_the_array_level_is_sklearns_and_cached(fresh_context):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 6)) * 2
    y = rng.integers(0, 3, 300)
    x = centres[y] + rng.normal(size=(300, 6))
    method = get_method("linear_probe", C=0.5)
    assert isinstance(method, FeatureMethod)
    head = method.fit_features(x[:200], y[:200], context=fresh_context)
    pred, scores = head.predict_features(x[200:], context=fresh_context)
    scaler = StandardScaler().fit(x[:200])
    ref = LogisticRegression(C=0.5, tol=1e-8, max_iter=5000).fit(scaler.transform(x[:200]), y[:200])
    assert np.mean(pred == ref.predict(scaler.transform(x[200:]))) >= 0.99
    np.testing.assert_allclose(scores, ref.predict_proba(scaler.transform(x[200:])), atol=1e-2)
    again = method.fit_features(x[:200], y[:200], context=fresh_context)
    assert again.probe is head.probe and fresh_context.derived_computed == {"linear_probe": 1}


def test_knn_at_the_array_level_is_sklearns(fresh_context):
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(150, 5)), rng.integers(0, 3, 150)
    pred, scores = get_method("knn", k=5).fit_features(x[:100], y[:100], context=fresh_context).predict_features(
        x[100:], context=fresh_context)
    ref = KNeighborsClassifier(n_neighbors=5, metric="cosine", algorithm="brute").fit(x[:100], y[:100])
    assert scores is None and pred.tolist() == ref.predict(x[100:]).tolist()


def _features(model, images: np.ndarray) -> np.ndarray:
    """The input of the tiny net's last Linear (its penultimate features), by calling the module here."""
    with torch.no_grad():
        return model.module[:-1](torch.from_numpy(images)).double().numpy()


def test_fitted_once_predicts_another_dataset_as_sklearn_does(pair, fresh_context):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    model, data, x = pair
    rng = np.random.default_rng(2)
    images = np.clip(x + rng.normal(0, 0.2, x.shape).astype(np.float32), 0, 1)
    shifted = load_dataset((images, data.labels), name="shifted")
    fitted = get_method("linear_probe").fit(model, data, context=fresh_context)
    assert isinstance(fitted, Fitted) and fitted.model is model
    other = fitted.predict(shifted, split="test", context=fresh_context)
    train, test = data.indices("train"), shifted.indices("test")
    scaler = StandardScaler().fit(_features(model, x[train]))
    ref = LogisticRegression(C=1.0, tol=1e-8, max_iter=5000).fit(
        scaler.transform(_features(model, x[train])), data.labels[train])
    expected = ref.predict(scaler.transform(_features(model, images[test])))
    assert other.method == "linear_probe" and np.mean(other.y_pred == expected) >= 0.95
    assert other.y_true.tolist() == data.labels[test].tolist()
    same = predict(model, shifted, split="test", context=fresh_context)  # the convenience form fits on `shifted`
    assert same.n == other.n


def test_direct_fits_its_mapping_and_refuses_a_head_of_other_classes(fresh_context):
    x, y = make_blobs_images(10, 3, 16)
    data = load_dataset((x, y), name="blobs")
    with pytest.raises(ValueError, match="has 4 outputs and 'blobs' has 3 classes"):
        get_method("direct").fit(load_model(tiny_net(n_classes=4), name="four"), data, context=fresh_context)
    assert fresh_context.forward_passes == 0
    model = load_model(tiny_net(), name="tiny")
    pr = get_method("direct").fit(model, data, context=fresh_context).predict(data, context=fresh_context)
    with torch.no_grad():
        expected = model.module(torch.from_numpy(x[data.indices("test")])).argmax(1).numpy()
    assert pr.y_pred.tolist() == expected.tolist()


def test_a_finetune_sweep_is_one_pass_over_the_tuned_model(pair, fresh_context):
    from pytest_transfer.robustness.perturbations import corruption
    from pytest_transfer.robustness.sweep import corruption_sweep

    model, data, x = pair
    res = corruption_sweep(model, data, ["fog", "contrast"], [1, 5], method="finetune", context=fresh_context)
    # the train features the head is fitted on, then one pass of the tuned model over the clean and 4 cells
    # (the sweep used to pass the model it was given, and predict the tuned one cell by cell: 7 passes)
    assert fresh_context.forward_passes == 2
    tuned = get_method("finetune").fit(model, data, context=fresh_context).model  # from the memo
    test = data.indices("test")
    assert len(test) <= 64  # one chunk: chunk 0's seed
    for name, level in res.cells:
        images = corruption(name, level, seed=res.seed).apply(torch.from_numpy(x[test]), 0)
        with torch.no_grad():
            expected = tuned.module(images).argmax(1).numpy() == data.labels[test]
        assert res.correct[(name, level)].tolist() == expected.tolist()


def test_every_declared_method_is_a_transfer_method():
    from pytest_transfer.declarations import TRANSFER_METHODS
    from pytest_transfer.methods import method_class

    for name in TRANSFER_METHODS:
        assert issubclass(method_class(name), TransferMethod)
        assert get_method(name).name == name


# --- a new method: one class and one declaration ------------------------------------------------------------

TOY = '''
"""Nearest class mean on the frozen features: a toy transfer method."""
import numpy as np

from .features import FeatureHead, FeatureMethod


class Centroids(FeatureHead):
    def __init__(self, means, classes):
        self.means, self.classes = means, classes

    def predict_features(self, features, *, context):
        d = ((np.asarray(features, dtype=np.float64)[:, None, :] - self.means[None]) ** 2).sum(-1)
        return self.classes[d.argmin(1)], None


class NearestMean(FeatureMethod):
    hint = "a toy"

    def fit_features(self, features, labels, *, context):
        x, y = np.asarray(features, dtype=np.float64), np.asarray(labels)
        classes = np.unique(y)
        return Centroids(np.stack([x[y == c].mean(0) for c in classes]), classes)
'''

TOY_ROW = '    MethodDeclaration("toy", "NearestMean", "methods.toy"),\n'

PROBE = textwrap.dedent("""
    import json, sys
    import numpy as np, pytest, torch
    from sklearn.neighbors import NearestCentroid
    import pytest_transfer
    from pytest_transfer import assert_transfer_accuracy_above, drop_in_performance, evaluate, layerwise_transfer
    from pytest_transfer import load_dataset, load_model
    from pytest_transfer import thresholds
    from pytest_transfer.context import Context, set_current_context
    from pytest_transfer import corruption_sweep
    from pytest_transfer.settings import resolve

    set_current_context(Context(resolve({"no_cache": True, "device": "cpu"}, environ={}, pyproject=None)))
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 30)
    x = np.clip(rng.random((60, 1, 8, 8)) + y[:, None, None, None] * 0.1, 0, 1).astype(np.float32)  # overlapping
    model, data = load_model(net, name="net"), load_dataset((x, y), name="pair")
    out = {"file": pytest_transfer.__file__, "key": thresholds.KNOWN_KEYS.get("toy_accuracy")}
    try:
        m = assert_transfer_accuracy_above(model, data, 0.0, method="toy")
        train, test = evaluate(model, data, split="train"), evaluate(model, data, split="test")
        ref = NearestCentroid().fit(train.features, train.labels).predict(test.features)
        out.update(value=m.value, sklearn=float(np.mean(ref == test.labels)), method=m.details["method"])
        try:
            assert_transfer_accuracy_above(model, data, 1.0, method="toy")
        except AssertionError as exc:
            out["failed"] = "a toy" in str(exc)
        out["shift"] = drop_in_performance(model, data, data, method="toy").absolute
        out["sweep"] = corruption_sweep(model, data, "contrast", 5, method="toy").method
        out["layer"] = layerwise_transfer(model, data, ["1", "penultimate"], metrics=("toy",)).scores["toy"]
    except ValueError as exc:
        out["refused"] = str(exc)
    print(json.dumps(out))
""")


def _probe(root: Path) -> dict:
    return probe_package_copy(root, PROBE)


def test_a_new_method_is_one_class_and_one_declaration(tmp_path):
    copy = tmp_path / "pytest_transfer"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "methods" / "toy.py").write_text(TOY, encoding="utf-8")  # the class alone: not a method yet
    before = _probe(tmp_path)
    assert before["file"] == str(copy / "__init__.py") and before["key"] is None
    assert "method: expected one of linear_probe, knn, direct, finetune, got 'toy'" in before["refused"]

    table = (copy / "declarations.py").read_text(encoding="utf-8")
    head = "TRANSFER_METHODS: dict[str, MethodDeclaration] = {m.name: m for m in (\n"
    assert table.count(head) == 1
    (copy / "declarations.py").write_text(table.replace(head, head + TOY_ROW), encoding="utf-8")
    after = _probe(tmp_path)
    assert after["key"] == [0.0, 1.0]  # its config key follows from the declaration
    assert after["method"] == "toy" and after["value"] == after["sklearn"] and 0 < after["value"] < 1
    assert after["failed"]  # the gate fails too, with the method's own hint
    assert after["shift"] == 0.0 and after["sweep"] == "toy"
    assert after["layer"][1] == after["value"]  # at any node too: the layer-wise gate fits it on the tap's features


def test_a_sweep_given_a_method_object_refuses_k_and_c_of_its_own(fresh_context):
    from pytest_transfer import corruption_sweep, load_dataset, load_model
    from pytest_transfer.methods import get_method
    from tests._helpers import make_blobs_images, tiny_net

    x, y = make_blobs_images(n_per_class=6, seed=1, size=8)
    model, data = load_model(tiny_net(), name="t"), load_dataset((x, y))
    with pytest.raises(ValueError, match=r"k=/C=: method is the object .* carries its own"):
        corruption_sweep(model, data, "fog", 1, method=get_method("knn", k=3), k=5)

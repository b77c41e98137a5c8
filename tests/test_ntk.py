"""Model similarity: linear CKA of two models' features, and CKA of their empirical NTK Gram matrices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pytest_transfer import feature_cka, load_dataset, load_model, ntk_similarity
from pytest_transfer.gates import similarity
from pytest_transfer.gates.similarity import ntk_gram, select_ntk_parameters
from tests._helpers import make_blobs_images, tiny_net


@pytest.fixture
def images():
    x, _ = make_blobs_images(n_per_class=4, n_classes=3, size=10)
    return torch.from_numpy(x)


@pytest.fixture
def pair(fresh_context):
    return load_model(tiny_net(seed=0), name="a"), load_model(tiny_net(seed=1), name="b")


def loop_gram(net, images, names, *, trace: bool) -> np.ndarray:
    """Per-sample gradients one sample (and one output) at a time with torch.autograd.grad."""
    params = [p for n, p in net.named_parameters() if n in names]
    rows = []
    for x in images:
        out = net(x[None])[0]
        targets = list(out) if trace else [out.sum()]
        grads = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(t, params, retain_graph=True)])
                 for t in targets]
        rows.append(torch.cat(grads).double())
    j = torch.stack(rows)
    return (j @ j.T).numpy() / out.numel()


def hand_cka(k: np.ndarray, l: np.ndarray) -> float:
    h = np.eye(len(k)) - 1.0 / len(k)
    kc, lc = h @ k @ h, h @ l @ h
    return float(np.sum(kc * lc) / np.sqrt(np.sum(kc * kc) * np.sum(lc * lc)))


@pytest.mark.parametrize("kernel", ["pntk", "trace"])
def test_ntk_gram_equals_a_loop_of_autograd_gradients(pair, images, kernel):
    a, _ = pair
    names = [n for n, _ in a.module.named_parameters()]
    got = ntk_gram(a, images, kernel=kernel, batch_size=5)
    expected = loop_gram(a.module, images, names, trace=kernel == "trace")
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())


def test_ntk_similarity_is_cka_of_the_two_grams(pair, images):
    a, b = pair
    names = [n for n, _ in a.module.named_parameters()]
    expected = hand_cka(loop_gram(a.module, images, names, trace=False), loop_gram(b.module, images, names,
                                                                                   trace=False))
    assert ntk_similarity(a, b, images) == pytest.approx(expected, rel=1e-5)
    assert ntk_similarity(a, a, images) == pytest.approx(1.0)
    assert ntk_similarity(b, a, images) == pytest.approx(ntk_similarity(a, b, images))


def test_ntk_of_the_last_linear_layer_is_the_linear_kernel_of_penultimate_features(pair, images):
    a, b = pair

    def feats(net):
        with torch.no_grad():
            return net[:-1](images).double().numpy()

    fa, fb = feats(a.module), feats(b.module)
    expected = hand_cka(fa @ fa.T, fb @ fb.T)
    for kernel in ("pntk", "trace"):
        assert ntk_similarity(a, b, images, layers=["6"], kernel=kernel) == pytest.approx(expected, rel=1e-5)
    assert ntk_similarity(a, b, images, layers=1) == pytest.approx(expected, rel=1e-5)


def test_parameter_selection_by_layers_and_budget(pair):
    net = pair[0].module
    assert select_ntk_parameters(net) == [n for n, _ in net.named_parameters()]
    assert select_ntk_parameters(net, layers=2) == ["4.weight", "4.bias", "6.weight", "6.bias"]
    assert select_ntk_parameters(net, layers=["0", "6"]) == ["0.weight", "0.bias", "6.weight", "6.bias"]
    assert select_ntk_parameters(net, max_params=60) == ["6.weight", "6.bias"]  # 48 + 3; 4.bias would pass 60
    assert select_ntk_parameters(net, layers=2, max_params=3) == ["6.bias"]


def test_parameter_selection_errors(pair):
    net = pair[0].module
    with pytest.raises(ValueError, match=r"layers: 'head' owns no parameters; the last ones are .*6"):
        select_ntk_parameters(net, layers=["head"])
    with pytest.raises(ValueError, match="layers: expected a positive number"):
        select_ntk_parameters(net, layers=0)
    with pytest.raises(ValueError, match=r"max_params: 2 is smaller than the last parameter tensor '6.bias'"):
        select_ntk_parameters(net, max_params=2)


def test_ntk_input_errors(pair, images, monkeypatch):
    a, b = pair
    with pytest.raises(ValueError, match="kernel: expected one of pntk, trace"):
        ntk_similarity(a, b, images, kernel="full")
    with pytest.raises(ValueError, match=r"images: expected N×C×H×W"):
        ntk_similarity(a, b, images[:, 0])
    with pytest.raises(ValueError, match="images: got 1 image"):
        ntk_similarity(a, b, images[:1])
    monkeypatch.setattr(similarity, "NTK_MAX_BYTES", 1000)
    with pytest.raises(ValueError, match=r"restrict the parameters \(layers=\.\.\., max_params=\.\.\.\)"):
        ntk_similarity(a, b, images)


def test_ntk_similarity_reads_images_from_a_dataset(pair, images):
    a, b = pair
    ds = load_dataset((images.numpy(), np.arange(len(images)) % 3), name="few")
    x = ds.batch(ds.indices("test")[:4])
    assert ntk_similarity(a, b, ds, n_samples=4) == pytest.approx(ntk_similarity(a, b, x))


def test_ntk_similarity_on_a_dataset_takes_n_samples_and_split(pair, images):
    a, b = pair
    ds = load_dataset((images.numpy(), np.arange(len(images)) % 3), name="few")
    x = ds.batch(ds.indices("train")[:5])
    assert ntk_similarity(a, b, ds, n_samples=5, split="train") == pytest.approx(ntk_similarity(a, b, x))


def test_feature_cka_of_two_models_on_the_same_images(pair, fresh_context):
    a, b = pair
    x, y = make_blobs_images(n_per_class=10, n_classes=3, size=10)
    ds = load_dataset((x, y), name="squares")
    idx = ds.indices("test")
    with torch.no_grad():
        fa = a.module[:-1](ds.batch(idx)).double().numpy()
        fb = b.module[:-1](ds.batch(idx)).double().numpy()
    assert feature_cka(a, b, ds) == pytest.approx(hand_cka(fa @ fa.T, fb @ fb.T), rel=1e-5)
    with torch.no_grad():
        hidden = a.module[:2](ds.batch(idx)).mean(dim=(2, 3)).double().numpy()
    assert feature_cka(a, b, ds, node_a="1") == pytest.approx(hand_cka(hidden @ hidden.T, fb @ fb.T), rel=1e-5)
    assert feature_cka(a, a, ds) == pytest.approx(1.0)


def test_tiny_features_are_not_lost_against_the_bias_gradients(pair, images):
    """A randomly initialised deep net can have features of order 1e-9: next to the bias gradients (1) they
    vanish from an uncentred float64 Gram, so the NTK is centred from the gradients."""
    a, b = pair
    with torch.no_grad():
        a.module[4].weight.mul_(1e-9)
        a.module[4].bias.mul_(1e-9)

    def feats(net):
        with torch.no_grad():
            return net[:-1](images).double().numpy()

    fa, fb = feats(a.module), feats(b.module)
    assert np.abs(fa).max() < 1e-7
    expected = hand_cka(fa @ fa.T, fb @ fb.T)
    assert ntk_similarity(a, b, images, layers=["6"]) == pytest.approx(expected, rel=1e-4)


def test_a_selection_without_sample_dependence_is_refused(pair, images):
    a, b = pair
    with pytest.raises(ValueError, match=r"model_a: every image gets the same gradient .* of 'a'"):
        ntk_similarity(a, b, images, max_params=3)  # only the last bias: its gradient is 1 for every image

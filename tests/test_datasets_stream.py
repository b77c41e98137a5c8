"""Streamed datasets give the numbers in-memory data gives, with 0 or 2 loader workers; the disk cache works."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pytest_transfer import assert_robust_under_noise, assert_transfer_accuracy_above, evaluate, load_dataset
from pytest_transfer.robustness.perturbations import gaussian_noise


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """150 RGB 12×12 PNGs in 3 classes (a bright square at a class-specific place): more than two chunks."""
    root = tmp_path_factory.mktemp("stream") / "imgs"
    rng = np.random.default_rng(0)
    images, labels = [], []
    for c, name in enumerate(("a", "b", "c")):
        (root / name).mkdir(parents=True)
        for i in range(50):
            img = (rng.random((12, 12, 3)) * 80).astype(np.uint8)
            img[3 * c:3 * c + 4, 3 * c:3 * c + 4] += 150
            Image.fromarray(img).save(root / name / f"{i:03d}.png")
            images.append(img.transpose(2, 0, 1))
            labels.append(c)
    return root, np.stack(images), np.array(labels)


def _context(num_workers, cache_dir=None):
    from pytest_transfer.context import Context
    from pytest_transfer.settings import resolve

    cli = {"device": "cpu", "num_workers": num_workers}
    cli.update({"cache_dir": str(cache_dir)} if cache_dir else {"no_cache": True})
    return Context(resolve(cli, rootdir=".", pyproject=None, environ={}))


@pytest.fixture
def use_context():
    from pytest_transfer.context import set_current_context

    previous = []

    def use(ctx):
        previous.append(set_current_context(ctx))
        return ctx

    yield use
    if previous:
        set_current_context(previous[0])


def _model():
    from pytest_transfer import load_model
    from tests._helpers import tiny_net

    return load_model(tiny_net(n_classes=3, channels=3), name="tiny-rgb")


def _measure(ds):
    model = _model()
    noisy = evaluate(model, ds, perturbation=gaussian_noise(0.2, seed=3))
    acc = assert_transfer_accuracy_above(model, ds, 0.0)
    drop = assert_robust_under_noise(model, ds, sigma=0.2, max_drop=1.0)
    return noisy.logits, acc.value, drop.value


@pytest.mark.parametrize("workers", [0, 2])
def test_the_same_gates_give_the_same_numbers_in_memory_and_streamed(folder, use_context, workers):
    root, images, labels = folder
    use_context(_context(workers))
    streamed = load_dataset(f"imagefolder:{root}")
    in_memory = load_dataset((images, labels), name="decoded by hand")
    assert streamed.streamed and not in_memory.streamed
    assert np.array_equal(streamed.indices("test"), in_memory.indices("test"))
    s_logits, s_acc, s_drop = _measure(streamed)
    m_logits, m_acc, m_drop = _measure(in_memory)
    assert np.array_equal(s_logits, m_logits)
    assert (s_acc, s_drop) == (m_acc, m_drop)


def test_worker_count_does_not_change_a_perturbed_pass(folder, use_context):
    root, _, _ = folder
    out = []
    for workers in (0, 2):
        use_context(_context(workers))
        out.append(evaluate(_model(), load_dataset(f"imagefolder:{root}"), split="all",
                            perturbation=gaussian_noise(0.1, seed=1)).logits)
    assert np.array_equal(out[0], out[1])


def test_streamed_chunks_hold_the_chunk_and_the_order(folder):
    from pytest_transfer.datasets.stream import iter_raw_chunks
    from pytest_transfer.engine import CHUNK

    root, images, _ = folder
    ds = load_dataset(f"imagefolder:{root}")
    order = np.random.default_rng(1).permutation(len(ds))
    chunks = list(iter_raw_chunks(ds, order, chunk=CHUNK, num_workers=2))
    assert [len(c) for c in chunks] == [64, 64, 22] and chunks[0].dtype == torch.uint8
    assert np.array_equal(torch.cat(chunks).numpy(), images[order])


def test_disk_cache_hits_for_an_unchanged_folder_and_misses_after_an_edit(tmp_path, use_context):
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "imgs" / c / f"{i}.png")
    spec = f"imagefolder:{tmp_path / 'imgs'}"
    runs = []
    for edit in (False, False, True):
        if edit:
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "imgs" / "a" / "0.png")
        ctx = use_context(_context(0, cache_dir=tmp_path / "cache"))
        evaluate(_model(), load_dataset(spec), split="all")
        runs.append(ctx.cache_hits)
    assert runs == [0, 1, 0]


def test_rgb_folder_feeds_a_one_channel_model_by_luma(folder, use_context):
    from pytest_transfer import load_model
    from pytest_transfer.datasets import adapt_channels
    from tests._helpers import tiny_net

    root, images, _ = folder
    use_context(_context(0))
    model = load_model(tiny_net(n_classes=3, channels=1), name="grey")
    ds = load_dataset(f"imagefolder:{root}")
    ev = evaluate(model, ds, split="all", cache=False)
    x = torch.from_numpy(images).float() / 255
    with torch.inference_mode():
        ref = model.module(adapt_channels(x, 1))
    assert ds.channels == 3 and np.allclose(ev.logits, ref.numpy(), atol=1e-6)


def test_num_workers_setting_is_validated():
    import pytest as _pytest

    from pytest_transfer.datasets.stream import default_num_workers, resolve_num_workers
    from pytest_transfer.settings import resolve

    assert resolve({"num_workers": "3"}, rootdir=".", pyproject=None, environ={}).num_workers == 3
    assert resolve_num_workers("auto") == default_num_workers()
    assert default_num_workers({"PYTEST_XDIST_WORKER_COUNT": "1000"}) == 0
    with _pytest.raises(_pytest.UsageError, match="num_workers: expected 'auto' or an integer >= 0"):
        resolve({"num_workers": "-1"}, rootdir=".", pyproject=None, environ={})


def test_an_attack_gate_gives_the_same_number_streamed(folder, use_context):
    from pytest_transfer import assert_robust_under_attack

    root, images, labels = folder
    use_context(_context(0))
    got = [assert_robust_under_attack(_model(), ds, attack="pgd", eps=0.03, steps=2, min_accuracy=0.0).value
           for ds in (load_dataset(f"imagefolder:{root}"), load_dataset((images, labels), name="decoded by hand"))]
    assert got[0] == got[1]

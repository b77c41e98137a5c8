"""The engine: one pass per pair (taps included), a memo that is never stale, the disk cache's key, OOM halving,
autocast, progress. Passes are counted, never timed; outputs are checked against a plain loop over the module."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from torch import nn

from pytest_transfer import engine, evaluate, load_dataset, load_model
from pytest_transfer.context import Context
from pytest_transfer.engine import cache_key, run_pass
from pytest_transfer.models import Preprocess
from pytest_transfer.robustness.perturbations import gaussian_noise
from pytest_transfer.settings import resolve
from tests import _helpers
from tests._helpers import make_blobs_images, tiny_net


def context_with_cache(tmp_path, **cli):
    return Context(resolve({"device": "cpu", "cache_dir": str(tmp_path / "cache"), **cli}, rootdir=tmp_path,
                           pyproject=None, environ={}))


def reference(net, dataset, split="test", preprocess=None):
    """Logits and penultimate features by hand: preprocess, the layers one by one, no engine."""
    x = dataset.batch(dataset.indices(split))
    if preprocess is not None:
        x = preprocess(x)
    with torch.no_grad():
        features = net[:-1](x)
        return net[-1](features).numpy(), features.numpy()


class CountCalls:
    """Counts the calls of a module's forward and the batch sizes it saw."""

    def __init__(self, module):
        self.sizes = []
        module.register_forward_pre_hook(lambda _m, args: self.sizes.append(len(args[0])))


# --- one pass, taps, memo ---------------------------------------------------

def test_outputs_equal_a_plain_loop_over_the_module(fresh_context, blobs):
    net = tiny_net()
    ev = evaluate(load_model(net, name="tiny"), blobs, batch_size=16)
    logits, features = reference(net, blobs)
    np.testing.assert_allclose(ev.logits, logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ev.features, features, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(ev.labels, blobs.labels_of("test"))
    np.testing.assert_allclose(ev.probs.sum(axis=1), 1.0)


def test_every_request_on_a_pair_shares_one_pass(fresh_context, blobs):
    net = tiny_net()
    calls = CountCalls(net)
    model = load_model(net, name="tiny")
    first = evaluate(model, blobs, split="test", batch_size=8)
    assert evaluate(model, blobs, split="test") is first
    assert evaluate(model, blobs, split="test", batch_size=3) is first  # the batch size is not part of the key
    assert fresh_context.forward_passes == 1
    assert sum(calls.sizes) == len(blobs.indices("test"))  # every test image went through the module once
    evaluate(model, blobs, split="train")
    evaluate(model, blobs, split="test", perturbation=gaussian_noise(0.1))
    assert fresh_context.forward_passes == 3  # another split, another perturbation: one pass each


def test_all_requested_taps_come_from_one_pass_and_match_the_submodules(fresh_context, blobs):
    net = tiny_net()
    calls = CountCalls(net)
    model = load_model(net, name="tiny")
    ev = evaluate(model, blobs, taps=["0", "3", "4:input"], batch_size=64)
    assert fresh_context.forward_passes == 1 and len(calls.sizes) == 1  # 30 test images, one batch
    x = blobs.batch(blobs.indices("test"))
    with torch.no_grad():
        conv = net[0](x)
        flat = net[:4](x)
    np.testing.assert_allclose(ev.taps["0"], conv.mean(dim=(2, 3)).numpy(), atol=1e-6)  # 4-d: pooled
    np.testing.assert_allclose(ev.taps["3"], flat.numpy(), atol=1e-6)
    np.testing.assert_allclose(ev.taps["4:input"], flat.numpy(), atol=1e-6)
    assert evaluate(model, blobs, taps=["3"]).taps.keys() >= {"3"}  # a subset of the taps: the same pass
    assert fresh_context.forward_passes == 1


def test_new_taps_run_one_pass_that_keeps_the_earlier_ones(fresh_context, blobs):
    model = load_model(tiny_net(), name="tiny")
    evaluate(model, blobs, taps=["0"])
    evaluate(model, blobs, taps=["3"])
    assert fresh_context.forward_passes == 2
    ev = evaluate(model, blobs, taps=["0", "3"])  # both come from the second pass
    assert fresh_context.forward_passes == 2 and {"0", "3"} <= set(ev.taps)


def test_unknown_tap_fails_before_any_pass(fresh_context, blobs):
    model = load_model(tiny_net(), name="tiny")
    with pytest.raises(ValueError, match="'nope' is not a submodule"):
        evaluate(model, blobs, taps=["nope"])
    assert fresh_context.forward_passes == 0


def test_bad_batch_size(fresh_context, blobs, tiny_model):
    with pytest.raises(ValueError, match="batch_size: expected an integer >= 1, got 0"):
        evaluate(tiny_model, blobs, batch_size=0)


def test_weights_changed_in_place_are_never_served_from_the_memo(fresh_context, blobs):
    net = tiny_net()
    model = load_model(net, name="tiny")
    before = evaluate(model, blobs).logits
    with torch.no_grad():
        net[-1].bias.add_(1.0)  # bumps the tensor's version counter
    after = evaluate(model, blobs)
    assert fresh_context.forward_passes == 2
    np.testing.assert_allclose(after.logits, before + 1.0, atol=1e-5)
    net[-1].bias.data.sub_(1.0)  # .data bypasses the version counter: the sampled-weights guard sees it
    again = evaluate(model, blobs)
    assert fresh_context.forward_passes == 3
    np.testing.assert_allclose(again.logits, reference(net, blobs)[0], atol=1e-5)


def test_a_new_preprocess_or_feature_node_is_a_new_pass(fresh_context, blobs):
    net = tiny_net()
    model = load_model(net, name="tiny")
    evaluate(model, blobs)
    model.preprocess = Preprocess(size=12, channels=1)
    ev = evaluate(model, blobs)
    assert fresh_context.forward_passes == 2
    np.testing.assert_allclose(ev.logits, reference(net, blobs, preprocess=model.preprocess)[0], atol=1e-5)
    model.feature_node = "3"
    assert evaluate(model, blobs).features.shape == (len(ev), 32)
    assert fresh_context.forward_passes == 3


def test_an_image_changed_in_place_is_a_new_pass(fresh_context, blobs, tiny_model):
    first = evaluate(tiny_model, blobs).logits.copy()
    blobs.images[blobs.indices("test")[0]] = 0.0
    second = evaluate(tiny_model, blobs)
    assert fresh_context.forward_passes == 2
    assert not np.allclose(first[0], second.logits[0]) and np.allclose(first[1:], second.logits[1:], atol=1e-6)


# --- the disk cache --------------------------------------------------------------

def test_a_warm_rerun_runs_no_pass_and_returns_the_same_arrays(tmp_path, blobs):
    first_ctx, second_ctx = context_with_cache(tmp_path), context_with_cache(tmp_path)
    a = evaluate(load_model(tiny_net(), name="tiny"), blobs, taps=["3"], context=first_ctx)
    fresh_model = load_model(tiny_net(), name="tiny")  # a new process would build new objects
    fresh_data = load_dataset(make_blobs_images(), name="blobs")
    b = evaluate(fresh_model, fresh_data, taps=["3"], context=second_ctx)
    assert (first_ctx.forward_passes, second_ctx.forward_passes, second_ctx.cache_hits) == (1, 0, 1)
    assert b.from_cache and not a.from_cache
    for name in ("logits", "features"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(a.taps["3"], b.taps["3"])


@pytest.mark.parametrize("change", ["weight", "preprocess", "image", "split seed", "noise seed", "taps"])
def test_a_change_of_what_the_outputs_depend_on_misses_the_cache(tmp_path, change):
    def run(ctx, net=None, preprocess=None, images=None, seed=0, noise_seed=0, taps=()):
        x, y = make_blobs_images()
        if images is not None:
            x = images
        model = load_model(net or tiny_net(), name="tiny", preprocess=preprocess)
        data = load_dataset((x, y), name="blobs", seed=seed)
        return evaluate(model, data, perturbation=gaussian_noise(0.1, seed=noise_seed), taps=taps, context=ctx)

    run(context_with_cache(tmp_path))
    net = tiny_net()
    x, _ = make_blobs_images()
    kwargs = {
        "weight": {"net": net},
        "preprocess": {"preprocess": Preprocess(size=10, channels=1)},
        "image": {"images": x},
        "split seed": {"seed": 1},
        "noise seed": {"noise_seed": 1},
        "taps": {"taps": ["3"]},
    }[change]
    if change == "weight":
        with torch.no_grad():
            net[0].weight[0, 0, 0, 0] += 1e-3  # one weight, a little
    if change == "image":
        x[5, 0, 0, 0] = 1.0 - x[5, 0, 0, 0]  # one pixel of one image
    second = context_with_cache(tmp_path)
    run(second, **kwargs)
    assert (second.forward_passes, second.cache_hits) == (1, 0)
    third = context_with_cache(tmp_path)
    run(third)  # and the original entry is still there
    assert (third.forward_passes, third.cache_hits) == (0, 1)


def test_the_cache_key_covers_precision_device_code_and_versions(fresh_context, blobs, tiny_model):
    base = cache_key(tiny_model, blobs, "test", None, ["penultimate"], precision="float32", device="cpu")
    assert base == cache_key(tiny_model, blobs, "test", None, ["penultimate"], precision="float32", device="cpu")
    assert {"engine", "pytest_transfer", "torch", "code", "model", "data", "split", "perturbation", "seed",
            "taps", "precision", "device"} <= set(base)
    assert base != cache_key(tiny_model, blobs, "test", None, ["penultimate"], precision="autocast:float16",
                             device="cpu")
    assert base["device"] == "cpu" and base["torch"] == torch.__version__
    assert base != cache_key(tiny_model, blobs, "train", None, ["penultimate"], precision="float32", device="cpu")

    class Other(nn.Sequential):  # the same weights behind another forward
        pass

    other = load_model(Other(*tiny_net()), name="tiny")
    assert cache_key(other, blobs, "test", None, ["penultimate"], precision="float32", device="cpu")["code"] \
        != base["code"]


def test_autocast_on_is_its_own_cache_entry(tmp_path, blobs):
    ctx_off = context_with_cache(tmp_path, autocast="off")
    ctx_on = context_with_cache(tmp_path, autocast="on")
    net = tiny_net()
    off = evaluate(load_model(net, name="tiny"), blobs, context=ctx_off)
    on = evaluate(load_model(net, name="tiny"), blobs, context=ctx_on)
    assert (ctx_off.forward_passes, ctx_on.forward_passes) == (1, 1)
    np.testing.assert_allclose(on.logits, off.logits, atol=0.05)  # bfloat16 on the CPU: close, not equal
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2


def test_no_cache_writes_nothing(tmp_path, blobs, tiny_model):
    ctx = context_with_cache(tmp_path, no_cache=True)
    evaluate(tiny_model, blobs, context=ctx)
    evaluate(tiny_model, blobs, split="train", context=ctx, cache=True)
    assert not (tmp_path / "cache").exists() and ctx.forward_passes == 2


def test_a_damaged_entry_is_recomputed_with_a_warning(tmp_path, blobs, tiny_model):
    from pytest_transfer.cache import CacheWarning

    first = evaluate(tiny_model, blobs, context=context_with_cache(tmp_path))
    (entry,) = (tmp_path / "cache").glob("*.npz")
    entry.write_bytes(entry.read_bytes()[:200])  # a truncated file, as a killed copy would leave
    ctx = context_with_cache(tmp_path)
    with pytest.warns(CacheWarning, match="is damaged"):
        again = evaluate(tiny_model, blobs, context=ctx)
    assert ctx.forward_passes == 1
    np.testing.assert_array_equal(again.logits, first.logits)
    ctx = context_with_cache(tmp_path)
    evaluate(tiny_model, blobs, context=ctx)  # the rewritten entry is whole again
    assert (ctx.forward_passes, ctx.cache_hits) == (0, 1)


# --- batches: out of memory, chunks ------------------------------------------------

class OutOfMemoryAbove(nn.Module):
    """Raises the error a GPU raises when a batch is larger than ``limit`` (simulated on the CPU)."""

    def __init__(self, limit, error=torch.OutOfMemoryError):
        super().__init__()
        self.net, self.limit, self.error, self.sizes = tiny_net(), limit, error, []

    def forward(self, x):
        if len(x) > self.limit:
            raise self.error(f"CUDA out of memory. Tried to allocate 2.00 GiB (batch of {len(x)})")
        self.sizes.append(len(x))
        return self.net(x)


@pytest.mark.parametrize("error", [torch.OutOfMemoryError, torch.cuda.OutOfMemoryError])
def test_a_batch_that_runs_out_of_memory_is_halved_and_retried(fresh_context, blobs, error):
    module = OutOfMemoryAbove(limit=10, error=error)
    messages = []
    fresh_context.progress = messages.append
    ev = evaluate(load_model(module, name="big"), blobs, split="all", batch_size=32)
    assert module.sizes == [8] * 15  # 32 → 16 → 8, then the rest of the 120 images at 8
    np.testing.assert_allclose(ev.logits, reference(module.net, blobs, split="all")[0], atol=1e-5)
    assert fresh_context.forward_passes == 1
    assert any("out of memory on cpu at batch size 32; retrying with 16" in str(m) for m in messages)
    assert engine.batch_limit(module, torch.device("cpu")) == 8
    module.sizes.clear()
    evaluate(load_model(module, name="big"), blobs, split="train", batch_size=32)
    assert module.sizes and max(module.sizes) == 8  # the next pass starts at the size that fitted


def test_out_of_memory_is_recognised_by_type_not_by_message(fresh_context, blobs):
    module = OutOfMemoryAbove(limit=10, error=RuntimeError)  # says "CUDA out of memory", but is no OOM error
    with pytest.raises(ValueError, match=r"failed on images of 'blobs'.*CUDA out of memory") as info:
        evaluate(load_model(module, name="big"), blobs, split="all", batch_size=32)
    assert type(info.value.__cause__) is RuntimeError and module.sizes == []


def test_out_of_memory_with_one_image_is_raised(fresh_context, blobs):
    with pytest.raises(torch.OutOfMemoryError):
        evaluate(load_model(OutOfMemoryAbove(limit=0), name="huge"), blobs, batch_size=4)


def test_results_do_not_depend_on_batch_size_or_chunking(fresh_context, blobs):
    net = tiny_net()
    noise = gaussian_noise(0.2, seed=3)
    outs = []
    for size in (3, 7, 64, 1000):  # 64 = the noise chunk; 7 and 3 cut chunks, 1000 takes them all at once
        model = load_model(net, name="tiny")
        outs.append(run_pass(model, blobs, np.arange(len(blobs)), nodes=["penultimate"], perturbation=noise,
                             batch_size=size, device="cpu"))
    for other in outs[1:]:
        np.testing.assert_allclose(other["logits"], outs[0]["logits"], atol=1e-5)


def test_channels_last_does_not_change_the_outputs(fresh_context, blobs):
    idx = blobs.indices("test")
    plain = run_pass(load_model(tiny_net(), name="t"), blobs, idx, nodes=["penultimate"], perturbation=None,
                     batch_size=8, device="cpu", channels_last=False)
    fast = run_pass(load_model(tiny_net(), name="t"), blobs, idx, nodes=["penultimate"], perturbation=None,
                    batch_size=8, device="cpu", channels_last=True)
    np.testing.assert_allclose(fast["logits"], plain["logits"], atol=1e-5)


# --- autocast ----------------------------------------------------------------------

def test_autocast_modes_per_device():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert engine.autocast_dtype("auto", cpu) is None and engine.autocast_dtype("off", cuda) is None
    assert engine.autocast_dtype("auto", cuda) == torch.float16
    assert engine.autocast_dtype("on", cpu) == torch.bfloat16
    with pytest.raises(ValueError, match="autocast: expected one of auto, on, off, got 'fp8'"):
        engine.autocast_dtype("fp8", cpu)


class OverflowsInHalf(nn.Module):
    """Infinite logits when run in reduced precision, as an fp16 overflow would give."""

    def __init__(self):
        super().__init__()
        self.net = tiny_net()

    def forward(self, x):
        out = self.net(x)
        return out * float("inf") if out.dtype != torch.float32 else out


def test_auto_autocast_falls_back_to_float32_for_a_model_that_overflows(fresh_context, blobs, monkeypatch):
    original = engine.autocast_dtype
    monkeypatch.setattr(engine.passes, "autocast_dtype",  # "auto" behaves here as on a GPU
                        lambda mode, device: torch.bfloat16 if mode == "auto" else original(mode, device))
    module = OverflowsInHalf()
    idx = blobs.indices("test")
    out = run_pass(load_model(module, name="o"), blobs, idx, nodes=["penultimate"], perturbation=None,
                   batch_size=8, device="cpu", autocast="auto")
    np.testing.assert_allclose(out["logits"], reference(module.net, blobs)[0], atol=1e-5)
    with pytest.raises(ValueError, match=r"NaN/Inf outputs .*--transfer-autocast=off"):
        run_pass(load_model(module, name="o"), blobs, idx, nodes=["penultimate"], perturbation=None,
                 batch_size=8, device="cpu", autocast="on")


def test_keys_name_the_precision_the_pass_runs_in(fresh_context, blobs):
    """A module kept in float16 runs in float16 whatever --transfer-autocast says (autocast is for float32
    modules): its keys say float16 and one pass serves every mode. (They said ``autocast:bfloat16`` under
    ``on`` and ``float32`` under ``off``: two passes of the same computation, both mislabelled.)"""
    import dataclasses

    half = load_model(tiny_net().to(torch.float16), name="half")
    full = load_model(tiny_net(), name="full")
    for mode in ("on", "off"):
        fresh_context.settings = dataclasses.replace(fresh_context.settings, autocast=mode)
        ev = evaluate(half, blobs, context=fresh_context)
        assert engine.pass_autocast(half.module, mode, "cpu") == (None, torch.float16)
    assert fresh_context.forward_passes == 1 and ev.logits.dtype == np.float32
    assert engine.precision_label(*engine.pass_autocast(half.module, "on", "cpu")) == "float16"
    assert engine.precision_label(*engine.pass_autocast(full.module, "on", "cpu")) == "autocast:bfloat16"
    assert engine.precision_label(*engine.pass_autocast(full.module, "off", "cpu")) == "float32"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_pass_matches_the_cpu_pass(fresh_context, blobs):  # pragma: no cover - no GPU here
    idx = blobs.indices("test")
    cpu = run_pass(load_model(tiny_net(), name="t"), blobs, idx, nodes=["penultimate"], perturbation=None,
                   batch_size=8, device="cpu")
    gpu = run_pass(load_model(tiny_net(), name="t"), blobs, idx, nodes=["penultimate"], perturbation=None,
                   batch_size=8, device="cuda", autocast="off")
    np.testing.assert_allclose(gpu["logits"], cpu["logits"], atol=1e-3)


# --- progress ---------------------------------------------------------------------

def test_a_long_pass_reports_progress(fresh_context, blobs, monkeypatch):
    monkeypatch.setattr(engine.passes, "PROGRESS_EVERY", 0.0)
    messages = []
    run_pass(load_model(tiny_net(), name="tiny"), blobs, blobs.indices("all"), nodes=["penultimate"],
             perturbation=gaussian_noise(0.1), batch_size=50, device="cpu", progress=messages.append)
    assert [m.kind for m in messages] == ["start", "advance", "advance", "advance", "end"]
    assert [m.done for m in messages] == [0, 50, 100, 120, 120] and {m.total for m in messages} == {120}
    assert str(messages[0]) == "pytest-transfer: tiny on blobs (gaussian_noise(sigma=0.1)): 120 images ..."
    assert messages[1].status().startswith("tiny on blobs (gaussian_noise(sigma=0.1)): 50/120 images, ")
    assert str(messages[-1]).startswith("pytest-transfer: tiny on blobs (gaussian_noise(sigma=0.1)): 120 images in ")


# self-contained (the helpers' source is copied in): an inner xdist worker started by the ``pytest`` script
# has no checkout on its sys.path, so it could not import ``tests._helpers``
PROGRESS_PROJECT = "\n\n".join([
    "import pytest\nfrom pytest_transfer import engine, evaluate",
    inspect.getsource(_helpers.make_blobs_images),
    inspect.getsource(_helpers.tiny_net),
    """
@pytest.fixture(autouse=True)
def every_batch(monkeypatch):
    monkeypatch.setattr(engine.passes, "PROGRESS_EVERY", 0.0)

def pytest_transfer_register_models(registry):
    registry.register("tiny", tiny_net)

def pytest_transfer_register_datasets(registry):
    registry.register("blobs", make_blobs_images)
""",
])


@pytest.mark.parametrize("quiet", [False, True])
def test_progress_shows_in_pytest_unless_quiet(pytester, quiet):
    pytester.makeconftest(PROGRESS_PROJECT)
    pytester.makepyfile(test_p="""
        from pytest_transfer import evaluate
        def test_pass():
            evaluate("tiny", "blobs", split="all", batch_size=40)
    """)
    args = ["-p", "no:cacheprovider", "--transfer-no-cache", "--transfer-device=cpu"]
    result = pytester.runpytest(*args, *(["-q"] if quiet else []))
    result.assert_outcomes(passed=1)
    lines = [line for line in result.outlines if "pytest-transfer: tiny on blobs" in line]
    # not a terminal: one line when the pass starts, one when it ends
    assert (lines == []) if quiet else lines == ["pytest-transfer: tiny on blobs (all split): 120 images ...",
                                                 lines[1]]
    assert quiet or lines[1].startswith("pytest-transfer: tiny on blobs (all split): 120 images in ")

"""The corruption sweep and the corruption, mCE and attack gates, on small nets and small images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from pytest_transfer import (
    assert_mce_below,
    assert_robust_under_attack,
    assert_robust_under_corruption,
    corruption_sweep,
    evaluate,
    load_dataset,
    load_model,
)
from pytest_transfer.context import Context, set_current_context
from pytest_transfer.robustness import ALEXNET_ERRORS, CORRUPTIONS, fgsm, mce, relative_mce
from pytest_transfer.robustness.perturbations import corruption as engine_corruption
from pytest_transfer.robustness.sweep import evaluate_many
from pytest_transfer.settings import resolve
from tests._helpers import make_blobs_images, predict, tiny_net


def _context(tmp_path, **options):
    return Context(resolve({"no_cache": True, "device": "cpu", "corruption_table": "imagenet-c", **options},
                           rootdir=tmp_path, pyproject=None, environ={}))


def corruption(name, severity, *, seed=0):
    """The engine's corruption with the table the ``data`` fixture sets (ImageNet-C's)."""
    return engine_corruption(name, severity, seed=seed, table="imagenet-c")


def _train_mlp(x, y, idx, *, seed=0, steps=60):
    """An MLP trained on ``idx`` (full-batch Adam): 100 % test accuracy on 12×12 blobs after 60 steps."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(x[0].size, 32), nn.ReLU(), nn.Linear(32, 3))
    xt, yt = torch.from_numpy(x[idx]), torch.from_numpy(y[idx])
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def blobs12():
    """300 images of 12×12 in 3 separable classes and two MLPs trained on the train split (strong and weak)."""
    x, y = make_blobs_images(n_per_class=100, seed=2, size=12)
    train = load_dataset((x, y), name="blobs").indices("train")
    return x, y, _train_mlp(x, y, train), _train_mlp(x, y, train, seed=5, steps=12)


@pytest.fixture
def data(fresh_context, blobs12):
    """The test split has 75 images: one full chunk of 64 and a partial one.

    The gates here were sized with ImageNet-C's parameters, set through the
    ``corruption_table`` setting: at 12 px ``auto`` would pick CIFAR-10-C's milder table.
    """
    import dataclasses

    fresh_context.settings = dataclasses.replace(fresh_context.settings, corruption_table="imagenet-c")
    x, y, _, _ = blobs12
    return load_dataset((x, y), name="blobs")


@pytest.fixture
def head_model(fresh_context, blobs12):
    """A trained model whose own 3-way head predicts the classes (method='direct': no probe pass)."""
    return load_model(blobs12[2], name="tiny")


@pytest.fixture
def weak_model(fresh_context, blobs12):
    return load_model(blobs12[3], name="reference")


def _direct_correct(model, dataset, perturbation, ctx):
    """Correctness per test sample, computed from a plain evaluate() in another session."""
    ev = evaluate(model, dataset, perturbation=perturbation, context=ctx)
    return ev.logits.argmax(axis=1) == ev.labels


# --- the sweep ---------------------------------------------------------------------

def test_sweep_cells_equal_evaluate_with_the_same_corruption(tmp_path, data, head_model, fresh_context):
    names, levels = ("gaussian_noise", "zoom_blur", "contrast", "snow"), (1, 5)
    res = corruption_sweep(head_model, data, names, levels, method="direct", seed=3, batch_size=48)
    other = _context(tmp_path)  # a separate session: nothing shared with the sweep
    for name in names:
        for s in levels:
            p = corruption(name, s, seed=3)
            ref = evaluate(head_model, data, perturbation=p, context=other)
            mine = evaluate(head_model, data, perturbation=p, context=fresh_context)
            np.testing.assert_allclose(mine.logits, ref.logits, rtol=0, atol=1e-5)
            assert np.array_equal(mine.logits.argmax(1), ref.logits.argmax(1))
            assert res.accuracy[name][s] == pytest.approx(np.mean(ref.logits.argmax(1) == ref.labels))
    clean = evaluate(head_model, data, context=other)
    assert res.clean_accuracy == pytest.approx(np.mean(clean.logits.argmax(1) == clean.labels))
    assert fresh_context.forward_passes == 1  # the sweep's one pass; the evaluate calls above hit its memo


def test_sweep_variants_are_the_engines_perturbed_chunks(data):
    """The images fed to the model are exactly what iter_chunks makes for each perturbation."""
    from pytest_transfer.engine import iter_chunks, iter_variants
    from pytest_transfer.robustness.sweep import corruption_variants

    idx = data.indices("test")
    cells = {corruption(n, s, seed=5): (n, s) for n, s in
             [("gaussian_noise", 2), ("zoom_blur", 1), ("zoom_blur", 4), ("frost", 3)]}
    variants = [None, *cells]
    stream = list(iter_variants(data, idx, torch.device("cpu"), variants, corruption_variants(cells, "imagenet-c")))
    assert len(stream) == 2 * len(variants)  # 2 chunks, every variant of each
    for v, variant in enumerate(variants):
        expected = list(iter_chunks(data, idx, torch.device("cpu"), variant))
        got = [stream[c * len(variants) + v] for c in range(2)]
        for a, b in zip(got, expected, strict=True):
            assert torch.equal(a, b)


def test_sweep_loads_each_chunk_once(monkeypatch, data, head_model, fresh_context):
    calls = []
    original = type(data).raw_batch  # every chunk of a pass is read through raw_batch
    monkeypatch.setattr(type(data), "raw_batch", lambda self, idx: calls.append(len(idx)) or original(self, idx))
    corruption_sweep(head_model, data, ["gaussian_noise", "fog", "pixelate"], "all", method="direct")
    n_test = len(data.indices("test"))
    assert calls == [64, n_test - 64]  # one load of each chunk for 1 + 15 variants
    assert fresh_context.forward_passes == 1
    calls.clear()
    for s in (1, 2):  # evaluate per cell loads the data again for each
        evaluate(head_model, data, perturbation=corruption("shot_noise", s))
    assert len(calls) == 4


def test_sweep_fills_the_memo_so_gates_cost_no_pass(data, head_model, fresh_context):
    corruption_sweep(head_model, data, "all", 3, method="direct")
    before = fresh_context.forward_passes
    r1 = assert_robust_under_corruption(head_model, data, "fog", 3, max_drop=1.0, method="direct")
    r2 = assert_robust_under_corruption(head_model, data, "noise", 3, max_drop=1.0, method="direct")
    r3 = assert_robust_under_corruption(head_model, data, "all", 3, max_drop=1.0, method="direct")
    assert fresh_context.forward_passes == before == 1
    assert r1.passed and r2.passed and r3.passed


def test_sweep_reuses_and_fills_the_disk_cache(tmp_path, data, head_model):
    opts = {"no_cache": False, "cache_dir": str(tmp_path / "cache")}
    first = _context(tmp_path, **opts)
    res = corruption_sweep(head_model, data, "blur", [2, 4], method="direct", context=first)
    assert first.forward_passes == 1 and first.cache_hits == 0
    # evaluate() in a new session reads the sweep's entry from disk
    second = _context(tmp_path, **opts)
    ev = evaluate(head_model, data, perturbation=corruption("glass_blur", 4, seed=0), context=second)
    assert second.forward_passes == 0 and second.cache_hits == 1 and ev.from_cache
    assert np.mean(ev.logits.argmax(1) == ev.labels) == pytest.approx(res.accuracy["glass_blur"][4])
    # a sweep in a third session computes only the cells that are not on disk (one pass for them)
    third = _context(tmp_path, **opts)
    again = corruption_sweep(head_model, data, ["defocus_blur", "fog"], [2, 4], method="direct", context=third)
    assert third.forward_passes == 1 and third.cache_hits == 3  # clean + defocus 2, 4 from disk; fog computed
    assert again.accuracy["defocus_blur"] == res.accuracy["defocus_blur"]


@pytest.mark.parametrize("how", ["sweep", "evaluate"])
def test_a_read_only_cache_warns_and_the_results_are_used(tmp_path, data, head_model, monkeypatch, how):
    """Sweep and evaluate share one cache path: a cache that cannot be locked or written only warns."""
    import filelock

    from pytest_transfer import cache as cache_module
    from pytest_transfer.cache import CacheWarning

    def read_only(*_args, **_kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(filelock.FileLock, "acquire", read_only)
    monkeypatch.setattr(cache_module, "atomic_write_bytes", read_only)
    ctx = _context(tmp_path, no_cache=False, cache_dir=str(tmp_path / "cache"))
    with pytest.warns(CacheWarning) as warned:
        if how == "sweep":
            res = corruption_sweep(head_model, data, "fog", [2, 4], method="direct", context=ctx)
            got = res.accuracy["fog"][4]
        else:
            ev = evaluate(head_model, data, perturbation=corruption("fog", 4), context=ctx)
            got = float(np.mean(ev.logits.argmax(1) == ev.labels))
    texts = [str(w.message) for w in warned]
    assert any("cannot lock the cache directory" in t for t in texts)
    assert any("could not write to the cache directory" in t and "Read-only file system" in t for t in texts)
    ref = evaluate(head_model, data, perturbation=corruption("fog", 4), context=_context(tmp_path))
    assert got == pytest.approx(np.mean(ref.logits.argmax(1) == ref.labels))
    assert ctx.forward_passes == 1 and not list((tmp_path / "cache").glob("*.npz"))


def test_evaluate_many_equals_evaluate(tmp_path, data, head_model, fresh_context):
    from pytest_transfer.robustness.perturbations import gaussian_noise

    perts = [None, gaussian_noise(0.2, seed=1), corruption("fog", 2), gaussian_noise(0.2, seed=1)]
    evs = evaluate_many(head_model, data, perts, context=fresh_context)
    assert evs[1] is evs[3] and fresh_context.forward_passes == 1
    other = _context(tmp_path)
    for p, ev in zip(perts, evs, strict=True):
        np.testing.assert_allclose(ev.logits, evaluate(head_model, data, perturbation=p, context=other).logits,
                                   atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="expected Perturbation objects or None"):
        evaluate_many(head_model, data, ["fog"], context=fresh_context)


def test_sweep_result_tables_rows_and_errors(data, head_model):
    res = corruption_sweep(head_model, data, "noise", [1, 3], method="direct")
    rows = res.to_rows()
    assert rows[0]["corruption"] == "clean" and rows[0]["severity"] == 0
    assert [(r["corruption"], r["severity"]) for r in rows[1:]] == [
        (c, s) for c in ("gaussian_noise", "shot_noise", "impulse_noise") for s in (1, 3)]
    for r in rows[1:]:
        assert r["accuracy"] == pytest.approx(res.correct[(r["corruption"], r["severity"])].mean())
        assert r["error"] == pytest.approx(1 - r["accuracy"]) and r["n"] == res.n == 75
    d = json.loads(json.dumps(res.to_dict()))
    assert d["accuracy"]["shot_noise"]["3"] == pytest.approx(res.accuracy["shot_noise"][3])
    assert d["mean_accuracy"] == pytest.approx(np.mean([r["accuracy"] for r in rows[1:]]))
    errs = res.errors()
    assert errs["clean"] == pytest.approx(1 - res.clean_accuracy)
    assert errs["impulse_noise"] == pytest.approx((1 - res.accuracy["impulse_noise"][1],
                                                   1 - res.accuracy["impulse_noise"][3]))
    assert res.curves()["gaussian_noise"] == {"x": [1.0, 3.0], "y": [res.accuracy["gaussian_noise"][1],
                                                                     res.accuracy["gaussian_noise"][3]]}


def test_sweep_rejects_bad_specs(data, head_model):
    with pytest.raises(ValueError, match="unknown corruption or group 'rain'"):
        corruption_sweep(head_model, data, "rain", 1)
    with pytest.raises(ValueError, match=r"severities: ImageNet-C's levels are 1, 2, 3, 4 and 5"):
        corruption_sweep(head_model, data, "fog", [1, 6])
    with pytest.raises(ValueError, match="severities: expected 'all'"):
        corruption_sweep(head_model, data, "fog", "most")
    with pytest.raises(ValueError, match="method: expected one of"):
        corruption_sweep(head_model, data, "fog", 1, method="bogus")


# --- the corruption gate --------------------------------------------------------------

def test_corruption_gate_one_cell_is_clean_minus_corrupted(tmp_path, data, head_model):
    result = assert_robust_under_corruption(head_model, data, "gaussian_noise", 5, max_drop=1.0, method="direct")
    other = _context(tmp_path)
    clean = _direct_correct(head_model, data, None, other)
    noisy = _direct_correct(head_model, data, corruption("gaussian_noise", 5, seed=0), other)
    assert result.value == pytest.approx(clean.mean() - noisy.mean())
    assert result.gate == "corruption_max_drop" and result.comparison == "<="
    assert result.interval[0] <= result.value <= result.interval[1]
    assert result.details["clean_accuracy"] == pytest.approx(clean.mean())
    assert result.details["curves"] == {"gaussian_noise": {"x": [5.0], "y": [pytest.approx(noisy.mean())]}}


def test_corruption_gate_fails_when_the_drop_is_too_large(data, head_model):
    res = corruption_sweep(head_model, data, "contrast", 5, method="direct")
    drop = res.clean_accuracy - res.accuracy["contrast"][5]
    assert drop > 0.1  # contrast at severity 5 leaves 5 % of the contrast
    with pytest.raises(AssertionError, match=r"Accuracy drop under corruption contrast \(severity 5\) of model "
                                             r"'tiny' on dataset 'blobs' is .*above the maximum 0\.05\n") as info:
        assert_robust_under_corruption(head_model, data, "contrast", 5, max_drop=0.05, method="direct")
    assert "threshold from: argument max_drop=" in str(info.value) and "next:" in str(info.value)


def test_corruption_gate_group_gates_the_mean_drop_over_cells(tmp_path, data, head_model, fresh_context):
    result = assert_robust_under_corruption(head_model, data, "noise", "all", max_drop=1.0, method="direct")
    other = _context(tmp_path)
    clean = _direct_correct(head_model, data, None, other)
    accs = {(c, s): _direct_correct(head_model, data, corruption(c, s, seed=0), other).mean()
            for c in ("gaussian_noise", "shot_noise", "impulse_noise") for s in range(1, 6)}
    assert result.value == pytest.approx(clean.mean() - np.mean(list(accs.values())))
    assert result.details["perturbed_accuracy"] == pytest.approx(np.mean(list(accs.values())))
    lo, hi = result.interval
    assert lo <= result.value <= hi and hi - lo < 0.5
    curves = result.details["curves"]
    assert set(curves) == {"gaussian_noise", "shot_noise", "impulse_noise"}
    assert curves["shot_noise"]["x"] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert curves["shot_noise"]["y"] == pytest.approx([accs[("shot_noise", s)] for s in range(1, 6)])
    assert result.details["clean_accuracy"] == pytest.approx(clean.mean())
    plot = result.details["robustness"]  # what report/html.py draws
    assert {p["corruption"] for p in plot} == set(curves) and plot[0]["severity"] == [1, 2, 3, 4, 5]
    assert fresh_context.measurements[-1] is result


def test_corruption_gate_all_and_relative(data, head_model):
    res = assert_robust_under_corruption(head_model, data, "all", 2, max_drop=1.0, method="direct")
    assert res.details["corruptions"] == list(CORRUPTIONS) and res.details["severities"] == [2]
    clean, mean_cells = res.details["clean_accuracy"], res.details["perturbed_accuracy"]
    rel = assert_robust_under_corruption(head_model, data, "all", 2, max_drop=1.0, relative=True, method="direct")
    assert rel.value == pytest.approx((clean - mean_cells) / clean)
    with pytest.raises(AssertionError, match=r"(?s)Mean accuracy drop under corruptions all \(15 corruptions\), "
                                             r"severity 2 .* (worst cell is|tie for worst).*"
                                             r"gate each group separately"):
        assert_robust_under_corruption(head_model, data, "all", 2, max_drop=res.value - 1e-6, method="direct")


@pytest.mark.parametrize(("corruption", "severity", "advice"), [
    ("blur", [3], "gate each corruption separately"),  # one group, four corruptions: glass blur drops
    ("fog", [1, 3, 5], "gate each severity separately to see where the drop begins"),
])
def test_a_failing_sweep_says_where_to_look(data, head_model, corruption, severity, advice):
    res = assert_robust_under_corruption(head_model, data, corruption, severity, max_drop=1.0, method="direct")
    cells = {(c, int(s)): a for c, row in res.details["table"].items() for s, a in row.items()}
    low = min(cells.values())
    tied = [cell for cell, a in cells.items() if a == low]
    with pytest.raises(AssertionError) as info:
        assert_robust_under_corruption(head_model, data, corruption, severity, max_drop=res.value - 1e-6,
                                       method="direct")
    message = str(info.value)
    assert advice in message and f"(accuracy {low:.4f})" in message
    name, level = tied[0]
    assert f"{name} at severity {level}" in message
    assert ("worst cell is" in message) == (len(tied) == 1) and (f"{len(tied)} cells tie" in message) == (len(tied) > 1)


def test_cells_tied_for_worst_are_named_together():
    from types import SimpleNamespace

    from pytest_transfer.gates.robustness import _worst_cells

    cells = [("gaussian_noise", 1), ("shot_noise", 1), ("impulse_noise", 1), ("fog", 2), ("snow", 2)]
    correct = {cell: np.array([1, 0, 0]) for cell in cells} | {("fog", 2): np.array([1, 1, 0])}
    text = _worst_cells(SimpleNamespace(cells=cells, correct=correct))
    assert text == ("4 cells tie for worst: gaussian_noise at severity 1, shot_noise at severity 1, "
                    "impulse_noise at severity 1 and 1 more (accuracy 0.3333)")
    correct[("snow", 2)] = np.array([0, 0, 0])
    assert _worst_cells(SimpleNamespace(cells=cells, correct=correct)) == \
        "the worst cell is snow at severity 2 (accuracy 0.0000)"


def test_corruption_gate_with_a_probe_trains_on_clean_features(data, fresh_context):
    model = load_model(tiny_net(), name="tiny")
    result = assert_robust_under_corruption(model, data, "weather", [1, 5], max_drop=1.0)
    clean = predict(model, data)
    foggy = predict(model, data, perturbation=corruption("fog", 5, seed=0))
    assert result.details["clean_accuracy"] == pytest.approx(clean.correct.mean())
    assert result.details["table"]["fog"]["5"] == pytest.approx(foggy.correct.mean())
    assert fresh_context.forward_passes == 2  # the clean train split (probe) and one sweep of the test split


def test_corruption_gate_threshold_from_config(tmp_path, data, head_model):
    pp = tmp_path / "pyproject.toml"
    pp.write_text('[tool.pytest_transfer.thresholds."tiny"."blobs"]\ncorruption_max_drop = 0.0\n'
                  'attack_min_accuracy = 1.0\nmax_mce = 0.0\n')
    ctx = Context(resolve({"no_cache": True, "device": "cpu", "corruption_table": "imagenet-c"}, rootdir=tmp_path,
                          pyproject=pp, environ={}))
    previous = set_current_context(ctx)
    try:
        with pytest.raises(AssertionError, match=r'threshold from: .*pyproject.toml \[tool.pytest_transfer.'
                                                 r'thresholds."tiny"."blobs"\] corruption_max_drop'):
            assert_robust_under_corruption(head_model, data, "contrast", 5, method="direct")
        with pytest.raises(AssertionError, match=r"attack_min_accuracy"):
            assert_robust_under_attack(head_model, data, attack="fgsm", eps=0.3, method="direct")
        with pytest.raises(AssertionError, match=r"max_mce"):
            assert_mce_below(head_model, data, reference={"fog": 0.5, "clean": 0.1}, corruptions="fog",
                             method="direct")
        assert assert_robust_under_corruption(head_model, data, "fog", 1, max_drop=1.0, method="direct").passed
    finally:
        set_current_context(previous)


def test_corruption_gate_without_threshold_says_where_to_set_it(data, head_model):
    with pytest.raises(LookupError, match=r"corruption_max_drop"):
        assert_robust_under_corruption(head_model, data, "fog", 1, method="direct")


# --- mCE ---------------------------------------------------------------------------------

def test_mce_gate_against_a_measured_reference(tmp_path, data, head_model, weak_model):
    reference = weak_model
    names, levels = ("fog", "contrast", "frost"), (1, 3, 5)
    result = assert_mce_below(head_model, data, 100.0, reference=reference, corruptions=list(names),
                              severities=list(levels), method="direct")
    other = _context(tmp_path)

    def errors(model):
        out = {c: [1 - _direct_correct(model, data, corruption(c, s, seed=0), other).mean() for s in levels]
               for c in names}
        out["clean"] = 1 - _direct_correct(model, data, None, other).mean()
        return out

    mine, ref = errors(head_model), errors(reference)
    expected = np.mean([sum(mine[c]) / sum(ref[c]) for c in names])  # CE_c = Σ_s E / Σ_s E_ref
    assert result.value == pytest.approx(expected)
    assert result.value == pytest.approx(float(mce(mine, ref)))
    assert result.details["reference"] == "measured: reference"
    assert result.details["per_corruption"]["contrast"] == pytest.approx(sum(mine["contrast"]) / sum(ref["contrast"]))
    with pytest.raises(AssertionError, match=r"mCE of model 'tiny' on dataset 'blobs' is .* above the maximum"):
        assert_mce_below(head_model, data, result.value - 1e-6, reference=reference, corruptions=list(names),
                         severities=list(levels), method="direct")
    rel = assert_mce_below(head_model, data, 100.0, reference=reference, corruptions=list(names),
                           severities=list(levels), relative=True, method="direct")
    assert rel.value == pytest.approx(float(relative_mce(mine, ref)))


def test_mce_gate_defaults_to_alexnets_published_errors(data, head_model):
    # contrast at severity 5 certainly costs this model accuracy (an interval of positive width); the noises
    # alone may cost it nothing, depending on the draw
    names = ["impulse_noise", "contrast"]
    result = assert_mce_below(head_model, data, 100.0, corruptions=names, severities=[1, 5], method="direct",
                              confidence="strict")
    res = corruption_sweep(head_model, data, names, [1, 5], method="direct")
    assert res.accuracy["contrast"][5] < 0.9
    ce = [(2 - res.accuracy[c][1] - res.accuracy[c][5]) / (ALEXNET_ERRORS[c][0] + ALEXNET_ERRORS[c][4])
          for c in res.corruptions]
    assert result.value == pytest.approx(np.mean(ce))
    assert "AlexNet" in result.details["reference"]
    lo, hi = result.interval
    assert lo <= result.value <= hi and lo < hi


def test_mce_gate_supplied_errors_and_bad_reference(data, head_model):
    res = corruption_sweep(head_model, data, "fog", "all", method="direct")
    supplied = {"fog": 0.5}
    r = assert_mce_below(head_model, data, 100.0, reference=supplied, corruptions="fog", method="direct")
    assert r.value == pytest.approx((1 - np.mean(list(res.accuracy["fog"].values()))) / 0.5)
    with pytest.raises(ValueError, match="has no errors for 'fog'"):
        assert_mce_below(head_model, data, 1.0, reference={"contrast": 0.5}, corruptions="fog", method="direct")
    with pytest.raises(ValueError, match="is the model under test"):
        assert_mce_below(head_model, data, 1.0, reference=head_model, corruptions="fog", method="direct")
    with pytest.raises(LookupError, match=r"set max_relative_mce = \.\.\."):
        assert_mce_below(head_model, data, reference=supplied, corruptions="fog", relative=True, method="direct")


# --- attacks ---------------------------------------------------------------------------

def test_attack_with_eps_zero_is_clean_accuracy(data, head_model):
    for method in ("direct", "linear_probe"):
        clean = predict(head_model, data, method=method)
        for attack in ("fgsm", "pgd"):
            r = assert_robust_under_attack(head_model, data, attack=attack, eps=0.0, min_accuracy=0.0, method=method)
            assert r.value == pytest.approx(clean.correct.mean()), (method, attack)
            assert r.details["clean_accuracy"] == pytest.approx(clean.correct.mean())


def test_pgd_is_no_weaker_than_fgsm_which_is_no_weaker_than_clean(data, head_model, blobs12):
    eps = 0.15
    clean = predict(head_model, data, method="direct").correct.mean()
    f = assert_robust_under_attack(head_model, data, attack="fgsm", eps=eps, min_accuracy=0.0, method="direct")
    p = assert_robust_under_attack(head_model, data, attack="pgd", eps=eps, steps=10, min_accuracy=0.0,
                                   method="direct")
    assert clean > 0.95
    assert p.value <= f.value < clean
    assert p.value < clean - 0.2  # the attack bites
    # FGSM computed independently, on the whole split at once, gives the same accuracy
    x, y, net, _ = blobs12
    idx = data.indices("test")
    xs, ys = torch.from_numpy(x[idx]), torch.from_numpy(y[idx])
    adv = fgsm(net, xs, ys, eps=eps)
    with torch.no_grad():
        assert f.value == pytest.approx((net(adv).argmax(1) == ys).float().mean().item())
    assert f.interval[0] <= f.value <= f.interval[1] and p.details["steps"] == 10


def test_attack_gate_passes_and_fails(data, head_model):
    ok = assert_robust_under_attack(head_model, data, attack="pgd", eps=2 / 255, min_accuracy=0.5, method="direct")
    assert ok.passed and ok.gate == "attack_min_accuracy" and ok.metric == "pgd_accuracy"
    with pytest.raises(AssertionError, match=r"Accuracy under PGD attack \(L∞ eps=0\.15 = 38\.2/255, direct\) "
                                             r"of model 'tiny' .* below the minimum 0\.9\n"):
        assert_robust_under_attack(head_model, data, attack="pgd", eps=0.15, min_accuracy=0.9, method="direct")


def test_attack_through_the_linear_probe_head(data, head_model, blobs12):
    net = blobs12[2]
    clean = predict(head_model, data).correct.mean()
    r = assert_robust_under_attack(head_model, data, attack="pgd", eps=0.15, min_accuracy=0.0)
    assert r.value < clean - 0.1 and r.details["method"] == "linear_probe"
    assert not net.training and all(p.requires_grad for p in net.parameters())  # restored after the attack


@pytest.mark.parametrize("node", ["penultimate", "0"])  # the input of the last Linear; a conv layer's pooled output
def test_probe_head_model_equals_the_probe_on_engine_features(data, fresh_context, node):
    from pytest_transfer.gates.robustness import ProbeHeadModel
    from pytest_transfer.methods import get_method

    model = load_model(tiny_net(), name="conv", feature_node=node)
    probe = get_method("linear_probe").fit(model, data, context=fresh_context).head.probe
    head = ProbeHeadModel(model, probe.torch_head())
    test = evaluate(model, data)
    with torch.no_grad():
        logits = head(data.batch(data.indices("test"))).double().numpy()
    np.testing.assert_allclose(logits, probe.decision_function(test.features), rtol=1e-4, atol=1e-4)
    r = assert_robust_under_attack(model, data, attack="fgsm", eps=0.0, min_accuracy=0.0)
    assert r.value == pytest.approx(predict(model, data).correct.mean())


def test_attack_is_seeded(data, head_model):
    a = assert_robust_under_attack(head_model, data, eps=0.1, steps=3, min_accuracy=0.0, method="direct", seed=1)
    b = assert_robust_under_attack(head_model, data, eps=0.1, steps=3, min_accuracy=0.0, method="direct", seed=1)
    assert a.value == b.value and a.details["seed"] == 1


def test_pgd_result_does_not_depend_on_the_batch_size(data, head_model):
    from pytest_transfer.gates.robustness import attack_accuracy

    _, small = attack_accuracy(head_model, data, eps=0.2, steps=1, method="direct", batch_size=7)
    _, large = attack_accuracy(head_model, data, eps=0.2, steps=1, method="direct", batch_size=256)
    assert np.array_equal(small, large)


def test_attack_rejects_bad_arguments(data, head_model):
    with pytest.raises(ValueError, match="attack: expected one of pgd, fgsm"):
        assert_robust_under_attack(head_model, data, attack="cw", eps=0.1, min_accuracy=0.0)
    with pytest.raises(ValueError, match="k-NN has no gradient"):
        assert_robust_under_attack(head_model, data, eps=0.1, min_accuracy=0.0, method="knn")
    with pytest.raises(ValueError, match=r"eps: must lie in \[0, 1\]"):
        assert_robust_under_attack(head_model, data, eps=2.0, min_accuracy=0.0, method="direct")
    with pytest.raises(ValueError, match="has 5 outputs and 'blobs' has 3 classes"):
        assert_robust_under_attack(load_model(tiny_net(n_classes=5)), data, eps=0.1, min_accuracy=0.0,
                                   method="direct")

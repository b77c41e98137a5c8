"""The parity matrix for models: every model kind through every gate path, each number against a reference.

Rows (:data:`ROWS`) are model kinds, columns (:data:`COLUMNS`) the paths a gate takes. A cell computes the
path's number through the plugin and a straightforward reference here: the module called directly in the
test (its output read by hand: ``[0]``, ``["logits"]``, ``.logits``; fed its own dtype; features read by a
forward hook the test puts on a layer it names itself), scikit-learn's ``LogisticRegression`` and
``KNeighborsClassifier``, and torch autograd for the attacks' sign steps. A row may instead expect a refusal
(:attr:`Row.refuses`): the cell then checks the error and its message. Every cell also checks that the
caller's model comes back unchanged: each submodule's training flag, each parameter's ``requires_grad``,
every weight and buffer, their dtypes, devices and memory layout.

A new model kind is one :class:`Row`; a new path is one function in :data:`COLUMNS`. Models are tiny (random
weights, 16 px images, 36 samples), built once per row and shared by its cells (one context per row, so a
clean pass is reused across columns).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

SIZE = 16
N_PER_CLASS = 12
CLASSES = 3
EPS = 4 / 255
ARCH = "shufflenet_v2_x0_5"  # torchvision's smallest classifier with a linear head (0.34 M parameters)


# --- data --------------------------------------------------------------------------------------------------

def _images() -> tuple[np.ndarray, np.ndarray]:
    """3 classes of 16 px RGB images (a bright square of a class colour at a class place, plus noise)."""
    rng = np.random.default_rng(0)
    x = rng.random((CLASSES * N_PER_CLASS, 3, SIZE, SIZE), dtype=np.float32) * 0.4
    y = np.repeat(np.arange(CLASSES), N_PER_CLASS)
    for i, c in enumerate(y):
        x[i, c, 3 * c:3 * c + 6, 3 * c:3 * c + 6] += 0.5
    return np.clip(x, 0, 1), y


# --- tiny modules for the nn.Module rows ------------------------------------------------------------------

class TinyNet(nn.Module):
    """conv → BN → ReLU → pool → ``fc`` (the head); ``output`` picks how forward returns the logits."""

    def __init__(self, output: str = "tensor") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(32, CLASSES)
        self.output = output
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.1, 0.1)
            self.bn.running_var.uniform_(0.5, 1.5)

    def forward(self, x: torch.Tensor) -> Any:
        logits = self.fc(self.pool(torch.relu(self.bn(self.conv(x)))).flatten(1))
        if self.output == "tuple":
            return logits, x.mean()
        if self.output == "dict":
            return {"logits": logits, "aux": x.mean()}
        if self.output == "modeloutput":
            from transformers.modeling_outputs import ImageClassifierOutput

            return ImageClassifierOutput(logits=logits)
        return logits


def _read_logits(out: Any) -> torch.Tensor:
    """The reference's own reading of an output: what each row's forward returns, by hand."""
    if isinstance(out, tuple):
        return out[0]
    if isinstance(out, dict):  # a dict and a ModelOutput alike
        return out["logits"]
    return out


# --- rows --------------------------------------------------------------------------------------------------

@dataclass
class Built:
    """A row's model as the caller holds it, and what the reference needs."""

    obj: Any  # what the caller passes to the gates (a TransferModel, or the bare nn.Module)
    module: nn.Module  # the module the caller owns (checked unchanged)
    preprocess: Callable[[torch.Tensor], torch.Tensor]  # float [0, 1] images → the module's float32 input
    head: str | None  # the layer whose input the features are (None: the output is the features)
    tap: str  # a submodule read by the layer-taps column
    model: Any = None  # the TransferModel the plugin builds from ``obj``


@dataclass
class Row:
    name: str
    build: Callable[[Any], Built]
    refuses: dict[str, str] = field(default_factory=dict)  # column → regex of the refusal's message
    finetune_blocks: int = 0  # last_blocks of the fine-tune column (1 for the tiny modules: trains end to end)


def _module_row(output: str = "tensor", dtype: torch.dtype = torch.float32, *, frozen_bn: bool = False,
                channels_last: bool = False) -> Callable[[Any], Built]:
    def build(_tmp: Any) -> Built:
        from pytest_transfer import load_model

        net = TinyNet(output).to(dtype)
        if frozen_bn:  # a model in train mode whose BatchNorm is frozen (eval, no grad), as fine-tuning recipes do
            net.train()
            net.bn.eval()
            net.bn.requires_grad_(False)
        else:
            net.eval()
        if channels_last:
            net.to(memory_format=torch.channels_last)
        return Built(net, net, lambda x: x, "fc", "conv", load_model(net, name=f"tiny-{output}"))

    return build


def _torchvision(_tmp: Any) -> Built:
    from pytest_transfer import load_model

    model = load_model(f"torchvision:{ARCH}:none", image_size=SIZE, num_classes=CLASSES)
    return Built(model, model.module, model.preprocess, "fc", "stage2", model)


def _timm(name: str, num_classes: int) -> Callable[[Any], Built]:
    def build(_tmp: Any) -> Built:
        from pytest_transfer import load_model

        model = load_model(f"timm:{name}", pretrained=False, num_classes=num_classes,
                           pretrained_cfg_overlay={"input_size": (3, SIZE, SIZE)})
        head = "classifier" if num_classes and name == "test_efficientnet" else ("head" if num_classes else None)
        return Built(model, model.module, model.preprocess, head, "blocks.0", model)

    return build


def _timm_weights_file(tmp: Any) -> Built:
    """A fine-tuned timm model's state dict (a ``CLASSES``-way head) read with ``weights=<file>`` and no
    ``num_classes=``: the class count comes from the file's classifier, as for ``checkpoint:``."""
    import timm

    from pytest_transfer import load_model

    torch.manual_seed(3)
    path = tmp / "tuned-timm.pth"
    torch.save(timm.create_model("test_efficientnet", pretrained=False, num_classes=CLASSES).state_dict(), path)
    model = load_model("timm:test_efficientnet", weights=str(path),
                       pretrained_cfg_overlay={"input_size": (3, SIZE, SIZE)})
    return Built(model, model.module, model.preprocess, "classifier", "blocks.0", model)


def _transformers(tmp: Any, num_labels: int = CLASSES) -> Built:
    """A tiny ViT saved with ``save_pretrained``; ``num_labels=0``: transformers' headless model (its
    classifier is ``nn.Identity`` and ``.logits`` the pooled [CLS] token)."""
    import transformers

    from pytest_transfer import load_model

    folder = tmp / "tiny-vit"
    config = transformers.ViTConfig(image_size=SIZE, patch_size=8, hidden_size=16, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=32, num_labels=num_labels)
    torch.manual_seed(0)
    transformers.ViTForImageClassification(config).eval().save_pretrained(folder)
    transformers.ViTImageProcessor(size={"height": SIZE, "width": SIZE}, image_mean=[0.4, 0.5, 0.6],
                                   image_std=[0.2, 0.25, 0.3]).save_pretrained(folder)
    model = load_model(f"hf:{folder}")
    head = "model.classifier" if num_labels else None
    return Built(model, model.module, model.preprocess, head, "model.vit", model)  # vit returns a ModelOutput


def _checkpoint(suffix: str, arch: str = "shufflenet_v2_x0_5") -> Callable[[Any], Built]:
    """Weights saved as a training script saves them: ``.pt`` a plain state dict, ``.pth.tar`` the PyTorch
    ImageNet example's ``model_best.pth.tar`` dict, ``.ckpt`` Lightning's ``state_dict`` with ``model.``
    keys, ``.safetensors`` a flat file (keys sorted by the format; the case where sorting puts a body weight
    after the head, ConvNeXt's, is tests/test_models_checkpoint.py's, as a 28 M-parameter row is too slow)."""
    def build(tmp: Any) -> Built:
        import torchvision

        from pytest_transfer import load_model

        torch.manual_seed(1)
        source = torchvision.models.get_model(arch, weights=None, num_classes=CLASSES).eval()
        state = source.state_dict()
        path = tmp / ("model_best" + suffix if suffix == ".pth.tar" else "weights" + suffix)
        if suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in state.items()}, str(path))
        elif suffix == ".pth.tar":
            torch.save({"epoch": 3, "arch": arch, "state_dict": state, "best_acc1": 0.5}, path)
        elif suffix == ".ckpt":
            torch.save({"state_dict": {f"model.{k}": v for k, v in state.items()}, "epoch": 1}, path)
        else:
            torch.save(state, path)
        model = load_model(f"checkpoint:{path}", arch=arch, image_size=SIZE)
        return Built(model, model.module, model.preprocess, "fc", "stage2", model)

    return build


HEADLESS = {"direct": r"has no classification head", "finetune": r"has none \(a headless backbone",
            "fgsm": r"has no classification head", "pgd": r"has no classification head",
            "baselines": r"has no classification head"}

ROWS = [
    Row("torchvision", _torchvision),
    Row("timm", _timm("test_efficientnet", CLASSES)),
    Row("timm-weights-file", _timm_weights_file),
    Row("transformers", _transformers),
    Row("checkpoint.pt", _checkpoint(".pt")),
    Row("checkpoint.pth.tar", _checkpoint(".pth.tar")),
    Row("checkpoint.ckpt", _checkpoint(".ckpt")),
    Row("checkpoint.safetensors", _checkpoint(".safetensors")),
    Row("module-tensor", _module_row("tensor"), finetune_blocks=1),
    Row("module-tuple", _module_row("tuple"), finetune_blocks=1),
    Row("module-dict", _module_row("dict"), finetune_blocks=1),
    Row("module-ModelOutput", _module_row("modeloutput"), finetune_blocks=1),
    Row("float16", _module_row(dtype=torch.float16), finetune_blocks=1),
    Row("bfloat16", _module_row(dtype=torch.bfloat16), finetune_blocks=1),
    Row("float64", _module_row(dtype=torch.float64), finetune_blocks=1),
    Row("headless-timm", _timm("test_vit", 0), refuses=HEADLESS),
    Row("headless-transformers", lambda tmp: _transformers(tmp, 0), refuses=HEADLESS),
    Row("train-mode-frozen-bn", _module_row(frozen_bn=True), finetune_blocks=1),
    Row("channels-last", _module_row(channels_last=True), finetune_blocks=1),
]


# --- what the caller's model must come back as --------------------------------------------------------------

def _snapshot(module: nn.Module) -> dict[str, Any]:
    return {
        "modes": [(n, m.training) for n, m in module.named_modules()],
        "grads": [(n, p.requires_grad) for n, p in module.named_parameters()],
        "tensors": {n: (t.detach().clone(), t.dtype, t.device, t.stride())
                    for n, t in [*module.named_parameters(), *module.named_buffers()]},
    }


def _assert_unchanged(before: dict[str, Any], module: nn.Module) -> None:
    after = _snapshot(module)
    assert after["modes"] == before["modes"], "a submodule's train/eval mode changed"
    assert after["grads"] == before["grads"], "a parameter's requires_grad changed"
    for name, (value, dtype, device, stride) in before["tensors"].items():
        now, now_dtype, now_device, now_stride = after["tensors"][name]
        assert (now_dtype, now_device, now_stride) == (dtype, device, stride), f"{name}: dtype/device/layout changed"
        assert torch.equal(now, value), f"{name}: values changed"


# --- references --------------------------------------------------------------------------------------------

class Reference:
    """The module called directly: logits and (hooked) features of float [0, 1] images."""

    def __init__(self, built: Built) -> None:
        self.b = built
        self.dtype = next(p.dtype for p in built.module.parameters())

    def _run(self, x: torch.Tensor, grad: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        box: list[torch.Tensor] = []
        handle = None
        if self.b.head is not None:
            layer = self.b.module.get_submodule(self.b.head)
            handle = layer.register_forward_pre_hook(lambda _m, args: box.append(args[0]))
        training = [(m, m.training) for m in self.b.module.modules()]
        self.b.module.eval()
        try:
            with torch.set_grad_enabled(grad):
                out = _read_logits(self.b.module(self.b.preprocess(x).to(self.dtype)))
        finally:
            for m, flag in training:
                m.training = flag
            if handle is not None:
                handle.remove()
        feats = box[0] if box else out
        return out, feats.flatten(1)

    def logits(self, x: torch.Tensor) -> np.ndarray:
        return self._run(x)[0].detach().float().numpy()

    def features(self, x: torch.Tensor) -> np.ndarray:
        return self._run(x)[1].detach().float().numpy()

    def sign_step(self, x: torch.Tensor, y: torch.Tensor, step: float) -> torch.Tensor:
        """One signed gradient step of the summed cross-entropy (torch autograd), clipped to [0, 1]."""
        frozen = [(p, p.requires_grad) for p in self.b.module.parameters()]
        for p, _ in frozen:
            p.requires_grad_(False)
        try:
            x = x.detach().clone().requires_grad_(True)
            loss = nn.functional.cross_entropy(self._run(x, grad=True)[0].float(), y, reduction="sum")
            (g,) = torch.autograd.grad(loss, x)
        finally:
            for p, flag in frozen:
                p.requires_grad_(flag)
        return (x.detach() + step * g.sign()).clamp(0, 1)


def _tolerance(ref: Reference) -> dict[str, float]:
    if ref.dtype in (torch.float16, torch.bfloat16):
        return {"rtol": 2e-2, "atol": 2e-2}
    return {"rtol": 1e-4, "atol": 1e-5}


# --- columns -----------------------------------------------------------------------------------------------

@dataclass
class Cell:
    built: Built
    ref: Reference
    ds: Any
    x: dict[str, torch.Tensor]  # split → images
    y: dict[str, np.ndarray]
    row: Row
    tmp: Any


def col_evaluate(c: Cell) -> None:
    from pytest_transfer import evaluate

    ev = evaluate(c.built.obj, c.ds, split="test")
    np.testing.assert_allclose(ev.logits, c.ref.logits(c.x["test"]), **_tolerance(c.ref))
    np.testing.assert_allclose(ev.features, c.ref.features(c.x["test"]), **_tolerance(c.ref))


def _agree(pred: np.ndarray, expected: np.ndarray, c: Cell) -> None:
    """Predictions equal; in half precision all but one (an argmax between two near-equal values)."""
    wrong = int((pred != expected).sum())
    assert wrong <= (1 if c.ref.dtype in (torch.float16, torch.bfloat16) else 0), (pred, expected)


def col_direct(c: Cell) -> None:
    from tests._helpers import predict

    pred = predict(c.built.obj, c.ds, method="direct")
    _agree(pred.y_pred, c.ref.logits(c.x["test"]).argmax(1), c)


def _standardised(c: Cell) -> tuple[np.ndarray, np.ndarray]:
    train, test = c.ref.features(c.x["train"]).astype(np.float64), c.ref.features(c.x["test"]).astype(np.float64)
    mean, std = train.mean(0), train.std(0)
    std = np.where(std > 1e-12 * max(1.0, float(np.abs(mean).max())), std, 1.0)
    return (train - mean) / std, (test - mean) / std


def col_linear_probe(c: Cell) -> None:
    from sklearn.linear_model import LogisticRegression

    from tests._helpers import predict

    pred = predict(c.built.obj, c.ds, method="linear_probe")
    train, test = _standardised(c)
    reference = LogisticRegression(C=1.0, max_iter=5000, tol=1e-8).fit(train, c.y["train"])
    _agree(pred.y_pred, reference.predict(test), c)
    if c.ref.dtype not in (torch.float16, torch.bfloat16):
        np.testing.assert_allclose(pred.scores, reference.predict_proba(test), atol=1e-2)  # both stop at tol


def col_knn(c: Cell) -> None:
    from sklearn.neighbors import KNeighborsClassifier

    from tests._helpers import predict

    pred = predict(c.built.obj, c.ds, method="knn", k=1)
    train, test = c.ref.features(c.x["train"]), c.ref.features(c.x["test"])
    raw = KNeighborsClassifier(n_neighbors=1, metric="cosine").fit(train, c.y["train"]).predict(test)
    std_train, std_test = _standardised(c)
    on_std = KNeighborsClassifier(n_neighbors=1, metric="cosine").fit(std_train, c.y["train"]).predict(std_test)
    # the plugin's documented setting (cosine on the raw or on the standardised features) must give sklearn's votes
    assert any(int((pred.y_pred != ref).sum()) <= (1 if c.ref.dtype != torch.float32 else 0) for ref in (raw, on_std))


def col_finetune(c: Cell) -> None:
    from pytest_transfer.context import current_context
    from pytest_transfer.methods.finetune import FinetuneConfig, finetuned_model

    cfg = FinetuneConfig(epochs=1, last_blocks=c.row.finetune_blocks)
    tuned = finetuned_model(c.built.model, c.ds, cfg, context=current_context(), seed=0)
    assert tuned.module is not c.built.module
    tuned_ref = Reference(Built(tuned.module, tuned.module, c.built.preprocess, None, ""))
    from tests._helpers import predict

    pred = predict(c.built.obj, c.ds, method="finetune", finetune={"epochs": 1, "last_blocks": c.row.finetune_blocks})
    _agree(pred.y_pred, tuned_ref.logits(c.x["test"]).argmax(1), c)


def _perturbed(c: Cell, perturbation: Any) -> None:
    from pytest_transfer import evaluate

    ev = evaluate(c.built.obj, c.ds, split="test", perturbation=perturbation)
    x = perturbation.apply(c.x["test"].clone(), 0)  # one chunk: the test split is under 64 images
    np.testing.assert_allclose(ev.logits, c.ref.logits(x), **_tolerance(c.ref))


def col_noise(c: Cell) -> None:
    from pytest_transfer.robustness.perturbations import gaussian_noise

    _perturbed(c, gaussian_noise(0.1, seed=3))


def col_corruption(c: Cell) -> None:
    from pytest_transfer.robustness.perturbations import corruption

    _perturbed(c, corruption("contrast", 2, seed=3))


def _labels(c: Cell) -> torch.Tensor:
    return torch.as_tensor(c.y["test"])


def _same_steps(adv: torch.Tensor, expected: torch.Tensor, x: torch.Tensor, c: Cell) -> None:
    assert float((adv - x).abs().max()) <= EPS + 1e-6
    same = float((adv - expected).abs().le(1e-6).float().mean())
    assert same >= (0.97 if c.ref.dtype in (torch.float16, torch.bfloat16) else 1.0), same


def col_fgsm(c: Cell) -> None:
    from pytest_transfer.robustness import fgsm

    x, y = c.x["test"], _labels(c)
    _same_steps(fgsm(c.built.obj, x, y, eps=EPS), c.ref.sign_step(x, y, EPS), x, c)


def col_pgd(c: Cell) -> None:
    from pytest_transfer.robustness import pgd

    x, y = c.x["test"], _labels(c)
    adv = pgd(c.built.obj, x, y, eps=EPS, steps=2, random_start=False)
    expected = x
    for _ in range(2):  # Madry et al.'s step 2.5·eps/steps, projected onto the ball ∩ [0, 1]
        step = c.ref.sign_step(expected, y, 2.5 * EPS / 2)
        expected = torch.minimum(torch.maximum(step, (x - EPS).clamp(min=0)), (x + EPS).clamp(max=1))
    _same_steps(adv, expected, x, c)


def col_estimators(c: Cell) -> None:
    from pytest_transfer import assert_transferability_above
    from pytest_transfer.metrics import logme

    measured = assert_transferability_above(c.built.obj, c.ds, -1e9, metric="logme")
    train, _ = _standardised(c)
    expected = logme(train, c.y["train"])
    assert measured.value == pytest.approx(expected, rel=2e-2 if c.ref.dtype != torch.float32 else 1e-4, abs=1e-4)


def col_taps(c: Cell) -> None:
    from pytest_transfer import evaluate

    ev = evaluate(c.built.obj, c.ds, split="test", taps=[c.built.tap])
    box: list[torch.Tensor] = []
    def read(_m: Any, _a: Any, out: Any) -> None:  # a tensor, a tuple's first, a ModelOutput's last_hidden_state
        box.append(out[0] if isinstance(out, tuple) else out["last_hidden_state"] if isinstance(out, dict) else out)

    handle = c.built.module.get_submodule(c.built.tap).register_forward_hook(read)
    try:
        c.ref.logits(c.x["test"])
    finally:
        handle.remove()
    t = box[0].float()
    pooled = t.mean(dim=(2, 3)) if t.ndim == 4 else t.mean(dim=1) if t.ndim == 3 else t
    np.testing.assert_allclose(ev.taps[c.built.tap], pooled.numpy(), **_tolerance(c.ref))


def col_baselines(c: Cell) -> None:
    from pytest_transfer import assert_no_regression
    from pytest_transfer.baselines import load_baseline

    path = c.tmp / f"{c.row.name}.json"
    with pytest.raises(AssertionError, match="baseline"):  # the first run writes the baseline and says so
        assert_no_regression(c.built.obj, c.ds, method="direct", path=path)
    stored = load_baseline(path)
    expected = c.ref.logits(c.x["test"]).argmax(1) == c.y["test"]
    assert int((stored.correct != expected).sum()) <= (1 if c.ref.dtype != torch.float32 else 0)
    assert_no_regression(c.built.obj, c.ds, method="direct", path=path)  # the same model passes against it


COLUMNS: dict[str, Callable[[Cell], None]] = {
    "evaluate": col_evaluate, "direct": col_direct, "linear_probe": col_linear_probe, "knn": col_knn,
    "finetune": col_finetune, "noise": col_noise, "corruption": col_corruption, "fgsm": col_fgsm, "pgd": col_pgd,
    "estimators": col_estimators, "taps": col_taps, "baselines": col_baselines,
}


# --- the matrix --------------------------------------------------------------------------------------------

_BUILT: dict[str, tuple[Built, Any, Any, dict[str, Any]]] = {}


@pytest.fixture(scope="module")
def _tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("parity-models")


def _row(row: Row, tmp: Any) -> tuple[Built, Any, Any, dict[str, Any]]:
    """The row's model, dataset, context and the model's state as built, once (its cells share the context's
    memo; each cell compares the model with the state as built, so a cell that changed it cannot hide a
    later cell's change)."""
    if row.name not in _BUILT:
        from pytest_transfer import load_dataset
        from pytest_transfer.context import Context, set_current_context
        from pytest_transfer.settings import resolve

        ctx = Context(resolve({"no_cache": True, "device": "cpu"}, rootdir=tmp, pyproject=None))
        previous = set_current_context(ctx)
        try:
            folder = tmp / row.name
            folder.mkdir(exist_ok=True)
            built = row.build(folder)
            x, y = _images()
            ds = load_dataset((x, y), name="squares", test_fraction=1 / 3)
        finally:
            set_current_context(previous)
        _BUILT[row.name] = (built, ds, ctx, _snapshot(built.module))
    return _BUILT[row.name]


@contextlib.contextmanager
def row_cell(row: Row, tmp: Path) -> Iterator[Cell]:
    """The row's cell (built once per module) with its session made current; on leaving, the session is
    restored and the caller's model must come back as built (modes, ``requires_grad``, weights)."""
    from pytest_transfer.context import set_current_context

    if "transformers" in row.name or row.name == "module-ModelOutput":
        pytest.importorskip("transformers")
    if "timm" in row.name:
        pytest.importorskip("timm")
    built, ds, ctx, before = _row(row, tmp)
    previous = set_current_context(ctx)
    try:
        x = {s: ds.batch(ds.indices(s)) for s in ("train", "test")}
        y = {s: ds.labels[ds.indices(s)] for s in ("train", "test")}
        yield Cell(built, Reference(built), ds, x, y, row, tmp)
        _assert_unchanged(before, built.module)
    finally:
        set_current_context(previous)


@pytest.mark.parametrize("column", list(COLUMNS))
@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_model_kind_through_gate_path(row: Row, column: str, _tmp) -> None:
    with row_cell(row, _tmp) as cell:
        if column in row.refuses:
            with pytest.raises(ValueError, match=row.refuses[column]):
                COLUMNS[column](cell)
        else:
            COLUMNS[column](cell)


def test_every_refusal_names_a_real_column():
    for row in ROWS:
        assert set(row.refuses) <= set(COLUMNS), row.name
        for pattern in row.refuses.values():
            re.compile(pattern)

"""The door: the public entry points that take spec strings, resolved once, in the session.

``pytest_transfer.load_model``, ``load_dataset``, ``list_models``,
``list_datasets``, ``evaluate`` and ``corruption_sweep`` are these
functions. Each reads the session once (the pytest session's context
inside pytest, else one built from the working directory's
``pyproject.toml``; or the ``context=`` given) and calls the layers below
with objects and explicit arguments: below the gates nothing reads the
session on its own (``tests/test_architecture.py`` checks it). The gates
resolve their pair the same way, through :func:`resolve_pair`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .context import Context, current_context

if TYPE_CHECKING:  # pragma: no cover
    from .datasets import TargetDataset
    from .engine import Evaluation, Perturbation
    from .methods import TransferMethod
    from .models import TransferModel
    from .robustness.sweep import SweepResult


def session(context: Context | None = None) -> Context:
    """``context``, else the session's (the one place that asks for the current one)."""
    return context if context is not None else current_context()


def load_model(spec: Any, *, name: str | None = None, preprocess: Callable[..., Any] | None = None,
               feature_node: str | None = None, context: Context | None = None, **kwargs: Any) -> TransferModel:
    """Build a ``TransferModel`` from a spec string or an ``nn.Module``.

    Specs: ``torchvision:<arch>[:<weights>]``, ``timm:<name>``,
    ``hf:<local folder or cached repo id>``, ``checkpoint:<path>`` (with
    ``arch=``), a ``<prefix>:<rest>`` added through the
    ``pytest_transfer_register_model_sources`` hook, or a name registered
    through the ``pytest_transfer_register_models`` hook. Other keyword
    arguments go to the source (``check_hash=``, ``image_size=``,
    ``weights=``, builder arguments). A model from a library is fed as that
    library feeds it. An unknown prefix raises ``ValueError`` listing the
    registered ones; a keyword the source does not take is refused by name
    (``ValueError``); a module object takes only ``num_classes``,
    ``categories``, ``in_channels``. A relative path (``checkpoint:<path>``,
    an ``hf:`` folder, timm's ``weights=`` and ``cache_dir=``, hf's
    ``cache_dir=``) is taken from the rootdir, as every path of
    pytest-transfer is; random weights (``torchvision:<arch>:none``, timm's
    ``pretrained=False``) are seeded with ``--transfer-seed``; the model
    keeps the spec as written as its name. ``context``: the session whose
    registries and settings apply (default: the current one).

    >>> m = load_model("torchvision:resnet18:none", image_size=32)  # doctest: +SKIP
    """
    from .models.sources import load_model as load

    return load(spec, context=session(context), name=name, preprocess=preprocess, feature_node=feature_node,
                **kwargs)


def list_models(include: str | Sequence[str] | None = None, exclude: str | Sequence[str] | None = None, *,
                torchvision: bool = False, context: Context | None = None) -> list[str]:
    """Registered model names, filtered by ``include`` / ``exclude`` globs (and, with ``torchvision=True``,
    ``torchvision:<arch>`` specs of every classification model in torchvision's registry)."""
    from .models.sources import list_models as names

    return names(include, exclude, torchvision=torchvision, context=session(context))


def load_dataset(spec: Any, *, name: str | None = None, seed: int | None = None,
                 test_fraction: float | None = None, context: Context | None = None,
                 **kwargs: Any) -> TargetDataset:
    """Build a ``TargetDataset`` from a spec string, a torch ``Dataset`` or ``(images, labels)``.

    Specs: ``digits``, ``digits-shifted``, ``imagefolder:<path>``,
    ``torchvision:<Name>:<root>``, a ``<prefix>:<rest>`` added through
    ``pytest_transfer_register_dataset_sources``, or a name registered
    through ``pytest_transfer_register_datasets``. ``seed`` and
    ``test_fraction`` default to the session's settings; a relative path is
    taken from the rootdir. Folders and torch ``Dataset`` objects are
    streamed; keyword arguments go to the source
    (:func:`~pytest_transfer.datasets.specs.load_imagefolder`,
    :func:`~pytest_transfer.datasets.specs.load_torchvision_dataset`,
    :func:`~pytest_transfer.datasets.specs.dataset_from_torch`, a registered
    factory or loader). An unknown option or prefix raises ``ValueError``
    naming the valid ones. ``context``: the session whose registries and
    settings apply (default: the current one).

    >>> ds = load_dataset("digits")  # doctest: +SKIP
    """
    from .datasets.specs import load_dataset as load

    return load(spec, context=session(context), name=name, seed=seed, test_fraction=test_fraction, **kwargs)


def list_datasets(include: str | Sequence[str] | None = None, exclude: str | Sequence[str] | None = None, *,
                  context: Context | None = None) -> list[str]:
    """Registered dataset names plus the built-in ``digits`` and ``digits-shifted``, filtered by ``include`` /
    ``exclude`` globs."""
    from .datasets.specs import list_datasets as names

    return names(include, exclude, context=session(context))


def resolve_pair(model: Any, dataset: Any, context: Context) -> tuple[TransferModel, TargetDataset]:
    """``(TransferModel, TargetDataset)`` from spec strings or objects, in ``context`` (objects as given)."""
    from .datasets import TargetDataset
    from .models import TransferModel

    if not isinstance(model, TransferModel):
        model = load_model(model, context=context)
    if not isinstance(dataset, TargetDataset):
        dataset = load_dataset(dataset, context=context)
    return model, dataset


def evaluate(model: Any, dataset: Any, *, split: str = "test", perturbation: Perturbation | None = None,
             taps: Iterable[str] = (), batch_size: int | None = None, context: Context | None = None,
             cache: bool = True) -> Evaluation:
    """Evaluate ``model`` on a split of ``dataset``: one pass, memoised in the session and cached on disk.

    ``model`` and ``dataset`` may be spec strings or objects (see
    :func:`load_model` / :func:`load_dataset`). ``taps`` names extra feature
    nodes read in the same pass. A request whose taps were already read
    reuses that pass; one with new taps runs one pass for all the taps read
    so far. ``cache=False`` (or ``--transfer-no-cache``) skips the disk.
    The result: :class:`~pytest_transfer.engine.Evaluation` (labels,
    logits, probabilities, predictions, features, ``sample_ids``).

    >>> ev = evaluate("torchvision:resnet18:none", "digits", split="test")  # doctest: +SKIP
    >>> ev.logits.shape, ev.features.shape  # doctest: +SKIP
    """
    from .engine.memo import evaluate as run

    ctx = session(context)
    model, dataset = resolve_pair(model, dataset, ctx)
    return run(model, dataset, context=ctx, split=split, perturbation=perturbation, taps=taps,
               batch_size=batch_size, cache=cache)


def corruption_sweep(model: Any, dataset: Any, corruptions: str | Iterable[str] = "all",
                     severities: int | str | Iterable[int] = "all", *, method: str | TransferMethod = "linear_probe",
                     split: str = "test", seed: int | None = None, k: int | None = None, C: float | None = None,
                     batch_size: int | None = None, context: Context | None = None,
                     cache: bool = True, corruption_table: str | None = None) -> SweepResult:
    """Accuracy of ``model`` on ``split`` of ``dataset`` under every corruption × severity, from one data pass.

    ``model`` and ``dataset`` may be spec strings or objects; the rest is
    :func:`pytest_transfer.robustness.sweep.corruption_sweep` (``seed``
    defaults to ``--transfer-seed``, ``corruption_table`` to
    ``--transfer-corruption-table``).

    >>> res = corruption_sweep(model, "digits", ["fog", "contrast"], [1, 3, 5])  # doctest: +SKIP
    >>> res.to_rows()[:2]  # doctest: +SKIP
    """
    from .robustness.sweep import corruption_sweep as sweep

    ctx = session(context)
    model, dataset = resolve_pair(model, dataset, ctx)
    return sweep(model, dataset, corruptions, severities, context=ctx, method=method, split=split, seed=seed, k=k,
                 C=C, batch_size=batch_size, cache=cache, corruption_table=corruption_table)


__all__ = ["corruption_sweep", "evaluate", "list_datasets", "list_models", "load_dataset", "load_model",
           "resolve_pair", "session"]

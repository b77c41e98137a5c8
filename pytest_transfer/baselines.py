"""Baselines: the stored results that :func:`~pytest_transfer.gates.regression.assert_no_regression` compares with.

One JSON file per test × model × dataset (× method × split when they are not
the defaults), in a folder ``__transfer_baselines__/<test module>/`` next to
the test file (outside pytest: in the working directory)::

    tests/
      test_backbone.py
      __transfer_baselines__/
        test_backbone/
          test_still_transfers--torchvision_resnet18--digits.json

A file holds a schema tag and version, the test, model, dataset, method and
split it belongs to, the metric values, the per-sample correctness (packed
bits, base64) and predicted labels (little-endian integers, base64) on the
split, and fingerprints of the dataset and of its split, so that a changed
dataset or split is detected instead of being compared sample by sample.
There is no time stamp: an unchanged result rewrites the same bytes, so the
files diff cleanly in code review.

The update flow (as pytest-regressions and syrupy): a missing file is
written and the test fails saying so; ``--transfer-update-baselines``
rewrites every baseline the run touches and passes; a run without the flag
compares. Writes are atomic (:func:`pytest_transfer.cache.atomic_write_text`).
A file that is not valid JSON, not a pytest-transfer baseline, of an unknown
version or another test's is a :class:`BaselineError` naming the file.

A file is validated on read (a damaged or hand-edited baseline would pass
gates it should fail): its ``digest`` (SHA-256 of its canonical JSON, see
:func:`document_digest`) must match, every metric must be a finite number in
[0, 1], the predictions must be class indices, and the stored ``accuracy``
must be the mean of the stored correctness; at comparison time
(:func:`check_consistency`) the correctness must be the predictions compared
with the labels and every stored metric must be recomputed from them. The
digest detects damage and hand edits, not forgery (anyone who can write the
file can recompute it): baselines are as trusted as the code that reviews
them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cache import atomic_write_text

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

SCHEMA = "pytest-transfer-baseline"
VERSION = 1
DIRNAME = "__transfer_baselines__"
UPDATE_HINT = "re-run with --transfer-update-baselines to rewrite it (or delete it)"
METRIC_ATOL = 1e-9  # stored metrics against their recomputation from the stored predictions
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=,\[\]-]+")
_MAX_NAME = 150


class BaselineError(ValueError):
    """A baseline file cannot be used: damaged, foreign, of an unknown version, or for other data."""


def document_digest(doc: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of the baseline document without its ``digest`` field, as canonical JSON (sorted keys,
    no spaces, UTF-8): reformatting the file keeps it, changing any value does not.

    >>> document_digest({"a": 1, "b": [2]}) == document_digest({"b": [2], "a": 1, "digest": "x"})
    True
    """
    body = {k: v for k, v in doc.items() if k != "digest"}
    text = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def check_digest(doc: Mapping[str, Any], where: str) -> None:
    """:class:`BaselineError` unless ``doc["digest"]`` is :func:`document_digest` of ``doc``."""
    stored = doc.get("digest")
    if stored is None:
        raise BaselineError(f"{where} has no digest (written by an older pytest-transfer, or edited by hand); "
                            f"{UPDATE_HINT}")
    if stored != document_digest(doc):
        raise BaselineError(f"{where} does not match its digest: it was edited by hand or damaged after it was "
                            f"written; {UPDATE_HINT}")


def check_consistency(stored: Baseline, y_true: Any, path: str | os.PathLike[str],
                      metric_value: Callable[[str, Any, Any], float]) -> None:
    """:class:`BaselineError` unless the baseline agrees with itself on the labels ``y_true`` of its split:
    ``correct`` is ``predictions == y_true`` and each stored metric is ``metric_value(name, y_true,
    predictions)`` (within ``METRIC_ATOL``)."""
    import numpy as np

    from .text import printable

    where = f"baseline file {printable(os.fspath(path))}"
    y = np.asarray(y_true)
    if len(y) != stored.n:
        return  # another split: check_identity names it
    wrong = int(np.count_nonzero(stored.correct != (stored.predictions == y)))
    if wrong:
        raise BaselineError(f"{where}: its per-sample correctness disagrees with its predictions on {wrong} of "
                            f"{stored.n} samples (edited by hand or damaged); {UPDATE_HINT}")
    for name, value in stored.metrics.items():
        try:
            again = metric_value(name, y, stored.predictions)
        except (KeyError, ValueError):
            continue  # a metric this version does not compute
        if abs(again - value) > METRIC_ATOL:
            raise BaselineError(f"{where}: it stores {name} = {value!r}, but its predictions give {again!r} "
                                f"(edited by hand or damaged); {UPDATE_HINT}")


def encode_bits(values: Any) -> str:
    """Booleans packed eight to a byte (first sample in the lowest bit), base64.

    >>> encode_bits([True, False, True])
    'BQ=='
    """
    import numpy as np

    return base64.b64encode(np.packbits(np.asarray(values, dtype=bool), bitorder="little").tobytes()).decode("ascii")


def decode_bits(text: str, n: int) -> np.ndarray:
    """The inverse of :func:`encode_bits` for ``n`` values (``ValueError`` on a wrong length or bad base64).

    >>> decode_bits("BQ==", 3).tolist()
    [True, False, True]
    """
    import numpy as np

    raw = base64.b64decode(text.encode("ascii"), validate=True)
    if len(raw) != (n + 7) // 8:
        raise ValueError(f"{len(raw)} bytes of bits for {n} samples (expected {(n + 7) // 8})")
    return np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=n, bitorder="little").astype(bool)


def _label_dtype(num_classes: int) -> str:
    return "<u1" if num_classes <= 1 << 8 else "<u2" if num_classes <= 1 << 16 else "<u4"


def encode_labels(values: Any, num_classes: int) -> dict[str, str]:
    """Integer labels in the smallest unsigned little-endian type that holds ``num_classes``, base64.

    >>> encode_labels([0, 2, 1], 3)
    {'dtype': '<u1', 'data': 'AAIB'}
    """
    import numpy as np

    dtype = _label_dtype(num_classes)
    return {"dtype": dtype, "data": base64.b64encode(np.asarray(values).astype(dtype).tobytes()).decode("ascii")}


def decode_labels(doc: Any, n: int) -> np.ndarray:
    """The inverse of :func:`encode_labels` (``ValueError`` on a wrong length, type or bad base64)."""
    import numpy as np

    if not isinstance(doc, Mapping) or doc.get("dtype") not in ("<u1", "<u2", "<u4") or "data" not in doc:
        raise ValueError("expected {'dtype': '<u1'|'<u2'|'<u4', 'data': base64}")
    raw = base64.b64decode(str(doc["data"]).encode("ascii"), validate=True)
    out = np.frombuffer(raw, dtype=doc["dtype"]).astype(np.int64)
    if len(out) != n:
        raise ValueError(f"{len(out)} labels for {n} samples")
    return out


@dataclass
class Baseline:
    """The stored result of one model on one dataset split, by one method."""

    model: str
    dataset: str
    method: str
    split: str
    metrics: dict[str, float]
    correct: np.ndarray
    predictions: np.ndarray
    num_classes: int
    dataset_fingerprint: str
    split_fingerprint: str
    test: str | None = None
    model_fingerprint: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.correct)

    def to_json(self) -> str:
        doc = {
            "schema": SCHEMA,
            "version": VERSION,
            "test": self.test,
            "model": self.model,
            "dataset": self.dataset,
            "method": self.method,
            "split": self.split,
            "n": self.n,
            "num_classes": self.num_classes,
            "metrics": {k: float(v) for k, v in sorted(self.metrics.items())},
            "dataset_fingerprint": self.dataset_fingerprint,
            "split_fingerprint": self.split_fingerprint,
            "model_fingerprint": self.model_fingerprint,
            "correct": encode_bits(self.correct),
            "predictions": encode_labels(self.predictions, self.num_classes),
            **({"extra": self.extra} if self.extra else {}),
        }
        doc["digest"] = document_digest(doc)
        return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str, path: str | os.PathLike[str] = "<baseline>") -> Baseline:
        """Parse a baseline file's text; every problem is a :class:`BaselineError` naming ``path``."""
        where = f"baseline file {path}"
        try:
            doc = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BaselineError(f"{where} is damaged (not valid JSON: {exc}); {UPDATE_HINT}") from None
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            raise BaselineError(
                f"{where} is not a pytest-transfer baseline (no \"schema\": \"{SCHEMA}\"); move the foreign file "
                f"out of {DIRNAME}/ or {UPDATE_HINT}"
            )
        if doc.get("version") != VERSION:
            raise BaselineError(
                f"{where} has version {doc.get('version')!r}, this pytest-transfer reads version {VERSION}; "
                f"upgrade pytest-transfer or {UPDATE_HINT}"
            )
        try:
            n = int(doc["n"])
            metrics = {str(k): float(v) for k, v in dict(doc["metrics"]).items()}
            baseline = cls(
                model=str(doc["model"]), dataset=str(doc["dataset"]), method=str(doc["method"]),
                split=str(doc["split"]), metrics=metrics, correct=decode_bits(str(doc["correct"]), n),
                predictions=decode_labels(doc["predictions"], n), num_classes=int(doc["num_classes"]),
                dataset_fingerprint=str(doc["dataset_fingerprint"]), split_fingerprint=str(doc["split_fingerprint"]),
                test=doc.get("test"), model_fingerprint=doc.get("model_fingerprint"), extra=dict(doc.get("extra", {})),
            )
        except KeyError as exc:
            raise BaselineError(f"{where} is damaged: the field {exc.args[0]!r} is missing; {UPDATE_HINT}") from None
        except (TypeError, ValueError, binascii.Error) as exc:
            raise BaselineError(f"{where} is damaged ({exc}); {UPDATE_HINT}") from None
        check_digest(doc, where)
        baseline.validate(where)
        return baseline

    def validate(self, where: str) -> None:
        """:class:`BaselineError` unless the values are possible: ``n >= 1``, at least one class, every metric
        finite and in [0, 1], predictions in ``0..num_classes-1``, ``accuracy`` = the mean of ``correct``."""
        import numpy as np

        problems = []
        if self.n < 1 or self.num_classes < 1:
            problems.append(f"{self.n} samples and {self.num_classes} classes")
        bad = {k: v for k, v in self.metrics.items() if not (math.isfinite(v) and 0.0 <= v <= 1.0)}
        if bad:
            problems.append(f"metrics outside [0, 1] or not finite: {bad}")
        if self.n and (self.predictions.min() < 0 or self.predictions.max() >= self.num_classes):
            problems.append(f"predictions outside 0..{self.num_classes - 1}")
        acc = self.metrics.get("accuracy")
        if acc is not None and self.n and abs(acc - float(np.mean(self.correct))) > METRIC_ATOL:
            problems.append(f"accuracy {acc!r} but {int(np.sum(self.correct))} of {self.n} samples marked correct "
                            f"({float(np.mean(self.correct))!r})")
        if problems:
            raise BaselineError(f"{where} holds impossible values ({'; '.join(problems)}); {UPDATE_HINT}")


def write_text_file(path: str | os.PathLike[str], text: str) -> Path:
    """Atomic write (:func:`~pytest_transfer.cache.atomic_write_text`) with the permissions of an ordinary file.

    The temporary file behind an atomic write is created ``0600``; baselines
    and reports are meant to be read by others (CI artifact servers, a web
    server), so the mode is set from the umask as ``open()`` would.
    """
    p = Path(path)
    atomic_write_text(p, text)
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(p, 0o666 & ~mask)
    return p


def _safe(part: str) -> str:
    return _UNSAFE.sub("_", part).strip("._") or "_"


def baseline_test_id(test: str | None, test_path: str | os.PathLike[str] | None) -> str | None:
    """``<file name>::<test name>``: how a baseline names its test, independent of the rootdir."""
    if not test:
        return None
    name = test.split("::", 1)[1] if "::" in test else test
    return f"{Path(test_path).name}::{name}" if test_path else name


def baseline_directory(test_path: str | os.PathLike[str] | None) -> Path:
    """``<test dir>/__transfer_baselines__/<test module>`` (or ``./__transfer_baselines__`` outside pytest)."""
    if test_path is None:
        return Path.cwd() / DIRNAME
    p = Path(test_path)
    return p.parent / DIRNAME / _safe(p.stem)


def _test_part(test: str) -> str:
    """The test's part of a file name: its id after the file, ``::`` as ``.``, made safe.

    When making it safe changed the id (``[a/b]`` and ``[a_b]`` would both become
    ``[a_b]``), ``~`` and a short hash of the raw id are appended, so different ids
    never share a file; ``~`` is itself unsafe, so no unchanged id can look like that.
    """
    raw = test.split("::", 1)[1] if "::" in test else test
    natural = raw.replace("::", ".")
    safe = _safe(natural)
    if safe != natural:
        safe += "~" + hashlib.blake2b(raw.encode(), digest_size=4).hexdigest()
    return safe


def baseline_path(*, test: str | None, test_path: str | os.PathLike[str] | None, model: str, dataset: str,
                  method: str = "linear_probe", split: str = "test") -> Path:
    """Where the baseline of ``test`` × ``model`` × ``dataset`` (× method × split) lives.

    The name is readable and unique per test id: an id that had to be changed to
    make a safe file name carries a short hash of the raw id (``test_b[a_b]~1c0d3f5e``).

    >>> baseline_path(test="tests/test_a.py::test_b[x]", test_path="tests/test_a.py",
    ...               model="torchvision:resnet18", dataset="digits").as_posix()
    'tests/__transfer_baselines__/test_a/test_b[x]--torchvision_resnet18--digits.json'
    """
    parts = [_test_part(test)] if test else []
    parts += [_safe(p) for p in (model, dataset)]
    if method != "linear_probe":
        parts.append(_safe(method))
    if split != "test":
        parts.append(_safe(split))
    name = "--".join(parts)
    if len(name) > _MAX_NAME:
        digest = hashlib.blake2b(name.encode(), digest_size=5).hexdigest()
        name = f"{name[: _MAX_NAME - 11]}-{digest}"
    return baseline_directory(test_path) / f"{name}.json"


def load_baseline(path: str | os.PathLike[str]) -> Baseline | None:
    """The baseline stored at ``path``, or ``None`` when there is none."""
    p = Path(path)
    if not p.is_file():
        if p.exists():
            raise BaselineError(f"baseline file {p} is not a regular file; remove it or choose another path")
        return None
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BaselineError(f"baseline file {p} cannot be read ({exc}); {UPDATE_HINT}") from None
    return Baseline.from_json(text, p)


def write_baseline(path: str | os.PathLike[str], baseline: Baseline) -> str:
    """Write atomically; ``"created"``, ``"updated"`` or ``"unchanged"`` (same bytes: nothing written).

    Never overwrites the baseline of another result whose own file name is this
    one (two ids that map to one name): that is a :class:`BaselineError`, and the
    file is left as it was. A damaged file, or a copy of another test's file under
    this result's name, is replaced.
    """
    p = Path(path)
    text = baseline.to_json()
    action = "created"
    if p.is_file():
        try:
            old = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            old = None
        if old == text:
            return "unchanged"
        if old is not None:
            _refuse_to_overwrite_an_owner(p, old, baseline)
        action = "updated"
    write_text_file(p, text)
    return action


def _identity(b: Baseline) -> tuple[Any, ...]:
    return b.test, b.model, b.dataset, b.method, b.split


def _refuse_to_overwrite_an_owner(path: Path, old_text: str, new: Baseline) -> None:
    try:
        stored = Baseline.from_json(old_text, path)
    except BaselineError:
        return  # damaged or foreign: nobody's baseline
    if _identity(stored) == _identity(new):
        return
    own = baseline_path(test=stored.test, test_path=None, model=stored.model, dataset=stored.dataset,
                        method=stored.method, split=stored.split)
    if own.name == path.name:
        raise BaselineError(
            f"baseline file {path} is the baseline of test {stored.test!r} (model {stored.model!r}, dataset "
            f"{stored.dataset!r}), whose name maps to the same file as test {new.test!r} (model {new.model!r}, "
            f"dataset {new.dataset!r}); it was not overwritten. Give one of them its own file with "
            "assert_no_regression(..., path=...) or rename the model or dataset"
        )


def check_identity(stored: Baseline, current: Baseline, path: str | os.PathLike[str], *,
                   check_test: bool = True) -> None:
    """Refuse another test's baseline, and a baseline of other data (changed dataset or split)."""
    for name in ("test", "model", "dataset", "method", "split")[0 if check_test else 1:]:
        want, got = getattr(current, name), getattr(stored, name)
        if want != got:
            raise BaselineError(
                f"baseline file {path} belongs to {name} {got!r}, not {want!r} (a foreign or copied file); "
                f"{UPDATE_HINT}"
            )
    if stored.dataset_fingerprint != current.dataset_fingerprint:
        raise BaselineError(
            f"baseline file {path}: dataset {current.dataset!r} changed since the baseline was written "
            f"(fingerprint {stored.dataset_fingerprint} then, {current.dataset_fingerprint} now), so its samples "
            f"cannot be paired; if the new data is intended, {UPDATE_HINT}"
        )
    if stored.split_fingerprint != current.split_fingerprint or stored.n != current.n:
        raise BaselineError(
            f"baseline file {path}: the {current.split!r} split of {current.dataset!r} changed ({stored.n} samples, "
            f"fingerprint {stored.split_fingerprint} then; {current.n}, {current.split_fingerprint} now: another "
            f"--transfer-seed or test_fraction?); use the baseline's split, or {UPDATE_HINT}"
        )
    if stored.num_classes != current.num_classes:
        raise BaselineError(f"baseline file {path}: {stored.num_classes} classes then, {current.num_classes} now; "
                            f"{UPDATE_HINT}")


def count_actions(measurements: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """How many distinct baseline files the measurements created, updated or left unchanged."""
    final: dict[str, str] = {}
    for m in measurements:
        details = m.get("details") or {}
        action, where = details.get("baseline_action"), details.get("baseline")
        if action and where:
            # a file created then compared again in the same run stays "created"
            final.setdefault(str(where), str(action))
    out = {"created": 0, "updated": 0, "unchanged": 0}
    for action in final.values():
        out[action] = out.get(action, 0) + 1
    return out


def summary_lines(measurements: Iterable[Mapping[str, Any]], *, update: bool) -> list[str]:
    """The terminal summary's lines about baselines (none when the run wrote or checked none)."""
    counts = count_actions(measurements)
    written = counts["created"] + counts["updated"]
    if update:
        return [f"pytest-transfer: --transfer-update-baselines wrote {written} baseline file(s) "
                f"({counts['created']} new, {counts['updated']} changed; {counts['unchanged']} already current)"]
    if counts["created"]:
        return [f"pytest-transfer: {counts['created']} baseline file(s) were missing and have been written under "
                f"{DIRNAME}/; check them in and re-run to compare against them"]
    return []

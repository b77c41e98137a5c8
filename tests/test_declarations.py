"""Each gate is declared once (pytest_transfer.declarations): the tables that list gates are built from it.

Checked here: the derived tables hold what the gates' contract says (written out by hand below, not read
from the declarations), the lazy exports agree with the ``TYPE_CHECKING`` block, the gate functions use
their declaration instead of repeating its strings, the table imports no heavy module, and adding one
declaration to a copy of the package is all it takes for its key to be valid in config, written as a
maximum by a suggestion run, exported lazily and labelled.
"""

from __future__ import annotations

import ast
import math
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

import pytest_transfer
from pytest_transfer import declarations, suggest, thresholds
from pytest_transfer.declarations import (
    GATES,
    NOISE,
    TRANSFER_ACCURACY,
    declare_gate,
    known_keys,
    label,
    lazy_exports,
    lower_is_better,
    threshold_keys,
)
from pytest_transfer.estimators import ESTIMATORS
from tests._helpers import probe_package_copy

PACKAGE = Path(pytest_transfer.__file__).resolve().parent
INF = math.inf
UNIT = (0.0, 1.0)

# the gates' own config keys and valid ranges as the docs (configuration page) state them
GATE_KEYS = {
    "transfer_accuracy": UNIT, "linear_probe_accuracy": UNIT, "knn_accuracy": UNIT, "finetune_accuracy": UNIT,
    "direct_accuracy": UNIT, "f1": UNIT, "noise_max_drop": UNIT, "corruption_max_drop": UNIT,
    "attack_min_accuracy": UNIT, "max_mce": (0.0, INF), "max_relative_mce": (-INF, INF), "layer_accuracy": UNIT,
    "regression_min_effect": UNIT,
}
# public gate functions and where they live
GATE_EXPORTS = {
    "assert_transfer_accuracy_above": "assertions", "assert_f1_above": "assertions",
    "assert_robust_under_noise": "assertions", "assert_robust_under_corruption": "gates.robustness",
    "assert_robust_under_attack": "gates.robustness", "assert_mce_below": "gates.robustness",
    "assert_transferability_above": "gates.transferability", "assert_ranks_above": "gates.transferability",
    "drop_in_performance": "gates.shift", "assert_layer_transfer_above": "gates.layers",
    "assert_no_regression": "gates.regression",
}


def test_config_keys_and_ranges_are_the_gates_and_the_estimators():
    assert thresholds.KNOWN_KEYS == known_keys()
    assert thresholds.KNOWN_KEYS == {**GATE_KEYS, **{name: e.bounds for name, e in ESTIMATORS.items()}}


def test_maxima_are_the_drops_errors_and_the_regression_effect():
    assert suggest.LOWER_IS_BETTER == lower_is_better()
    assert suggest.LOWER_IS_BETTER == ({"noise_max_drop", "corruption_max_drop", "max_mce", "max_relative_mce",
                                        "regression_min_effect"}
                                       | {name for name, e in ESTIMATORS.items() if not e.higher_is_better})
    assert suggest.placeholder("noise_max_drop").value == 1.0 and suggest.placeholder("f1").value == 0.0


def test_every_gate_function_is_exported_lazily_from_its_module():
    assert lazy_exports() == GATE_EXPORTS
    lazy = pytest_transfer._LAZY
    assert {name: lazy[name] for name in GATE_EXPORTS} == GATE_EXPORTS
    for name, module in GATE_EXPORTS.items():
        fn = getattr(pytest_transfer, name)
        assert fn.__module__ == f"pytest_transfer.{module}" and fn.__name__ == name


def test_the_type_checking_block_agrees_with_the_lazy_table():
    tree = ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    block = next(s for s in tree.body if isinstance(s, ast.If) and "TYPE_CHECKING" in ast.unparse(s.test))
    imported = {alias.name: node.module for node in ast.walk(block) if isinstance(node, ast.ImportFrom)
                for alias in node.names}
    assert imported == pytest_transfer._LAZY, "add the name to (or remove it from) __init__.py's TYPE_CHECKING block"


def test_every_transfer_method_has_its_accuracy_key():
    keys = {k.name for k in TRANSFER_ACCURACY.keys}
    assert {f"{m}_accuracy" for m in declarations.TRANSFER_METHODS} | {TRANSFER_ACCURACY.key} == keys
    assert list(declarations.TRANSFER_METHODS) == ["linear_probe", "knn", "direct", "finetune"]


def test_gate_names_are_measurement_names_and_labels_come_from_the_declaration():
    assert set(GATES) == {"transfer_accuracy", "f1", "noise_max_drop", "corruption_max_drop", "max_mce",
                          "attack_min_accuracy", "transferability", "ranks_above", "shift_max_drop",
                          "layer_transfer", "regression"}
    assert label("noise_max_drop") == NOISE.label == "Accuracy drop under Gaussian noise"
    assert label("logme") == "LogME" and label("not_a_gate") == "not_a_gate"
    with pytest.raises(ValueError, match=r"shift_max_drop.*no config key"):
        _ = GATES["shift_max_drop"].key


def test_a_key_declared_twice_must_be_declared_the_same_way():
    # knn_accuracy is both a transfer method's key and an estimator's: one range, one direction
    assert threshold_keys()["knn_accuracy"].bounds == UNIT
    clash = declare_gate("other", "Other", higher_is_better=False, export="x", module="m", keys={"f1": UNIT})
    with pytest.raises(ValueError, match=r"threshold key 'f1' is declared twice, differently.*'f1'.*'other'"):
        threshold_keys({**GATES, "other": clash})


def _string_keywords(path: Path) -> list[str]:
    """``gate="..."`` and string constants inside ``keys=(...)`` of calls in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        for kw in node.keywords if isinstance(node, ast.Call) else ():
            if kw.arg == "gate" and isinstance(kw.value, ast.Constant):
                found.append(f"{path.name}:{kw.value.lineno} gate={kw.value.value!r}")
            if kw.arg == "keys":  # a tuple, or a name bound to one: each element that is a string literal
                elements = kw.value.elts if isinstance(kw.value, ast.Tuple) else [kw.value]
                found += [f"{path.name}:{c.lineno} keys=(... {c.value!r} ...)" for c in elements
                          if isinstance(c, ast.Constant) and isinstance(c.value, str)]
    return found


def test_gate_functions_name_their_gate_and_keys_through_the_declaration():
    paths = [PACKAGE / "assertions.py", *sorted((PACKAGE / "gates").glob("*.py"))]
    found = [hit for p in paths if p.name != "core.py" for hit in _string_keywords(p)]
    assert not found, "use the gate's declaration (declarations.NOISE.name, .key, ...):\n" + "\n".join(found)


def test_the_string_check_sees_a_repeated_literal(tmp_path):
    src = tmp_path / "g.py"
    src.write_text('open_gate(m, d, keys=("noise_max_drop",))\ng.finish(gate="noise_max_drop")\n'
                   'g.finish(gate=NOISE.name, keys=(f"{x}_accuracy", NOISE.key))\n')
    assert _string_keywords(src) == ["g.py:1 keys=(... 'noise_max_drop' ...)", "g.py:2 gate='noise_max_drop'"]


def test_the_declarations_import_only_the_standard_library():
    for name in ("declarations.py", "estimators.py"):
        tree = ast.parse((PACKAGE / name).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [f"pytest_transfer.{node.module}" if node.level else node.module]
            else:
                continue
            for module in modules:  # the standard library, or the estimators' table (standard library too)
                assert module.split(".")[0] in sys.stdlib_module_names or module == "pytest_transfer.estimators", (
                    f"{name} imports {module}")


ADDED = '''
SHARPNESS = declare_gate("sharpness_max", "Sharpness of the loss", higher_is_better=False,
                         export="assert_sharpness_below", module="gates.sharpness",
                         keys={"sharpness_max": (0.0, INF)})
'''

PROBE = textwrap.dedent("""
    import json, sys
    import pytest
    import pytest_transfer
    from pytest_transfer import declarations, suggest, thresholds

    out = {"file": pytest_transfer.__file__, "known": thresholds.KNOWN_KEYS.get("sharpness_max"),
           "maximum": "sharpness_max" in suggest.LOWER_IS_BETTER,
           "placeholder": suggest.placeholder("sharpness_max").value,
           "label": declarations.label("sharpness_max"),
           "exported": pytest_transfer.assert_sharpness_below() if "assert_sharpness_below" in dir(pytest_transfer)
                       else None}
    for value in (2.5, -1):
        try:
            table = thresholds.ThresholdTable({"*": {"*": {"sharpness_max": value}}})
            out["read"] = table.lookup("m", "d", "sharpness_max").value
        except pytest.UsageError as exc:
            out["refused"] = str(exc)
    out["heavy"] = sorted(m for m in ("numpy", "torch") if m in sys.modules)
    print(json.dumps(out))
""")


def _probe(root: Path) -> dict:
    return probe_package_copy(root, PROBE)


def test_adding_a_gate_is_one_declaration_plus_its_function(tmp_path):
    copy = tmp_path / "pytest_transfer"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = _probe(tmp_path)  # the copy as it is: the key is unknown and refused
    assert before["file"] == str(copy / "__init__.py") and before["known"] is None and before["exported"] is None
    assert "unknown threshold key 'sharpness_max'" in before["refused"]

    # the one place: a declaration, and the gate's function in the module it names
    table = (copy / "declarations.py").read_text(encoding="utf-8")
    head = "GATES: dict[str, GateDeclaration] = {g.name: g for g in (\n"
    assert table.count(head) == 1
    (copy / "declarations.py").write_text(table.replace(head, ADDED + "\n" + head + "    SHARPNESS,\n"),
                                          encoding="utf-8")
    (copy / "gates" / "sharpness.py").write_text("def assert_sharpness_below():\n    return 'measured'\n",
                                                encoding="utf-8")
    after = _probe(tmp_path)
    assert after["known"] == [0.0, INF] and after["read"] == 2.5
    assert "sharpness_max = -1 is outside the metric's range [0.0, inf]" in after["refused"]
    assert after["maximum"] and after["placeholder"] == INF  # a suggestion run writes it as a maximum
    assert after["label"] == "Sharpness of the loss" and after["exported"] == "measured"
    assert after["heavy"] == []
    assert "sharpness_max" not in thresholds.KNOWN_KEYS and "sharpness_max" not in declarations.GATES  # this process

"""The one file-hash memo and the one code identity (pytest_transfer.fingerprints), against hashlib."""

from __future__ import annotations

import hashlib
import importlib
import os
import sys

import pytest

from pytest_transfer.fingerprints import code_identity, file_digest


def test_file_digest_is_hashlib_s_and_follows_an_edit(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(os.urandom(3 * (1 << 20) + 17))  # several read blocks and a partial one
    data = path.read_bytes()
    assert file_digest(path, "sha256") == hashlib.sha256(data).hexdigest()
    assert file_digest(str(path)) == hashlib.blake2b(data, digest_size=16).hexdigest()
    path.write_bytes(data[:-1])  # another size: another key of the memo, so the file is read again
    assert file_digest(path) == hashlib.blake2b(data[:-1], digest_size=16).hexdigest()
    with pytest.raises(ValueError, match="algorithm: expected one of blake2b, sha256"):
        file_digest(path, "md5")


def test_code_identity_covers_the_defining_file(tmp_path, monkeypatch):
    module = tmp_path / "fp_probe_mod.py"
    module.write_text("def helper():\n    return 1\n\n\ndef fit():\n    return helper()\n\n\nclass Net:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = importlib.import_module("fp_probe_mod")
    try:
        first = code_identity(mod.fit, mod.Net)
        assert first == code_identity(mod.Net, mod.fit, mod.fit)  # order and repeats do not matter
        assert first != code_identity(mod.fit) != code_identity(mod.Net)
        assert code_identity(mod.Net()) == code_identity(mod.Net)  # an instance stands for its class
        stat = module.stat()
        module.write_text(module.read_text().replace("return 1", "return 2"))  # a helper that fit calls
        os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        assert code_identity(mod.fit, mod.Net) != first
    finally:
        sys.modules.pop("fp_probe_mod", None)


def test_code_identity_of_code_without_a_file_is_its_name():
    namespace: dict = {}
    exec("def made():\n    return 0\n", namespace)  # no source file: the name alone
    assert code_identity(namespace["made"]) == code_identity(namespace["made"])
    assert code_identity(len) != code_identity(namespace["made"])

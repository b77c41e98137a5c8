"""The local Hugging Face cache, read strictly offline (used by the ``timm:`` and ``hf:`` sources)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def hf_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where Hugging Face files are looked for, resolved now (not when ``huggingface_hub`` was imported).

    ``cache_dir`` if given, else ``$HF_HUB_CACHE``, ``$HUGGINGFACE_HUB_CACHE``,
    ``$HF_HOME/hub``, ``$XDG_CACHE_HOME/huggingface/hub``, and finally
    ``~/.cache/huggingface/hub``: huggingface_hub's own order.
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.environ[var])).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.environ["HF_HOME"])).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "huggingface" / "hub"


def repo_folder(repo_id: str, cache_dir: Path) -> Path:
    """The folder huggingface_hub keeps a model repository in: ``<cache>/models--<org>--<name>``."""
    return cache_dir / ("models--" + repo_id.replace("/", "--"))


@contextmanager
def hf_offline() -> Iterator[None]:
    """Force huggingface_hub's offline mode for the block: no request leaves the machine.

    Sets ``HF_HUB_OFFLINE=1`` and huggingface_hub's own flag (read once at
    its import), and puts both back afterwards.
    """
    from huggingface_hub import constants

    before_env, before_flag = os.environ.get("HF_HUB_OFFLINE"), constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before_flag
        if before_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = before_env


def fill_hint(python: str, cache: Path, folder: Path) -> str:
    """How to fill the cache: the command to run where there is network, and where to copy its result."""
    return (f"pytest-transfer never downloads. On a machine with network access run `python -c \"{python}\"` and "
            f"copy its {folder.name} folder (from its $HF_HOME/hub, by default ~/.cache/huggingface/hub) into "
            f"{cache}, or point HF_HOME / HF_HUB_CACHE at a cache that has it")

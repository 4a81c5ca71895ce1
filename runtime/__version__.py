"""The runtime's version and the name it is distributed under: a leaf, imported anywhere."""

__version__ = "0.1.0"

DISTRIBUTION = "forge-for-python"
"""The distribution's name on an index. "forge-runtime" and "runtime" belong to
unrelated projects on the public registry; see docs/development.md."""

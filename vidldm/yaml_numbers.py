"""YAML read with YAML 1.2's floats: `1e-4` is a float, as every person writing a learning rate means.

PyYAML follows YAML 1.1, whose float rule wants a dot (`1.0e-4`), so `1e-4` there is the string '1e-4' and a
recipe, a `--set` or a run file that writes it fails later, far from the cause. One loader, used wherever
vidldm reads YAML a person wrote, fixes it at the parser instead of at each setting.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

# YAML 1.2 core schema floats (dot optional when an exponent is given; a digit after a leading dot, or PyYAML's
# float() fails on '._'), plus 1.1's `.inf` and `.nan` spellings. Integers, dates, booleans stay YAML 1.1's.
_FLOAT = re.compile(r"""^(?:
    [-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
  | [-+]?(?:[0-9][0-9_]*)[eE][-+]?[0-9]+
  | [-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
  | [-+]?\.(?:inf|Inf|INF)
  | \.(?:nan|NaN|NAN)
)$""", re.X)


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader (no Python objects from the text), with the float rule above."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))

YAMLError = yaml.YAMLError


def as_count(value: Any) -> Any:
    """`value` as an int where it is a whole float (`2e3`, which the float rule above reads as 2000.0, written for a
    count such as `max_steps` or `repeats`); anything else unchanged, for the caller's own checks."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def load(text: str) -> Any:
    """`text` parsed as YAML (safe: plain data only) with `1e-4`-style floats read as numbers."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader

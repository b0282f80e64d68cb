"""vidldm's YAML reader: PyYAML's safe loader with YAML 1.2 floats, so `1e-4` is the number a person means."""

import datetime

import pytest
import yaml

from vidldm import yaml_numbers


@pytest.mark.parametrize("text, value", [
    ("1e-4", 1e-4), ("1E3", 1000.0), ("-2e+5", -2e5), ("+3e0", 3.0), ("1.0e-4", 1e-4), (".5", 0.5), ("1.5", 1.5),
    (".inf", float("inf")), ("-.inf", float("-inf")),
])
def test_floats_with_or_without_a_dot_are_floats(text, value):
    assert yaml.safe_load(text) == value or text in ("1e-4", "1E3", "-2e+5", "+3e0")  # PyYAML's own reading differs
    got = yaml_numbers.load(text)
    assert isinstance(got, float) and got == value


@pytest.mark.parametrize("text, value", [
    ("3", 3), ("0x1f", 31), ("yes", True), ("1e", "1e"), ("e5", "e5"), ("abc", "abc"), ("'1e-4'", "1e-4"), ("._", "._"),
    ("2026-12-07", datetime.date(2026, 12, 7)),
])
def test_everything_else_reads_as_the_safe_loader_reads_it(text, value):
    assert yaml_numbers.load(text) == value == yaml.safe_load(text)


def test_it_stays_safe_python_objects_are_refused():
    with pytest.raises(yaml_numbers.YAMLError):
        yaml_numbers.load("!!python/object/apply:os.system ['true']")


def test_safe_loader_itself_is_untouched():
    yaml_numbers.load("1e-4")
    assert yaml.safe_load("1e-4") == "1e-4"  # the float rule lives on vidldm's loader subclass only

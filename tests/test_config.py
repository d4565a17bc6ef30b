"""--set overrides: typed parsing, validation, helpful errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from marlbench.config import build_config, parse_assignments
from marlbench.errors import ConfigError, UnknownNameError


@dataclass
class Cfg:
    hidden: int = 8
    lr: float = 1e-3
    flag: bool = False
    mode: Literal["a", "b"] = "a"
    target: float | None = None
    sizes: tuple[int, ...] = (1, 2)

    def __post_init__(self):
        if self.hidden <= 0:
            raise ValueError("hidden must be positive")


def test_values_are_parsed_by_annotation():
    cfg = build_config(Cfg, {"hidden": 4}, parse_assignments(
        ["lr=0.5", "flag=true", "mode=b", "target=none", "sizes=3,4,5"]))
    assert cfg == Cfg(hidden=4, lr=0.5, flag=True, mode="b", target=None, sizes=(3, 4, 5))
    assert build_config(Cfg, {"target": "2.5"}).target == 2.5


@pytest.mark.parametrize("item,match", [
    ("hiden=3", "Did you mean 'hidden'"),
    ("hidden=three", "hidden expects int"),
    ("flag=maybe", "flag expects bool"),
    ("mode=c", "mode must be one of a, b"),
    ("hidden=-1", "hidden must be positive"),
])
def test_bad_overrides_are_rejected(item, match):
    with pytest.raises((ConfigError, UnknownNameError), match=match):
        build_config(Cfg, parse_assignments([item]))


def test_assignment_syntax():
    with pytest.raises(ConfigError, match="key=value"):
        parse_assignments(["hidden"])

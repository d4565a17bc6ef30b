"""--set overrides: typed parsing, validation, helpful errors."""

from __future__ import annotations

from dataclasses import dataclass, field
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


# -- checks by meaning ----------------------------------------------------------------------------


@dataclass
class Meaning:
    lr: float = 1e-3
    grad_clip: float = 1.0
    gamma: float = 0.99
    tau: float = 0.005
    dropout: float = 0.1
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    steps: int = 10
    offset: float = -3.0  # no rule: any finite value
    share: float = field(default=0.5, metadata={"check": "unit"})  # named by metadata


@pytest.mark.parametrize("item, match", [
    ("lr=nan", "lr must be finite"), ("lr=-1e-3", "lr must be > 0"),
    ("grad_clip=-1", "grad_clip must be > 0"), ("grad_clip=inf", "grad_clip must be finite"),
    ("gamma=1.01", r"gamma must be in \[0, 1\]"), ("tau=0", r"tau must be in \(0, 1\]"),
    ("dropout=1", r"dropout must be in \[0, 1\)"), ("weight_decay=-0.1", "must be >= 0"),
    ("betas=0.9,1.0", r"betas must be in \[0, 1\)"), ("steps=0", "steps must be > 0"),
    ("offset=nan", "offset must be finite"), ("share=2", r"share must be in \[0, 1\]"),
])
def test_fields_are_checked_by_meaning(item, match):
    with pytest.raises(ConfigError, match=match):
        build_config(Meaning, parse_assignments([item]))


def test_edges_of_each_range_pass():
    cfg = build_config(Meaning, parse_assignments(
        ["gamma=1", "tau=1", "dropout=0", "weight_decay=0", "offset=-1e9", "share=0"]))
    assert (cfg.gamma, cfg.tau, cfg.offset) == (1.0, 1.0, -1e9)


def test_every_registered_algorithm_passes_its_own_defaults(reg):
    """The rule table never rejects a default (or a preset) of an algorithm in the registry."""
    for spec, _ in reg.algorithms.values():
        build_config(spec.config_cls, spec.preset)  # raises on a rule that is too strict


def test_unknown_check_names_are_refused():
    @dataclass
    class Bad:
        x: float = field(default=1.0, metadata={"check": "positve"})

    with pytest.raises(ConfigError, match="unknown check 'positve'"):
        build_config(Bad)

"""The configs of BC, ICQ, OMAR, OMIGA and MADT check every numeric field by its meaning with
the shared helper (marlbench.config.validate_config), also when built directly in Python."""

from __future__ import annotations

import math
import re

import pytest

from marlbench.algorithms.bc import BCConfig
from marlbench.algorithms.icq import ICQConfig
from marlbench.algorithms.madt import MADTConfig
from marlbench.algorithms.omar import OMARConfig
from marlbench.algorithms.omiga import OMIGAConfig
from marlbench.errors import ConfigError

CASES = [  # (config, field, bad value, message); the first of each was accepted before
    (BCConfig, "grad_clip", -1.0, "grad_clip must be > 0"),
    (BCConfig, "lr", math.nan, "lr must be finite"),
    (ICQConfig, "rms_alpha", 1.5, "rms_alpha must be in [0, 1]"),
    (ICQConfig, "beta", 0.0, "beta must be > 0"),  # a temperature (divisor), not a weight
    (ICQConfig, "td_lambda", -0.1, "td_lambda must be in [0, 1]"),
    (OMARConfig, "omar_mu", math.inf, "omar_mu must be finite"),
    (OMARConfig, "tau", 0.0, "tau must be in (0, 1]"),
    (OMIGAConfig, "z_clip", math.nan, "z_clip must be finite"),
    (OMIGAConfig, "alpha", 0.0, "alpha must be > 0"),  # a divisor
    (MADTConfig, "target_scale", -1.0, "target_scale must be > 0"),
    (MADTConfig, "betas", (0.9, 1.0), "betas must be in [0, 1)"),
]


@pytest.mark.parametrize("cls", [BCConfig, ICQConfig, OMARConfig, OMIGAConfig, MADTConfig])
def test_defaults_are_valid(cls):
    cls()


@pytest.mark.parametrize(("cls", "name", "value", "message"), CASES,
                         ids=[f"{c.__name__}-{n}" for c, n, _, _ in CASES])
def test_bad_values_are_refused_by_meaning(cls, name, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        cls(**{name: value})

"""Every algorithm's config checks every numeric field by its meaning with the shared helper
(marlbench.config.validate_config), also when built directly in Python."""

from __future__ import annotations

import math
import re

import pytest

from marlbench.algorithms.alberdice import AlberDICEConfig
from marlbench.algorithms.bc import BCConfig
from marlbench.algorithms.icq import ICQConfig
from marlbench.algorithms.mads4 import MADS4Config
from marlbench.algorithms.mads4_finetune import MADS4FinetuneConfig
from marlbench.algorithms.madt import MADTConfig
from marlbench.algorithms.madtkd import MADTKDConfig
from marlbench.algorithms.mappo import MAPPOConfig
from marlbench.algorithms.omar import OMARConfig
from marlbench.algorithms.omiga import OMIGAConfig
from marlbench.algorithms.optidice import OptiDICEConfig
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
    (MADS4Config, "lr", math.nan, "lr must be finite"),
    (MADS4Config, "embed_dim", 0, "embed_dim must be > 0"),
    (MADS4FinetuneConfig, "actor_lr", -1e-4, "actor_lr must be >= 0"),  # 0 (frozen) is fine
    (MADS4FinetuneConfig, "gae_lambda", 1.5, "gae_lambda must be in [0, 1]"),
    (MADTKDConfig, "temperature", 0.0, "temperature must be > 0"),
    (MAPPOConfig, "entropy_coef", -0.1, "entropy_coef must be >= 0"),
    (AlberDICEConfig, "ratio_max", 0.0, "ratio_max must be > 0"),
    (AlberDICEConfig, "cql_coeff", -0.1, "cql_coeff must be >= 0"),
    (OptiDICEConfig, "grad_penalty", -1.0, "grad_penalty must be >= 0"),
]
ALL = [BCConfig, ICQConfig, OMARConfig, OMIGAConfig, MADTConfig, MADS4Config,
       MADS4FinetuneConfig, MADTKDConfig, MAPPOConfig, AlberDICEConfig, OptiDICEConfig]


@pytest.mark.parametrize("cls", ALL)
def test_defaults_are_valid(cls):
    cls()
    cls(**{"actor_lr": 0.0} if cls is MADS4FinetuneConfig else {})


@pytest.mark.parametrize(("cls", "name", "value", "message"), CASES,
                         ids=[f"{c.__name__}-{n}" for c, n, _, _ in CASES])
def test_bad_values_are_refused_by_meaning(cls, name, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        cls(**{name: value})


@pytest.mark.parametrize("cls", [AlberDICEConfig, OptiDICEConfig])
def test_dice_discounts_stay_below_one(cls):
    with pytest.raises(ValueError, match="gamma must be < 1"):
        cls(gamma=1.0)

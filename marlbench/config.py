"""Algorithm configs: dataclasses, overridden from the command line with ``--set key=value``.

Values are parsed according to the field's annotation (int, float, bool, str, Literal, Optional,
tuples); the dataclass's own `__post_init__` runs on the result, and then `validate_config`
checks every numeric field by its meaning, so a bad value is rejected before any work starts.

Checks by meaning (`validate_config`): every float must be finite, and a field gets the range
its meaning requires: named by ``metadata={"check": ...}`` on the dataclass field, otherwise
by the first rule of `FIELD_RULES` whose pattern matches the field name:

    positive       > 0        learning rates, epsilons, clips, temperatures, sizes, counts
    non-negative   >= 0       weight decay, loss coefficients and weights, warm-up lengths
    unit           in [0, 1]  discounts (gamma), lambdas, mixing coefficients
    unit-open      in (0, 1]  Polyak rates (tau)
    fraction       in [0, 1)  dropout, Adam betas
    finite         any finite value (also what an unmatched numeric field gets)

A plugin's config is checked the same way; its author names a check with
``x: float = field(default=0.5, metadata={"check": "unit"})`` where the name says nothing.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from marlbench.errors import ConfigError, UnknownNameError

_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


MAX_SEED = 2**32 - 1  # numpy's legacy seeding range; torch and HDF5 attributes hold it too


def check_seed(seed: Any, flag: str = "--seed") -> int:
    """A seed is an integer in [0, 2**32 - 1]; anything else is a one-line `ConfigError`."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"{flag} must be an integer from 0 to {MAX_SEED} (got {seed!r})")
    return seed


def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _parse(value: Any, tp: Any, key: str) -> Any:
    if not isinstance(value, str):
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value.lower() in ("none", "null") and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _parse(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"bad value for {key}")
    if origin is typing.Literal:
        for a in args:
            if str(a) == value:
                return a
        raise ConfigError(f"{key} must be one of {', '.join(map(str, args))}; got {value!r}")
    if origin is tuple:
        parts = [p for p in value.strip("()[] ").split(",") if p.strip()]
        inner = args[0] if args else str
        return tuple(_parse(p.strip(), inner, key) for p in parts)
    try:
        if tp is bool:
            if value.lower() in _TRUE:
                return True
            if value.lower() in _FALSE:
                return False
            raise ValueError
        if tp is int:
            return int(value)
        if tp is float:
            return float(value)
        if tp is str:
            return value
    except ValueError:
        raise ConfigError(f"{key} expects {tp.__name__}, got {value!r}") from None
    return json.loads(value)


def build_config(cls: type, *layers: Mapping[str, Any]) -> Any:
    """Instantiate dataclass `cls` from defaults overridden by each mapping in turn."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    values: dict[str, Any] = {}
    for layer in layers:
        for key, raw in layer.items():
            if key not in names:
                raise UnknownNameError(f"option for {cls.__qualname__}", key, names)
            values[key] = _parse(raw, hints[key], key)
    try:
        config = cls(**values)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"invalid {cls.__qualname__}: {exc}") from None
    validate_config(config)
    return config


# Checks by field meaning: (name pattern, check), first match wins; see the module docstring.
FIELD_RULES: tuple[tuple[str, str], ...] = (
    (r"dropout|.*_dropout|betas", "fraction"),
    (r"gamma|.*lambda|.*_coe|rms_alpha", "unit"),
    (r"tau", "unit-open"),
    (r"weight_decay|.*_coef|.*_reg|.*_weight|warmup_steps|teacher_steps|.*_warmup|cql_alpha"
     r"|alpha|beta|gain", "non-negative"),
    (r"lr|.*_lr|eps|.*_eps|.*_temp|temperature|grad_clip|max_grad_norm|clip|.*_clip"
     r"|huber_delta|.*_sigma|target_scale|beta_q", "positive"),
    (r"steps|hidden|.*_hidden|layers|.*_layers|dim|.*_dim|d_model|d_state|heads|mlp_ratio|n_ssm"
     r"|batch_size|epochs|n_envs|rollout|minibatches|context|.*_interval|.*_iters"
     r"|.*_num_samples|.*_slice|.*_size", "positive"),
)

_CHECKS = {
    "positive": (lambda v: v > 0, "> 0"),
    "non-negative": (lambda v: v >= 0, ">= 0"),
    "unit": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "unit-open": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "fraction": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "finite": (lambda v: True, "finite"),
}


def field_check(f: dataclasses.Field) -> str:
    """The check a config field gets: its metadata's, else the first matching rule's."""
    check = f.metadata.get("check") if f.metadata else None
    if check is not None:
        if check not in _CHECKS:
            raise ConfigError(f"field {f.name}: unknown check {check!r} (one of "
                              f"{', '.join(_CHECKS)})")
        return check
    for pattern, rule in FIELD_RULES:
        if re.fullmatch(pattern, f.name):
            return rule
    return "finite"


def validate_config(config: Any) -> None:
    """Check every numeric field of dataclass `config` by its meaning (see module docstring);
    raises `ConfigError` naming the field, the rule and the value."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        values = value if isinstance(value, (tuple, list)) else (value,)
        numbers = [v for v in values
                   if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if not numbers:
            continue
        check = field_check(f)
        test, text = _CHECKS[check]
        for v in numbers:
            if not math.isfinite(v):
                raise ConfigError(f"{f.name} must be finite (got {value!r})")
            if not test(v):
                raise ConfigError(f"{f.name} must be {text} (got {value!r}; {check} by "
                                  "meaning, see marlbench.config)")


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)

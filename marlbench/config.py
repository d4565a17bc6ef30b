"""Algorithm configs: dataclasses, overridden from the command line with ``--set key=value``.

Values are parsed according to the field's annotation (int, float, bool, str, Literal, Optional,
tuples), and the dataclass's own `__post_init__` validation runs on the result, so a bad value
is rejected before any work starts.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from marlbench.errors import ConfigError, UnknownNameError

_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


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
        return cls(**values)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"invalid {cls.__qualname__}: {exc}") from None


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)

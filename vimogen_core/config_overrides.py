"""One way to override a frozen config dataclass: from `key=value` strings or a (nested) mapping.

Used by curation (params.yaml sections read by `read_params`, Dagster `overrides_json`) and by training (`--set`,
Dagster run config, benchmarks; `vimogen_core.train.config.apply_overrides` is a thin wrapper
that names its source `--set` and sends `model.X` to `TrainConfig.model_overrides`).

- Strings given for a bool/int/float/tuple/dict field are parsed by the field's type
  (`bf16=off`, `steps=7`, `noisy_sources=a,b`, JSON for tuples and dicts); other values are kept.
- A mapping given for a dataclass-valued field overrides that dataclass's fields in turn.
- JSON/YAML lists become tuples where the field holds a tuple.
- An unknown key is an error that names the key and where it came from (`where`).
"""
from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

PARSED_SCALARS = (bool, int, float)


def apply_overrides(config, overrides: Mapping[str, Any] | Iterable[str], where: str, *, kind: str = "setting",
                    prefixed: Mapping[str, str] | None = None):
    """`config` with fields replaced from `overrides` (a mapping, or `key=value` strings).

    `where` names the source in every error; `kind` names what a key is ("unknown {kind} 'x'").
    `prefixed` maps a key prefix to a dict field: with `{"model": "model_overrides"}`,
    `model.num_layers=3` sets `config.model_overrides["num_layers"] = 3` (strings read as JSON).
    """
    if isinstance(overrides, Mapping):
        items = list(overrides.items())
    else:
        items = [split_assignment(text, where) for text in overrides]
    fields = {f.name for f in dataclasses.fields(config)}
    try:
        hints = typing.get_type_hints(type(config))
    except (NameError, TypeError):  # an annotation that cannot be resolved here: values kept as given
        hints = {}
    prefixed = dict(prefixed or {})
    changes: dict[str, Any] = {}
    for key, value in items:
        prefix, dot, sub_key = key.partition(".")
        if dot and prefix in prefixed:
            target = prefixed[prefix]
            current = dict(changes.get(target, getattr(config, target)))
            current[sub_key] = json.loads(value) if isinstance(value, str) else value
            changes[target] = current
            continue
        if key not in fields:
            raise ValueError(f"{where}: unknown {kind} {key!r}; known: {', '.join(sorted(fields))}")
        current = getattr(config, key)
        hint = hints.get(key)
        if dataclasses.is_dataclass(current) and isinstance(value, Mapping):
            value = apply_overrides(current, value, f"{where}.{key}", kind=kind)
        elif isinstance(value, str) and _parsable(hint):
            value = parse_value(value, hint, f"{where} {key}")
        elif isinstance(current, tuple) and isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        changes[key] = value
    for target in prefixed.values():
        if target in changes and changes[target] == getattr(config, target):
            del changes[target]  # nothing changed: keep the config's own dict
    return dataclasses.replace(config, **changes)


def split_assignment(text: str, where: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"{where} expects key=value, got {text!r}")
    return key.strip(), value.strip()


def _parsable(hint) -> bool:
    return hint in PARSED_SCALARS or hint is dict or typing.get_origin(hint) is tuple


def parse_value(text: str, hint, where: str):
    """A `key=value` string as the field's type; `where` ("--set steps") starts every error."""
    if hint is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{where}: expected true/false, got {text!r}")
    if hint in (int, float, str):
        try:
            return hint(text)
        except ValueError:
            raise ValueError(f"{where}: expected {hint.__name__}, got {text!r}") from None
    if typing.get_origin(hint) is tuple or hint is dict:
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            # A bare comma list for tuples of strings: noisy_sources=a,b
            value = [part.strip() for part in text.split(",") if part.strip()]
        if hint is dict:
            if not isinstance(value, dict):
                raise ValueError(f"{where}: expected a JSON object, got {text!r}")
            return value
        return tuple(value) if isinstance(value, list) else (value,)
    raise ValueError(f"{where}: cannot parse a value of type {hint}")


def read_params(path: str | Path | None, section: str) -> dict[str, Any]:
    """The mapping under `section` of a params.yaml file ({} without a file or section), the
    settings the DVC stage and the Dagster asset of one step share."""
    if path is None:
        return {}
    import yaml

    try:
        params = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err})") from err
    value = params.get(section, {}) or {}
    if not isinstance(value, dict):
        raise ValueError(f"{path}: section {section!r} must be a mapping")
    return value

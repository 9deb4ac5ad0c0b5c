"""Configuration as data: dataclass defaults, then a YAML file, then ``key=value`` overrides.

Each setting is declared once with :func:`setting`: its default, its help text (what
``--help`` shows) and what kind of setting it is — ``operational`` (changes how a run
executes, not what it computes: left out of result hashes) or ``cache`` (determines a
training job's decoded-image cache). The resolved config is frozen before use and written
beside a job's outputs, so every run can be reproduced from that file alone.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import types
import typing
from typing import Any, TypeVar

import yaml

from . import storage
from .errors import ConfigError

C = TypeVar("C")


def setting(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    factory: Any = dataclasses.MISSING,
    operational: bool = False,
    cache: bool = False,
    choices: tuple = (),
    omit_default: bool = False,
) -> Any:
    """A config dataclass field that documents itself.

    Args:
        default: The default; omit it for a required setting.
        help: One line for ``--help``: what the setting means (and what an unset value does).
        factory: A default factory instead of ``default`` (lists, mappings).
        operational: How the run executes (workers, batch sizes, address), not what it
            computes: excluded from the hashes that decide whether a result is up to date.
        cache: Part of the key of a training job's decoded-image cache.
        choices: The values allowed, when only some are (or a callable returning them, for
            a registry such as the engines').
        omit_default: Left out of the result hash while at its default: a setting added
            after results existed keeps their hashes (and stage keys) as they were.
    """
    metadata = {"help": help, "operational": operational, "cache": cache, "choices": choices,
                "omit_default": omit_default}
    return dataclasses.field(default=default, default_factory=factory, metadata=metadata)


def settings_where(cls, kind: str) -> tuple[str, ...]:
    """Names of the settings of ``cls`` declared with ``kind`` (``operational`` or ``cache``)."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get(kind))


def describe_settings(cls) -> list[tuple[str, str, str, str]]:
    """``(name, type, default, help)`` for every setting, for ``--help``."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            default = "required"
        else:
            value = f.default_factory() if f.default is dataclasses.MISSING else f.default
            default = "default: " + ("unset" if value is None else json.dumps(value))
        kind = " | ".join(map(str, _choices(f))) or _type_name(hints[f.name])
        rows.append((f.name, kind, default, f.metadata.get("help", "")))
    return rows


def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args if a is not type(None))
    if origin is list:
        return f"list[{_type_name(args[0])}]" if args else "list"
    if origin is dict or hint is dict:
        return "mapping"
    return getattr(hint, "__name__", str(hint))

def _coerce(name: str, value: Any, hint: Any, source: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(name, value, inner[0], source) if len(inner) == 1 else value
    if origin is list:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {name} must be a list, got {value!r}")
        return [_coerce(name, v, args[0], source) for v in value] if args else list(value)
    if origin is dict or hint is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {name} must be a mapping of settings, got {value!r}")
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: {name} must be true or false, got {value!r}")
    if hint in (int, float):
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: {name} must be a number, got {value!r}")
        if hint is int and float(value) != int(value):
            raise ConfigError(f"{source}: {name} must be a whole number, got {value!r}")
        return hint(value)
    if hint is str:
        if isinstance(value, (dt.date, dt.datetime)):  # YAML reads 2026-11-20 as a date
            return value.isoformat()
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{source}: {name} must be a string, got {value!r}")
        return str(value)
    return value


def _apply(cls: type[C], values: dict, base: dict, source: str) -> dict:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    known = set(fields)
    retired = getattr(cls, "RETIRED_SETTINGS", {})
    out = dict(base)
    for key, value in values.items():
        if key in retired:
            if value is None:  # as older versions wrote it into every resolved config
                continue
            raise ConfigError(f"{source}: setting {key!r} is retired: {retired[key]}")
        head, dot, rest = key.partition(".")
        if dot and head in known and isinstance(out.get(head), dict):
            # teacher.epochs=3: one setting inside a mapping-valued setting
            out[head] = {**out[head], rest: value}
            continue
        if key not in known:
            raise ConfigError(
                f"{source}: unknown setting {key!r} (known: {', '.join(sorted(known))})"
            )
        out[key] = _coerce(key, value, hints[key], source)
        choices = _choices(fields[key])
        if choices and out[key] not in choices:
            raise ConfigError(
                f"{source}: {key} must be one of {', '.join(map(str, choices))}, got {value!r}"
            )
    return out


def _choices(f) -> tuple:
    """A setting's allowed values: as listed, or what a registry lists now (a callable)."""
    choices = f.metadata.get("choices") or ()
    return tuple(choices() if callable(choices) else choices)


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["epochs=3", "lr=1e-3", "pseudo_labels=[a, b]"]`` -> typed values (YAML scalars)."""
    values = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(
                f"override {item!r} is not of the form key=value (a boolean flag takes no "
                "value: --draft means true; write draft=false for false)"
            )
        values[key.strip()] = _yaml(raw, f"override {item!r}") if raw.strip() else None
    return values


def _yaml(text: str | bytes, source: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML ({' '.join(str(e).split())})") from None


def _defaults(cls) -> dict:
    return {
        f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
        for f in dataclasses.fields(cls)
    }


def build_config(cls: type[C], values: dict, source: str) -> C:
    """A frozen ``cls`` from its defaults and ``values`` (checked and coerced as a file's)."""
    return _finish(cls, _apply(cls, values, _defaults(cls), source))


def resolve_config(cls: type[C], path: str | None = None, overrides: list[str] = ()) -> C:
    """Build a frozen ``cls`` from its defaults, an optional YAML file, then overrides."""
    values = _defaults(cls)
    if path:
        if not storage.exists(path):
            raise ConfigError(f"{path}: config file not found")
        loaded = _yaml(storage.read_bytes(path), path) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"{path}: expected a mapping of settings, got {type(loaded).__name__}"
            )
        values = _apply(cls, loaded, values, path)
    values = _apply(cls, parse_overrides(list(overrides)), values, "command line")
    return _finish(cls, values)


def _finish(cls: type[C], values: dict) -> C:
    missing = [k for k, v in values.items() if v is dataclasses.MISSING]
    if missing:
        raise ConfigError(
            f"missing required setting(s): {', '.join(missing)} "
            f"(set them in the YAML file or as {missing[0]}=... on the command line)"
        )
    return cls(**values)


def config_to_dict(config) -> dict:
    return dataclasses.asdict(config)


def result_settings(config, exclude: tuple[str, ...] | None = None) -> dict:
    """The settings that determine a run's result: all but ``exclude`` (by default the
    operational ones) and those declared ``omit_default`` while at their default."""
    if exclude is None:
        exclude = settings_where(type(config), "operational")
    at_default = {f.name for f in dataclasses.fields(config) if f.metadata.get("omit_default")
                  and getattr(config, f.name) == f.default}
    return {k: v for k, v in config_to_dict(config).items()
            if k not in exclude and k not in at_default}


def config_hash(config, exclude: tuple[str, ...] | None = None) -> str:
    """Stable hash of the settings that determine a result (:func:`result_settings`)."""
    d = result_settings(config, exclude)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def save_config(config, uri: str) -> None:
    storage.write_bytes(uri, yaml.safe_dump(config_to_dict(config), sort_keys=False).encode())

"""Frozen dataclass configs: one source of defaults, YAML diffs and dotted ``key=value`` overrides.

A preset YAML file holds only the values that differ from the dataclass defaults; overrides follow the
``section.field=value`` form that wandb sweeps pass as ``${args_no_hyphens}``. Every run writes its
resolved config (:func:`to_dict`) next to its outputs.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """An unknown key or a value of the wrong type in a config file or override."""


def check_at_least(section: str, cfg: Any, minimum: float, *names: str) -> None:
    """Raise :class:`ConfigError` naming the first of ``cfg``'s fields ``names`` below ``minimum``.

    The ``validate()`` methods call this so that an out-of-range value (``teacher.steps=-3``) stops a
    run before it writes anything, instead of failing in the stage that uses it.
    """
    for name in names:
        value = getattr(cfg, name)
        if value is not None and value < minimum:
            raise ConfigError(f"{section}.{name}={value}: must be >= {minimum:g}")


def check_positive(section: str, cfg: Any, *names: str) -> None:
    """Raise :class:`ConfigError` naming the first of ``cfg``'s fields ``names`` that is not > 0."""
    for name in names:
        value = getattr(cfg, name)
        if value is not None and not value > 0:
            raise ConfigError(f"{section}.{name}={value}: must be > 0")


def validate_section(section: str, cfg: Any) -> None:
    """Run ``cfg.validate()`` (when it has one) so that an error names the full key of the bad value.

    A library config validates in its own terms (``optim.lr=0: must be > 0``); nested in another config
    at ``section`` (``teacher.optim``), its error names the full key (``teacher.optim.lr=0: must be > 0``),
    so the user knows which of several ``optim`` sections to fix.
    """
    check = getattr(cfg, "validate", None)
    if not callable(check):
        return
    try:
        check()
    except ValueError as e:
        msg = str(e)
        if not section or msg.startswith(section):
            raise
        last = section.rsplit(".", 1)[-1]
        msg = f"{section}{msg[len(last) :]}" if msg.startswith(f"{last}.") else f"{section}: {msg}"
        raise ConfigError(msg) from e


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain-dict view of a (nested) config dataclass."""
    return dataclasses.asdict(cfg)


def diff(cfg: Any, base: Any | None = None) -> dict[str, Any]:
    """Only the values of ``cfg`` that differ from ``base`` (default: the dataclass defaults)."""
    base = type(cfg)() if base is None else base
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        a, b = getattr(cfg, f.name), getattr(base, f.name)
        if dataclasses.is_dataclass(a):
            sub = diff(a, b)
            if sub:
                out[f.name] = sub
        elif a != b:
            out[f.name] = _plain(a)
    return out


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict (e.g. from :func:`diff`) → ``{"dotted.key": value}``, the form overrides use."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _plain(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    return v


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML/CLI value to the annotated field type (tuples, optionals, numbers)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: {value!r} matches none of {args}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            value = [value]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key) for v in value)
        if len(args) != len(value):
            raise ConfigError(f"{key}: expected {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{key}: expected a bool, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{key}: expected an int, got {value!r}")
        try:
            f = float(value)
        except ValueError as e:
            raise ConfigError(f"{key}: expected an int, got {value!r}") from e
        if f != int(f):
            raise ConfigError(f"{key}: expected an int, got {value!r}")
        return int(f)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a float, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{key}: expected a float, got {value!r}") from e
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    if dataclasses.is_dataclass(tp):
        raise ConfigError(f"{key}: is a section; set its fields as {key}.<field>=...")
    return value


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def merge(cfg: T, changes: dict[str, Any], prefix: str = "") -> T:
    """Return a copy of ``cfg`` with the (nested) ``changes`` applied, type-checked."""
    hints = _hints(type(cfg))
    names = {f.name for f in dataclasses.fields(cfg)}
    kwargs: dict[str, Any] = {}
    for k, v in changes.items():
        key = f"{prefix}{k}"
        if k not in names:
            raise ConfigError(
                f"unknown config key {key!r}{_moved_hint(cfg, k, prefix)}; known: {sorted(names)}"
            )
        cur = getattr(cfg, k)
        if dataclasses.is_dataclass(cur):
            if not isinstance(v, dict):
                raise ConfigError(f"{key}: is a section; give a mapping")
            kwargs[k] = merge(cur, v, prefix=f"{key}.")
        else:
            kwargs[k] = _coerce(v, hints[k], key)
    out = dataclasses.replace(cfg, **kwargs)
    validate_section(prefix.rstrip("."), out)
    return out


def _moved_hint(cfg: Any, name: str, prefix: str) -> str:
    """`` (did you mean 'teacher.optim.lr'?)`` when ``name`` is a field of one of ``cfg``'s sections."""
    found = [
        f"{prefix}{f.name}.{name}"
        for f in dataclasses.fields(cfg)
        if dataclasses.is_dataclass(sub := getattr(cfg, f.name))
        and name in {g.name for g in dataclasses.fields(sub)}
    ]
    return f" (did you mean {' or '.join(map(repr, found))}?)" if found else ""


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Parse ``a.b=value`` strings (leading ``--`` allowed, as wandb may pass) into a nested dict.

    Values are parsed as YAML scalars/lists, so ``x=3`` is an int, ``x=[1,2]`` a list, ``x=null`` None.
    """
    out: dict[str, Any] = {}
    for item in items:
        item = item.lstrip("-")
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier one")
        node[parts[-1]] = value
    return out


def load(cls: type[T], path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> T:
    """Build a config: dataclass defaults, then the YAML file's values, then ``key=value`` overrides.

    File and overrides are merged into one change set first, so a preset may leave a value that its own
    validation needs to the command line (e.g. a corpus preset without ``data.root``).
    """
    changes: dict[str, Any] = {}
    if path is not None:
        with open(path, encoding="utf-8") as fh:
            try:
                data = yaml.safe_load(fh) or {}
            except yaml.YAMLError as e:
                raise ConfigError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from e
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        changes = data
    if overrides:
        changes = _deep_update(changes, parse_overrides(overrides))
    return merge(cls(), changes) if changes else cls()


def _deep_update(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in new.items():
        out[k] = _deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def save(cfg: Any, path: str | Path) -> None:
    """Write the fully resolved config as YAML."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        yaml.safe_dump(_yamlable(to_dict(cfg)), fh, sort_keys=False)


def _yamlable(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _yamlable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_yamlable(x) for x in v]
    return v

"""Reading what users type: YAML files, `--set key=value`, study names.

Every failure is a `UsageError` whose one-line message names the file or key,
what is wrong and what is allowed; the CLI prints it and exits with code 2.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class UsageError(ValueError):
    """Bad input from the user: printed as one line, exit code 2."""


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{p}: no such file")
    try:
        doc = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where else ""
        raise UsageError(f"{p}: invalid YAML{at}: {getattr(e, 'problem', e)}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{p}: unreadable: {e}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise UsageError(f"{p}: the top level must be a mapping of keys; got {type(doc).__name__}")
    return _number(doc)


def parse_sets(items: list[str] | None) -> dict[str, Any]:
    """`--set a.b=VALUE` with VALUE parsed as YAML (`[0.6,0.2,0.2]`, `1e-3`, `true`)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {item!r}: expected key=value, e.g. noise.beta=2")
        try:
            out[key.strip()] = _number(yaml.safe_load(raw))
        except yaml.YAMLError as e:
            raise UsageError(f"--set {key}: value {raw!r} is not valid YAML: {e}") from None
    return out


def _number(v: Any) -> Any:
    """YAML 1.1 reads `1e-3` as a string; users mean a number."""
    if isinstance(v, str):
        return float(v) if re.fullmatch(r"[-+]?\d*\.?\d+[eE][-+]?\d+", v) else v
    if isinstance(v, list):
        return [_number(x) for x in v]
    if isinstance(v, dict):
        return {k: _number(x) for k, x in v.items()}
    return v


def check_name(name: Any, key: str = "name") -> str:
    """A study name is one path component: it can never escape the results root."""
    if not isinstance(name, str) or not NAME.fullmatch(name) or ".." in name:
        raise UsageError(f"{key}: got {name!r}; allowed: 1-100 letters, digits, '.', '_', '-', "
                         "starting with a letter or digit, no '/' and no '..'")
    return name


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep merge of nested/dotted dicts; `over` wins."""
    from trainables.config import nest

    out = nest(dict(base))
    for k, v in nest(dict(over)).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out

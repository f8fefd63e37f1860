"""The declarative study presets: one YAML file each, every value with its reason."""
from __future__ import annotations

from pathlib import Path

from study.inputs import UsageError, load_yaml

HERE = Path(__file__).parent


def names() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.yaml"))


def load(name: str) -> dict:
    path = HERE / f"{name}.yaml"
    if not path.is_file():
        raise UsageError(f"--preset: unknown preset {name!r}; allowed: {', '.join(names())}")
    return load_yaml(path)

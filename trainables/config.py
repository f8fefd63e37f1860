"""Typed configuration of one trial, built from a nested or dotted dict.

One small dataclass per component; `TrialConfig.from_dict` refuses unknown
keys and bad values with a `ConfigError` that names the key, the value and
what is allowed. `vaestudy train`, a Ray trial and a study spec all build
their trial through here, so they accept exactly the same keys.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass, field, fields
from typing import Any, get_args, get_origin, get_type_hints

NOISE_KINDS = ("specified", "learned", "mog")
DATASETS = ("mnist", "intrinsic", "npz", "image_folder")
ARCHS = ("auto", "conv2", "conv4", "mnist", "celeba", "yaleb")
SIGMA2_UPDATES = ("closed_form", "gradient")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")
EVAL_METRICS = ("mig", "sap", "modularity")   # trainables.metrics.SEARCHABLE: cheap per evaluation
# how a trial runs, not what it computes (a captured step replays the same kernels)
RUNTIME_KEYS = {"train": ("threads", "fault_epoch_delay", "cuda_graphs"),
                "checkpoint": ("final",)}     # what a completed trial keeps: the same trial
# The keys results format 1 hashed into a trial id (all of them, defaults included);
# frozen, so that studies written then still map their spec to their recorded ids.
FORMAT1_KEYS = {
    "dataset": ("name", "path", "limit", "split", "split_seed", "factors", "n", "image_size",
                "seed", "download"),
    "model": ("latent_dim", "arch"),
    "noise": ("kind", "sigma2", "beta", "k", "update", "var_floor"),
    "train": ("epochs", "batch_size", "lr", "seed", "device", "fault_nan_epoch"),
    "eval": ("every", "max_points", "used_threshold", "normal_var_tol", "codes_points",
             "traversals", "traversal_images"),
    "checkpoint": ("every", "keep"),
}


class ConfigError(ValueError):
    """A bad config value: `key` is the dotted key, the message says what is allowed."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key


@dataclass(frozen=True)
class DatasetConfig:
    name: str = "intrinsic"
    path: str | None = None           # mnist/npz/image_folder: where the data lives
    limit: int | None = None          # use only the first N examples (after pooling)
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)  # App. D: random 0.6/0.2/0.2
    split_seed: int = 0
    factors: int = 4                  # intrinsic: the true dimension P
    n: int = 6000                     # intrinsic: number of images generated
    image_size: int | None = None     # intrinsic: 28 (default) or 64; image_folder: resize to a square
    seed: int = 0                     # intrinsic: seed of phi and of y
    download: bool = False            # mnist: fetch with torchvision when the folder is empty

    def check(self) -> None:
        _one_of("dataset.name", self.name, DATASETS)
        if self.name in ("mnist", "npz", "image_folder") and not self.path:
            raise ConfigError("dataset.path", f"required for dataset.name={self.name}")
        _positive("dataset.limit", self.limit, allow_none=True)
        if len(self.split) != 3 or any(not 0 <= s <= 1 for s in self.split) \
                or abs(sum(self.split) - 1) > 1e-6 or self.split[0] <= 0 or self.split[2] <= 0:
            raise ConfigError("dataset.split", f"got {list(self.split)}; allowed: three fractions "
                              "[train, val, test] summing to 1 with train > 0 and test > 0")
        _positive("dataset.factors", self.factors)
        _positive("dataset.n", self.n)
        _positive("dataset.image_size", self.image_size, allow_none=True)
        if self.name == "intrinsic" and self.image_size not in (None, 28, 64):
            raise ConfigError("dataset.image_size", f"got {self.image_size}; allowed for "
                              "intrinsic: 28 or 64")


@dataclass(frozen=True)
class ModelConfig:
    latent_dim: int = 128             # App. D: 128 (32 for one CelebA run)
    arch: str = "auto"                # picked from the input shape unless named

    def check(self) -> None:
        _positive("model.latent_dim", self.latent_dim)
        _one_of("model.arch", self.arch, ARCHS)


@dataclass(frozen=True)
class NoiseConfig:
    kind: str = "specified"
    sigma2: float = 0.01              # specified: the variance; learned/mog: its initial value
    beta: float = 1.0                 # Eq. 11: weight of the KL term
    k: int = 2                        # mog: number of components (App. A.2)
    update: str = "closed_form"       # learned: App. A.1 closed form, or a gradient on log sigma2
    var_floor: float = 1e-6           # floor of learned variances (MNIST's black pixels)

    def check(self) -> None:
        _one_of("noise.kind", self.kind, NOISE_KINDS)
        if not self.sigma2 > 0:
            raise ConfigError("noise.sigma2", f"got {self.sigma2}; allowed: a number > 0")
        if not self.beta >= 0:
            raise ConfigError("noise.beta", f"got {self.beta}; allowed: a number >= 0")
        if self.k < 1:
            raise ConfigError("noise.k", f"got {self.k}; allowed: an integer >= 1")
        _one_of("noise.update", self.update, SIGMA2_UPDATES)
        if not self.var_floor > 0:
            raise ConfigError("noise.var_floor", f"got {self.var_floor}; allowed: a number > 0")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    batch_size: int = 100             # App. D: minibatch M = 100
    lr: float = 1e-3                  # App. D: Adam 1e-3 (MNIST)
    seed: int = 0
    device: str = "auto"
    threads: int | None = None        # torch threads; a Ray trial sets its CPU share
    fault_nan_epoch: int | None = None  # fault injection: poison a weight with NaN in this epoch
    precision: str = "fp32"           # fp32, or bf16 autocast of the networks' step (GPU)
    compile: bool = False             # torch.compile the VAE's forward pass
    fault_oom_epoch: int | None = None  # fault injection: CUDA out of memory in this epoch
    fault_epoch_delay: float = 0.0    # fault injection: seconds of sleep after each epoch,
                                      # as a slow node would (tests kill a trial mid-run)
    cuda_graphs: bool = False         # packs on CUDA: capture the step, replay it (same kernels)

    def check(self) -> None:
        _positive("train.epochs", self.epochs)
        _positive("train.batch_size", self.batch_size)
        if not self.lr > 0:
            raise ConfigError("train.lr", f"got {self.lr}; allowed: a number > 0")
        _one_of("train.device", self.device, DEVICES)
        _positive("train.threads", self.threads, allow_none=True)
        _positive("train.fault_nan_epoch", self.fault_nan_epoch, allow_none=True)
        _one_of("train.precision", self.precision, PRECISIONS)
        _positive("train.fault_oom_epoch", self.fault_oom_epoch, allow_none=True)
        if not 0 <= self.fault_epoch_delay <= 60:
            raise ConfigError("train.fault_epoch_delay",
                              f"got {self.fault_epoch_delay}; allowed: seconds from 0 to 60")


@dataclass(frozen=True)
class EvalConfig:
    every: int = 1                    # evaluate every N epochs (and always at the last)
    max_points: int = 10_000          # App. D: indicators on up to 10,000 test points
    used_threshold: float = 0.5       # App. E: a factor is used when its MI > 0.5 nats
    normal_var_tol: float = 0.1       # Fig. 5b: mean posterior variance within 0.1 of 1
    codes_points: int = 1000          # codes table rows at the last evaluation (docs/analysis.md)
    traversals: bool = True           # Fig. 12-16 montages at the end of the trial
    traversal_images: int = 3
    metrics: tuple[str, ...] = ()     # disentanglement scores at each evaluation (search)

    def check(self) -> None:
        _positive("eval.every", self.every)
        for m in self.metrics:
            _one_of("eval.metrics", m, EVAL_METRICS)
        _positive("eval.max_points", self.max_points)
        if not self.used_threshold >= 0:
            raise ConfigError("eval.used_threshold", f"got {self.used_threshold}; allowed: >= 0")
        if not self.normal_var_tol > 0:
            raise ConfigError("eval.normal_var_tol", f"got {self.normal_var_tol}; allowed: > 0")
        _positive("eval.codes_points", self.codes_points, allow_zero=True)
        _positive("eval.traversal_images", self.traversal_images)


@dataclass(frozen=True)
class CheckpointConfig:
    every: int = 5                    # epochs between checkpoints (and results flushes)
    keep: int = 2                     # checkpoints kept while the trial runs
    final: str = "weights"            # after it completes: weights | full | none

    def check(self) -> None:
        _positive("checkpoint.every", self.every)
        _positive("checkpoint.keep", self.keep)
        if self.final not in FINAL_CHECKPOINTS:
            raise ConfigError("checkpoint.final", f"got {self.final!r}; allowed: "
                              f"{', '.join(FINAL_CHECKPOINTS)}")


FINAL_CHECKPOINTS = ("weights", "full", "none")   # what a completed trial keeps


SECTIONS = {"dataset": DatasetConfig, "model": ModelConfig, "noise": NoiseConfig,
            "train": TrainConfig, "eval": EvalConfig, "checkpoint": CheckpointConfig}


@dataclass(frozen=True)
class TrialConfig:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "TrialConfig":
        nested = nest(d or {})
        parts = {}
        for section, value in nested.items():
            if section not in SECTIONS:
                raise ConfigError(section, f"unknown section; allowed: {', '.join(SECTIONS)}")
            if not isinstance(value, dict):
                raise ConfigError(section, f"got {value!r}; allowed: a mapping of "
                                  f"{', '.join(f.name for f in fields(SECTIONS[section]))}")
            parts[section] = _build(section, SECTIONS[section], value)
        cfg = cls(**parts)
        for section in SECTIONS:
            getattr(cfg, section).check()
        return cfg

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {s: _jsonable(dataclasses.asdict(getattr(self, s))) for s in SECTIONS}

    def flat(self) -> dict[str, Any]:
        return {f"{s}.{k}": v for s, d in self.to_dict().items() for k, v in d.items()}

    def canonical(self) -> dict[str, dict[str, Any]]:
        """The values that define the experiment: those that differ from their defaults,
        without the runtime keys. A key added later with a default leaves this unchanged."""
        out, mine = {}, self.to_dict()
        for section in SECTIONS:
            default = _defaults(section)
            runtime = RUNTIME_KEYS.get(section, ())
            diff = {k: v for k, v in mine[section].items()
                    if k not in runtime and v != default[k]}
            if diff:
                out[section] = diff
        return out

    def trial_id(self) -> str:
        """Stable id of this configuration: a hash of `canonical()`, so the same experiment
        always names the same trial, whatever keys later versions add with defaults."""
        blob = json.dumps(self.canonical(), sort_keys=True, default=str)
        return "t" + hashlib.sha256(blob.encode()).hexdigest()[:11]

    def legacy_trial_id(self) -> str:
        """The id results format 1 gave this config: a hash of every value, defaults included.
        Only to match the trials of a study written before format 2 to its spec."""
        d = self.to_dict()
        d = {s: {k: d[s][k] for k in keys} for s, keys in FORMAT1_KEYS.items()}
        blob = json.dumps(d, sort_keys=True, default=str)
        return "t" + hashlib.sha256(blob.encode()).hexdigest()[:11]


def nest(d: dict[str, Any]) -> dict[str, Any]:
    """{'noise.beta': 2, 'train': {'lr': 1e-3}} -> {'noise': {'beta': 2}, 'train': {'lr': ...}}."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        if not isinstance(key, str):
            raise ConfigError(str(key), "keys must be strings")
        head, _, rest = key.partition(".")
        if rest:
            value = {rest: value}
        if isinstance(value, dict) and isinstance(out.get(head), dict):
            out[head] = {**out[head], **nest(value)}
        else:
            out[head] = nest(value) if isinstance(value, dict) else value
    return out


def all_keys() -> list[str]:
    return [f"{s}.{f.name}" for s, c in SECTIONS.items() for f in fields(c)]


@functools.cache
def _defaults(section: str) -> dict[str, Any]:
    """A section's default values as `to_dict` writes them (read-only: shared)."""
    return _jsonable(dataclasses.asdict(SECTIONS[section]()))


@functools.cache
def _fields(cls: type) -> tuple[dict[str, Any], frozenset[str]]:
    """A section's type hints and field names (typing resolves hints slowly)."""
    return get_type_hints(cls), frozenset(f.name for f in fields(cls))


def _build(section: str, cls: type, values: dict[str, Any]):
    hints, known = _fields(cls)
    kwargs = {}
    for name, value in values.items():
        key = f"{section}.{name}"
        if name not in known:
            raise ConfigError(key, f"unknown key; allowed in {section}: {', '.join(sorted(known))}")
        kwargs[name] = _coerce(key, value, hints[name])
    return cls(**kwargs)


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """`value` as the field's declared type (`int | None`, `tuple[float, ...]`, ...)."""
    kind, optional = _kind(hint)
    if value is None:
        if optional:
            return None
        raise ConfigError(key, f"got null; allowed: {DESCRIBE[kind]}")
    if kind is tuple and _items(hint) is str:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(key, f"got {value!r}; allowed: a list of names")
        return tuple(value)
    if kind is tuple:
        if not isinstance(value, (list, tuple)) or not all(_is_number(v) for v in value):
            raise ConfigError(key, f"got {value!r}; allowed: a list of numbers")
        return tuple(float(v) for v in value)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"got {value!r}; allowed: true or false")
        return value
    if kind is int:
        if isinstance(value, bool) or not (isinstance(value, int) or
                                           (isinstance(value, float) and value.is_integer())):
            raise ConfigError(key, f"got {value!r}; allowed: an integer")
        return int(value)
    if kind is float:
        if not _is_number(value):
            raise ConfigError(key, f"got {value!r}; allowed: a number")
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(key, f"got {value!r}; allowed: a string")
    return value


DESCRIBE = {tuple: "a list of numbers", bool: "true or false", int: "an integer",
            float: "a number", str: "a string"}


def _items(hint: Any) -> type | None:
    """The item type of `tuple[X, ...]` (or of `tuple[X, ...] | None`)."""
    args = [a for a in get_args(hint) if a is not type(None)]
    if len(args) == 1 and get_origin(hint) is not tuple:     # the Optional wrapper
        return _items(args[0])
    return args[0] if get_origin(hint) is tuple and args else None


def _kind(hint: Any) -> tuple[type, bool]:
    """(the field's base type, whether it may be None): `int | None` -> (int, True)."""
    args = get_args(hint)
    optional = type(None) in args
    if optional:
        (hint,) = [a for a in args if a is not type(None)]
    kind = get_origin(hint) or hint
    if kind not in DESCRIBE:
        raise TypeError(f"config field of unsupported type {hint!r}")
    return kind, optional


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _one_of(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(key, f"got {value!r}; allowed: {', '.join(allowed)}")


def _positive(key: str, value: int | None, allow_none: bool = False, allow_zero: bool = False):
    if value is None and allow_none:
        return
    if value is None or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(key, f"got {value}; allowed: an integer {'>= 0' if allow_zero else '> 0'}")


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

"""Seeds until the verdict is decided: the driver's rounds for `seeds: {adaptive: ...}`.

After each round the driver looks at every configuration's seed-agreement verdict, computed
from the stored codes exactly as the report computes it (`analysis.equivalence`), at the
level `analysis.sequential.Schedule` gives the look. A configuration that is still undecided
and short of `max` gets the next look's seeds (the next seed numbers: seeds are 0..n-1, so
the same spec always grows the same trials); the others stop. The round is recorded in
study.json's `adaptive` record: per configuration its planned seeds, the verdict and
interval at its last look, and why it stopped; the report reads it back.
"""
from __future__ import annotations

import json

from analysis.sequential import Schedule, stop_reason
from study.spec import StudySpec
from trainables.config import TrialConfig

UNTIL = ("seed_agreement",)          # what a configuration's seeds may be added until


def config_key(cfg: TrialConfig) -> str:
    """The report's key of a trial's configuration (its config without the seed)."""
    from analysis.load import config_key as key

    return key(json.dumps(cfg.to_dict()))


def by_config(trials: list[tuple[str, TrialConfig]]) -> dict[str, list[TrialConfig]]:
    out: dict[str, list[TrialConfig]] = {}
    for _, cfg in trials:
        out.setdefault(config_key(cfg), []).append(cfg)
    return out


def verdicts(root: str, study: str, levels: dict[str, float]):
    """The seed-agreement table (`equivalence.seed_agreement`) of the configurations in
    `levels` (their completed trials), each one's intervals at its look's level."""
    import polars as pl

    from analysis import equivalence, load

    rows = load.counted(load.trials(root, study, last=False)).filter(
        pl.col("config_key").is_in(list(levels)))
    factors = load.factors(root, study)
    codes = equivalence.trial_codes(rows, factors, load.codes(root, study))
    return equivalence.seed_agreement(equivalence.seed_pairs(codes), levels)


def look(store, schedule: Schedule, trials: list[tuple[str, TrialConfig]],
         before: dict[str, dict] | None = None) -> dict[str, dict]:
    """Per configuration: its planned seeds, the verdict and interval at its look, and why it
    stops ('' where it gets more seeds). `before`: the last look's record; a configuration
    that stopped there with the same seeds keeps its entry (a look is deterministic), so a
    round scores only the configurations still going."""
    before = before or {}
    groups = by_config(trials)
    seeds = {k: len({c.train.seed for c in cfgs}) for k, cfgs in groups.items()}
    kept = {k: before[k] for k, n in seeds.items()
            if k in before and before[k]["stopped"] and before[k]["seeds"] == n
            and before[k]["level"] == schedule.level(n)}
    levels = {k: schedule.level(n) for k, n in seeds.items() if k not in kept}
    table = {r["config_key"]: r for r in
             verdicts(store.root, store.study, levels).iter_rows(named=True)} if levels else {}
    out = {}
    for key, n in seeds.items():
        if key in kept:
            out[key] = kept[key]
            continue
        r = table.get(key) or {}
        verdict = r.get("verdict") or ""
        out[key] = {"seeds": n, "level": levels[key], "verdict": verdict,
                    "diff_low": r.get("diff_low"), "diff_high": r.get("diff_high"),
                    "stopped": stop_reason(verdict, n, schedule)}
    return out


def grow(spec: StudySpec, trials: list[tuple[str, TrialConfig]], looked: dict[str, dict]
         ) -> list[tuple[str, TrialConfig]]:
    """The next round's new trials: the next look's seeds of each configuration that goes on."""
    new = []
    for key, cfgs in by_config(trials).items():
        state = looked[key]
        if state["stopped"]:
            continue
        have = {c.train.seed for c in cfgs}
        flat = cfgs[0].flat()
        for seed in range(state["seeds"], spec.adaptive.next_seeds(state["seeds"])):
            if seed not in have:
                cfg = TrialConfig.from_dict({**flat, "train.seed": seed})
                new.append((cfg.trial_id(), cfg))
    return new


def record(meta: dict, schedule: Schedule, looked: dict[str, dict], added: int) -> dict:
    """study.json's `adaptive` record after a look: the schedule, one entry per look so far,
    and each configuration's state."""
    rounds = [*(meta.get("adaptive") or {}).get("rounds", []),
              {"configurations": len(looked), "added_trials": added,
               "decided": sum(v["verdict"] != "" for v in looked.values()),
               "at_max": sum(v["stopped"].startswith("undecided") for v in looked.values())}]
    return {"schedule": schedule.to_dict(), "until": list(UNTIL), "rounds": rounds,
            "configs": looked}


def summary(record: dict) -> str:
    """The line the driver prints after a look, from its record."""
    r = record["rounds"][-1]
    going = r["configurations"] - r["decided"] - r["at_max"]
    return (f"seeds until decided: {r['decided']} of {r['configurations']} configurations "
            f"decided, {r['at_max']} undecided at max; " +
            (f"{going} get more seeds ({r['added_trials']} new trials)" if going
             else "no more seeds"))

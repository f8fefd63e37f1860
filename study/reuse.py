"""`reuse: [OTHER, ...]` (or `--reuse OTHER`): finished trials of other studies copied in.

A trial id hashes the experiment's config (`TrialConfig.trial_id`), so a trial
that finished (completed or diverged) in another study under the same results
root under the same id is the same experiment: the driver copies its rows, final
checkpoint and traversal in (resultstore/reuse.py) instead of training it, so each
study stays a folder of its own that reads, reports and compacts alone. Only
trials the plan would run are looked for; the first study named that has one
finished gives it. A status file whose recorded config does not hash to its id
(a study of results format 1, whose ids hashed every value) is not taken.
"""
from __future__ import annotations

from collections import Counter

from resultstore import reuse as copying
from resultstore.format import FINISHED, TABLES, status_row
from resultstore.store import ResultStore
from study.inputs import UsageError
from trainables.config import ConfigError, TrialConfig

CHUNK = 64                         # trials read and copied at a time (bounded memory)


def check(spec, store: ResultStore) -> None:
    """Each study named in `reuse` exists under this results root and is another study."""
    for name in spec.reuse:
        if name == spec.name:
            raise UsageError(f"reuse: {name!r} is this study; allowed: other studies under "
                             f"{store.root}")
        other = ResultStore(store.root, name)
        if not other.exists(other.path("study.json")) and not other.listdir(other.path("status")):
            raise UsageError(f"reuse: no study {name!r} under {store.root} (no study.json or "
                             "status/ there); allowed: studies of the same results root")


def find(store: ResultStore, others: tuple[str, ...], todo: dict[str, dict]
         ) -> dict[str, tuple[str, dict]]:
    """{trial id: (other study, its status)} of the trials to run that finished elsewhere."""
    found: dict[str, tuple[str, dict]] = {}
    for name in others:
        left = [t for t in todo if t not in found]
        if not left:
            break
        other = ResultStore(store.root, name)
        # its status table (one read when current) narrows the look-up to finished trials;
        # their status files give the config each id must hash from
        states, _ = other.trial_states(left)
        done = [t for t in left if (states.get(t) or {}).get("state") in FINISHED]
        for tid, st in other.status_many(done).items():
            if st.get("state") in FINISHED and _same_experiment(tid, st.get("config")):
                found[tid] = (name, st)
    return found


def _same_experiment(trial_id: str, config: dict | None) -> bool:
    try:
        return config is not None and TrialConfig.from_dict(config).trial_id() == trial_id
    except ConfigError:
        return False


def copy_in(store: ResultStore, found: dict[str, tuple[str, dict]], rows: dict[str, dict],
            todo: dict[str, dict], log=print) -> dict[str, str]:
    """Copy the found trials in (the caller holds the study's lease); they leave `todo` and
    their status rows say how they ended. Returns {trial id: the study it came from}."""
    by_origin: dict[str, list[str]] = {}
    for tid, (name, _) in found.items():
        by_origin.setdefault(name, []).append(tid)
    done: dict[str, str] = {}
    for name, ids in by_origin.items():
        src = ResultStore(store.root, name)
        versions: Counter = Counter()
        for i in range(0, len(ids), CHUNK):
            chunk = ids[i:i + CHUNK]
            tables = {table: copying.rows(src, chunk, table) for table in TABLES}
            for tid in chunk:
                if tid not in tables["trials"]:          # no row to copy: it trains here
                    continue
                versions[tables["trials"][tid].column("code_version")[-1].as_py()] += 1
                copying.copy_trial(src, store, tid, found[tid][1],
                                   {t: got[tid] for t, got in tables.items() if tid in got})
                rows[tid].update({k: v for k, v in status_row(store.status(tid)).items()
                                  if v is not None})
                todo.pop(tid, None)
                done[tid] = name
        log(f"reuse: copied {sum(versions.values())} finished trials from study {name!r} "
            f"(code versions: {_counts(versions)})")
    return done


def _counts(c: Counter) -> str:
    return ", ".join(f"{v} x {k}" for k, v in c.most_common()) or "none"

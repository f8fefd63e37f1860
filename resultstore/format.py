"""The results format: its version, the schemas, and every file name under a study.

Layout under ROOT/STUDY/ (ROOT a local path or a URI such as s3://bucket/prefix):

    study.json                        spec, format version, the trial list (ids with
                                      their configs), versions, start/end times (study/)
    trials/<trial_id>/part-<first>-<last>.parquet    one row per evaluated epoch
    factors/<trial_id>/part-<first>-<last>.parquet   one row per epoch and factor
    codes/<trial_id>/part-<first>-<last>.parquet     mu, logvar at the last evaluation
    <table>/compact-<gen>.parquet     finished trials, merged (resultstore/compact.py)
    status/<trial_id>.json            running | completed | diverged | failed | stopped
    status.parquet                    the driver's compact status table (study/tracker.py)
    checkpoints/<trial_id>/epoch-<e>.pt   while a trial runs (checkpoint.keep of them)
    checkpoints/<trial_id>/final.pt   after it completes: weights only (checkpoint.final)
    traversals/<trial_id>.png
    lease/driver-<gen>.json           the driver leases, one generation each (resultstore/lease.py)

Temp files start with "." (`.name.tmp-XXXX`), so directory readers (pyarrow.dataset,
pandas, DuckDB, Spark) skip them.

Format versions (`FORMAT_VERSION`, in study.json and in each Parquet file's
metadata under `vaestudy.format_version`); readers accept every earlier one:
  1  (nothing recorded) trial ids hash every config value; study.json lists ids only.
  2  trial ids hash the non-default values (`TrialConfig.canonical`); study.json lists
     each trial as {"id", "config"}, and that list is authoritative on resume.
  3  trials gain `mig`, `sap`, `modularity` (null unless eval.metrics asks for them);
     earlier files read with those columns null.
  4  trials gain mi_xz_est, kl_qz_pz_est, tc_est (MC estimates beyond the paper's bounds),
     equivalent_sigma2_arith, pi_at_floor and normal_var_tol; a mixture's
     equivalent_sigma2 is precision-weighted. Earlier files read the new columns as null
     (`analysis.load` recomputes what it can).
  5  + compact-<gen>.parquet per table (finished trials; resultstore/compact.py),
     status.parquet (the driver's status table), checkpoints/<id>/final.pt (weights
     only); a study of an earlier format has none of them and reads unchanged.
     Lease files gain a `released` mark and are kept (generations only grow, so a
     trial can tell that a newer driver took over); the files are unchanged otherwise.
"""
from __future__ import annotations

import re
from typing import Any

import pyarrow as pa

from resultstore.uri import StoreError

FORMAT_VERSION = 5
FORMAT_KEY = b"vaestudy.format_version"
TABLES = ("trials", "factors", "codes")
FINISHED = ("completed", "diverged")        # terminal: never rerun, never rewritten
STATES = ("running", "completed", "diverged", "failed", "stopped")
PART = re.compile(r"part-(\d+)-(\d+)\.parquet$")
CKPT = re.compile(r"epoch-(\d+)\.pt$")
FINAL_CKPT = "final.pt"
STATUS_TABLE = "status.parquet"
READ_THREADS = 32                            # parallel small reads (status files, segments)

f64, i64, s = pa.float64(), pa.int64(), pa.string()
SCHEMAS = {
    "trials": pa.schema([
        ("study", s), ("trial_id", s), ("epoch", i64), ("status", s), ("dataset", s),
        ("noise", s), ("beta", f64), ("sigma2", f64), ("equivalent_sigma2", f64),
        ("latent_dim", i64), ("seed", i64), ("evlb", f64), ("recon_mse", f64),
        ("kl_post_prior", f64), ("mi_xz", f64), ("kl_qz_pz", f64), ("kl_qstar_pz", f64),
        ("n_used_factors", i64), ("n_normal_variance_factors", i64), ("train_loss", f64),
        # format 4 (older files read them as null):
        ("mi_xz_est", f64), ("kl_qz_pz_est", f64), ("tc_est", f64),
        ("equivalent_sigma2_arith", f64), ("pi_at_floor", f64), ("normal_var_tol", f64),
        ("noise_pi", pa.list_(f64)), ("noise_sigma2_k", pa.list_(f64)),
        ("eval_points", i64), ("used_threshold", f64), ("var_floor", f64),
        ("true_factors", i64), ("config", s), ("code_version", s), ("host", s), ("node", s),
        ("wall_time", f64), ("written_at", pa.timestamp("ms", tz="UTC")),
        ("mig", f64), ("sap", f64), ("modularity", f64),
    ]),
    "factors": pa.schema([
        ("study", s), ("trial_id", s), ("epoch", i64), ("factor", i64), ("mi", f64),
        ("post_var", f64), ("qstar_var", f64), ("used", pa.bool_()),
    ]),
    "codes": pa.schema([
        ("study", s), ("trial_id", s), ("epoch", i64), ("point", i64), ("index", i64),
        ("mu", pa.list_(pa.float32())), ("logvar", pa.list_(pa.float32())),
        ("truth", pa.list_(pa.float32())),
    ]),
}


# The driver's status table (study/tracker.py): one row per trial, its latest metrics.
STATUS_SCHEMA = pa.schema([
    ("trial_id", s), ("state", s), ("epoch", i64), ("epochs", i64), ("attempts", i64),
    ("started", f64), ("updated", f64), ("seconds", f64), ("error", s),
    ("noise", s), ("beta", f64), ("sigma2", f64), ("seed", i64), ("latent_dim", i64),
    ("evlb", f64), ("recon_mse", f64), ("mi_xz", f64), ("kl_qz_pz", f64), ("n_used_factors", i64),
])
STALE_TABLE_S = 90.0       # a running driver rewrites its table at least every 30 s


def status_row(st: dict) -> dict:
    """A status-table row from a trial's status file (its `final` metrics when finished)."""
    cfg, final = st.get("config") or {}, st.get("final") or {}
    noise, train = cfg.get("noise", {}), cfg.get("train", {})
    row = {"trial_id": st["trial_id"], "state": st["state"], "epochs": st.get("epochs"),
           "attempts": st.get("attempts"), "updated": st.get("updated"), "error": st.get("error"),
           "noise": noise.get("kind"), "beta": noise.get("beta"), "sigma2": noise.get("sigma2"),
           "seed": train.get("seed"), "latent_dim": cfg.get("model", {}).get("latent_dim"),
           "seconds": final.get("wall_time")}
    row.update({k: final[k] for k in STATUS_SCHEMA.names if k in final and k != "trial_id"})
    return row


def check_format(version: Any, where: str) -> int:
    """The format version of a file or study this code can read; one clear error otherwise."""
    if isinstance(version, bytes):
        version = version.decode()
    try:
        v = int(version)
    except (TypeError, ValueError):
        v = -1
    if not 1 <= v <= FORMAT_VERSION:
        raise StoreError(f"{where}: results format {version!r} is not one this vaestudy reads "
                         f"(1 to {FORMAT_VERSION}); a newer vaestudy wrote it: upgrade "
                         "(pip install -U vaestudy)")
    return v


def recorded_trials(meta: dict) -> list[dict]:
    """study.json's trial list as [{"id": ..., "config": ... or None}], for every format."""
    return [{"id": t, "config": None} if isinstance(t, str) else
            {"id": t["id"], "config": t.get("config")} for t in meta.get("trials", [])]

COMPACT = re.compile(r"compact-(\d+)\.parquet$")
LEASE_DIR = "lease"
LEASE = re.compile(r"driver-(\d{6})\.json$")


def part_name(first: int, last: int) -> str:
    return f"part-{first:06d}-{last:06d}.parquet"


def checkpoint_name(epoch: int) -> str:
    return f"epoch-{epoch:06d}.pt"


def compact_name(gen: int) -> str:
    return f"compact-{gen:06d}.parquet"


def lease_name(gen: int) -> str:
    return f"driver-{gen:06d}.json"


def hidden(name: str) -> bool:
    """Temp files and folders readers skip (".x.tmp-...", "_x")."""
    return name.startswith((".", "_"))

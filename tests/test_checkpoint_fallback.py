"""A checkpoint that cannot be loaded is skipped with one line; the trial resumes from the
one before and still stores each epoch once."""
import io
import os

import polars as pl
import pytest
import torch

from conftest import Interrupt, stop_at, tiny
from trainables.config import TrialConfig
from resultstore.store import ResultStore
from trainables.train import run_trial


def _bad_bytes(kind: str, good: bytes) -> bytes:
    if kind == "truncated":
        return good[: len(good) // 2]
    buf = io.BytesIO()                     # a pickled callable: weights_only refuses to run it
    torch.save({"epoch": 3, "run": os.system}, buf)
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["truncated", "pickled callable"])
def test_resume_skips_an_unloadable_checkpoint_for_the_one_before(tmp_path, capsys, kind):
    cfg = TrialConfig.from_dict(tiny(**{"train.epochs": 4, "checkpoint.keep": 5}))
    store = ResultStore(str(tmp_path), "ck")
    with pytest.raises(Interrupt):
        run_trial(cfg, store, report=stop_at(3))
    (e3, path), = [c for c in store.trial(cfg.trial_id()).checkpoints() if c[0] == 3]
    store.write_bytes(path, _bad_bytes(kind, store.read_bytes(path)))
    capsys.readouterr()

    logs = []
    run_trial(cfg, store, log=logs.append)
    out = capsys.readouterr().out
    skipped = [line for line in out.splitlines() if "skipping checkpoint" in line]
    assert len(skipped) == 1 and "epoch-000003.pt" in skipped[0], out
    assert any("resuming after epoch 2" in line for line in logs), logs
    rows = pl.read_parquet(store.glob("trials"))
    assert sorted(rows["epoch"]) == [1, 2, 3, 4]
    assert store.status(cfg.trial_id())["state"] == "completed"

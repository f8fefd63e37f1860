"""One trial, start to finish: the function `vaestudy train` and every Ray trial run.

It resumes from the trial's latest checkpoint on the result storage (never
from the driver's bookkeeping: a SIGKILLed Tune driver forgets checkpoints it
had not yet snapshotted), trains, evaluates every `eval.every` epochs,
writes rows and checkpoints through the result store, and ends the trial as
completed or diverged.
"""
from __future__ import annotations

import json
import math
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

import torch

from trainables import data as datasets
from trainables import indicators, traversal
from trainables.config import TrialConfig
from resultstore.store import ResultStore, code_version
from resultstore.trial import TrialHandle, checkpoint_bytes
from trainables.writer import SyncWriter, Writer
from trainables.noise import mixture_variances
from trainables.vae import VAE, kl_to_prior

Report = Callable[[dict], None]
METRICS = ("trial_id", "epoch", "evlb", "recon_mse", "kl_post_prior", "mi_xz", "kl_qz_pz",
           "kl_qstar_pz", "n_used_factors", "n_normal_variance_factors", "sigma2",
           "equivalent_sigma2", "train_loss", "mig", "sap", "modularity")


@dataclass
class Run:
    """Everything a trial owns while it trains; checkpointed as plain tensors."""
    cfg: TrialConfig
    vae: VAE
    opt: torch.optim.Optimizer
    gen: torch.Generator
    device: torch.device
    epoch: int = 0
    wall: float = 0.0
    rows: dict[str, list[dict]] = field(default_factory=lambda: {"trials": [], "factors": [],
                                                                 "codes": []})
    flushed: int = 0                       # last epoch whose rows are on storage
    node: str = ""                         # where it runs: host, or the Ray node
    last_mi: torch.Tensor | None = None    # per-factor MI of the last evaluation
    writer: Writer | SyncWriter = field(default_factory=SyncWriter)   # store writes go here


class FatalTrialError(RuntimeError):
    """A failure no retry can fix (CUDA out of memory, storage the node cannot see): the
    trial fails at once and is not retried."""


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device: cuda requested but no GPU is visible")
    if name == "cuda" and torch.cuda.get_device_capability()[0] >= 8:
        torch.backends.cuda.matmul.allow_tf32 = True     # Ampere and newer: TF32 matmuls
        torch.backends.cudnn.allow_tf32 = True           # and convolutions
    if name == "cuda":                                   # a trial's shapes are fixed: time
        torch.backends.cudnn.benchmark = True            # cuDNN's algorithms once per shape
    return torch.device(name)


def autocast(cfg: TrialConfig, device: torch.device):
    """bf16 autocast of the training step when train.precision is bf16; a no-op for fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.train.precision == "bf16")


def build(cfg: TrialConfig, shape: tuple[int, int, int], device: torch.device) -> Run:
    torch.manual_seed(cfg.train.seed)                                   # weight init
    vae = VAE(shape, cfg).to(device)
    if cfg.train.compile:
        vae.compile()                                                   # forward only; same keys
    opt = torch.optim.Adam(vae.parameters(), lr=cfg.train.lr)           # App. D
    gen = torch.Generator(device=device).manual_seed(cfg.train.seed)    # batches and eps
    return Run(cfg, vae, opt, gen, device)


def train_epoch(run: Run, x: torch.Tensor) -> float:
    """One pass over the training tensor in minibatches; returns the mean loss."""
    vae, opt, B, H = run.vae, run.opt, run.cfg.train.batch_size, run.cfg.model.latent_dim
    vae.train()
    perm = torch.randperm(x.shape[0], generator=run.gen, device=run.device)
    total = torch.zeros((), device=run.device)
    for i in range(0, x.shape[0], B):
        xb = datasets.as_float(x[perm[i:i + B]])                        # [B, C, H, W]
        eps = torch.randn(xb.shape[0], H, generator=run.gen, device=run.device)
        with autocast(run.cfg, run.device):
            loss, xhat = vae.loss(xb, eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        vae.noise.after_step(xb, xhat.detach())
        total += loss.detach() * xb.shape[0]
    return float(total) / x.shape[0]


@torch.no_grad()
def evaluate(run: Run, test: datasets.Data, chunk: int = 500) -> dict:
    """EVLB, reconstruction and the indicators on up to eval.max_points test points."""
    ev, vae = run.cfg.eval, run.vae
    vae.eval()
    n = min(ev.max_points, len(test))
    g = eval_generator(run)
    mus, logvars, evlb, mse = [], [], 0.0, 0.0
    for i in range(0, n, chunk):
        xb = datasets.as_float(test.x[i:min(i + chunk, n)])
        eps = torch.randn(xb.shape[0], run.cfg.model.latent_dim, generator=g, device=run.device)
        mu, logvar, log_lik, err = vae.evlb_terms(xb, eps)
        kl = kl_to_prior(mu, logvar).sum(1)
        evlb += float((log_lik - kl).sum())                             # Eq. 13, beta = 1
        mse += float(err.sum())
        mus.append(mu)
        logvars.append(logvar)
    mu, logvar = torch.cat(mus), torch.cat(logvars)                     # [M, H]
    return with_indicators(run, {"evlb": evlb / n, "recon_mse": mse / n, "mu": mu,
                                 "logvar": logvar, "eval_points": n}, g)


def eval_generator(run: Run) -> torch.Generator:
    """An evaluation's own generator (its eps, then the indicators' MC estimates), seeded by
    (seed, epoch): a packed member's evaluation draws the same numbers."""
    return torch.Generator(device=run.device).manual_seed(run.cfg.train.seed * 100_003 + run.epoch)


def with_indicators(run: Run, ev: dict, g: torch.Generator) -> dict:
    """ev's encoder outputs -> ev with the indicators, drawn with the evaluation's g."""
    c = run.cfg.eval
    ind = indicators.compute(ev["mu"], ev["logvar"], c.used_threshold, c.normal_var_tol,
                             generator=g)
    return {**ev, "indicators": ind}


def adam_settings(opt: torch.optim.Optimizer) -> dict:
    """Adam's settings as `build` made them (a pack's own Adam reads them here, so a
    setting added to `build` cannot be ignored by packed members)."""
    if type(opt) is not torch.optim.Adam or len(opt.param_groups) != 1:
        raise ValueError(f"a pack trains with torch.optim.Adam in one group; got {opt!r}")
    return {k: v for k, v in opt.param_groups[0].items() if k != "params"}


def result_rows(run: Run, study: str, trial_id: str, ev: dict, train_loss: float,
                test: datasets.Data) -> dict[str, list[dict]]:
    cfg, noise = run.cfg, run.vae.noise.summary()
    ind = ev["indicators"]
    beta, sigma2 = cfg.noise.beta, noise["sigma2"]
    mix = (mixture_variances(noise["pi"], noise["sigma2_k"], cfg.noise.var_floor)
           if "pi" in noise else {"sigma2_precision": sigma2, "sigma2_arith": sigma2,
                                  "pi_at_floor": None})
    trial = {
        "study": study, "trial_id": trial_id, "epoch": run.epoch, "status": "running",
        "dataset": cfg.dataset.name, "noise": cfg.noise.kind, "beta": beta, "sigma2": sigma2,
        "equivalent_sigma2": beta * mix["sigma2_precision"],            # Sec. 7.2.1
        "equivalent_sigma2_arith": beta * mix["sigma2_arith"], "pi_at_floor": mix["pi_at_floor"],
        "latent_dim": cfg.model.latent_dim, "seed": cfg.train.seed,
        "evlb": ev["evlb"], "recon_mse": ev["recon_mse"], **ind.scalars,
        **{m: ev.get("scores", {}).get(m) for m in ("mig", "sap", "modularity")},
        "train_loss": train_loss, "noise_pi": noise.get("pi"), "noise_sigma2_k": noise.get("sigma2_k"),
        "eval_points": ev["eval_points"], "used_threshold": cfg.eval.used_threshold,
        "normal_var_tol": cfg.eval.normal_var_tol,
        "var_floor": cfg.noise.var_floor,
        "true_factors": None if test.factors is None else int(test.factors.shape[1]),
        "config": json.dumps(cfg.to_dict(), sort_keys=True), "code_version": code_version(),
        "host": socket.gethostname(), "node": run.node or socket.gethostname(),
        "wall_time": run.wall,
        "written_at": datetime.now(timezone.utc),
    }
    f = ind.factors
    factors = [{"study": study, "trial_id": trial_id, "epoch": run.epoch, "factor": h,
                "mi": float(f["mi"][h]), "post_var": float(f["post_var"][h]),
                "qstar_var": float(f["qstar_var"][h]), "used": bool(f["used"][h])}
               for h in range(len(f["mi"]))]
    return {"trials": [trial], "factors": factors}


def code_rows(run: Run, study: str, trial_id: str, ev: dict, test: datasets.Data) -> list[dict]:
    k = min(run.cfg.eval.codes_points, ev["eval_points"])
    mu, logvar = ev["mu"][:k].float().cpu(), ev["logvar"][:k].float().cpu()
    idx = test.index[:k].cpu()
    truth = None if test.factors is None else test.factors[:k].cpu()
    return [{"study": study, "trial_id": trial_id, "epoch": run.epoch, "point": i,
             "index": int(idx[i]), "mu": mu[i].tolist(), "logvar": logvar[i].tolist(),
             "truth": None if truth is None else truth[i].tolist()} for i in range(k)]


def state_dict(run: Run) -> dict:
    return {"epoch": run.epoch, "wall": run.wall, "vae": run.vae.state_dict(),
            "opt": run.opt.state_dict(), "gen": run.gen.get_state(),
            "trial_config": json.dumps(run.cfg.to_dict(), sort_keys=True)}


def load_state(run: Run, state: dict) -> None:
    run.vae.load_state_dict(state["vae"])
    run.opt.load_state_dict(state["opt"])
    run.epoch, run.wall = int(state["epoch"]), float(state["wall"])
    set_generator(run, state["gen"])
    run.flushed = run.epoch


def set_generator(run: Run, gen_state: torch.Tensor) -> None:
    """Restore the batch/noise generator; a state saved on another kind of device (a CPU
    trial resumed on a GPU, or back) cannot be, so the generator is reseeded from
    (seed, epoch): the run goes on, on another but still deterministic stream."""
    if gen_state.numel() == run.gen.get_state().numel():
        run.gen.set_state(gen_state)
    else:
        run.gen.manual_seed(run.cfg.train.seed * 1_000_003 + int(run.epoch))


def flush(run: Run, trial: TrialHandle, checkpoint: tuple | None = None) -> None:
    """Hand the rows buffered since the last flush to the run's writer as one segment, and
    the checkpoint (epoch, bytes, keep) that follows it, as one write (one fence check)."""
    if any(run.rows.values()) or checkpoint:
        run.writer.submit(trial.append, run.rows, run.flushed + 1, run.epoch, checkpoint)
    run.rows = {"trials": [], "factors": [], "codes": []}
    run.flushed = run.epoch


def run_trial(cfg: TrialConfig, store: ResultStore, report: Report | None = None,
              log: Callable[[str], None] = print, trial_id: str | None = None,
              node: str | None = None) -> dict:
    """Train one trial to its end (or resume it); returns the last row's metrics.

    `node` names where it runs (a Ray trial passes its node id); default: the host."""
    trial = store.trial(trial_id or cfg.trial_id())
    trial_id = trial.id
    done = trial.status()
    if done and done["state"] in ("completed", "diverged"):
        log(f"[{trial_id}] already {done['state']}; nothing to do")
        final = done.get("final", {})
        if report and final:                # a rerun still shows it in the progress table
            report(final)
        return final
    try:
        run, train_x, test = _start(cfg, trial, node, done, log)
        with Writer() as run.writer:             # store writes run beside training
            return _train(run, trial, train_x, test, report, log)
    except torch.OutOfMemoryError as e:
        raise _out_of_memory(trial, node or socket.gethostname(), e) from None


def _train(run, trial, train_x, test, report, log) -> dict:
    """Epochs from the run's epoch to the end: evaluate, flush, checkpoint, report."""
    cfg, last = run.cfg, {}
    while run.epoch < cfg.train.epochs:
        loss = _timed_epoch(run, train_x)
        if not math.isfinite(loss) or not _finite_params(run):
            return finish_diverged(run, trial, loss, last, log)
        last, evaluated = end_epoch(run, trial, loss, test, last)
        if evaluated and report and run.epoch < cfg.train.epochs:
            run.writer.flush()               # a scheduler may stop the trial at this report
            report(last)                    # the last epoch is reported once the trial is done
    return finish_completed(run, trial, test, last, report)


def end_epoch(run: Run, trial: TrialHandle, loss: float, test: datasets.Data,
              last: dict) -> tuple[dict, bool]:
    """Evaluate, flush and checkpoint at their cadence; returns (last metrics, evaluated)."""
    cfg = run.cfg
    evaluated = run.epoch % cfg.eval.every == 0 or run.epoch == cfg.train.epochs
    if evaluated:
        last = _evaluate_and_buffer(run, trial.store.study, trial.id, loss, test)
    checkpoint = run.epoch % cfg.checkpoint.every == 0 or run.epoch == cfg.train.epochs
    if evaluated or checkpoint:              # rows reach storage before anyone sees them
        ckpt = (run.epoch, checkpoint_bytes(state_dict(run)), cfg.checkpoint.keep) \
            if checkpoint else None         # serialised here, uploaded by the writer
        flush(run, trial, ckpt)
    return last, evaluated


def _out_of_memory(trial, node, err) -> FatalTrialError:
    """A retry on the same share of the same GPU runs out of memory again: fail now."""
    msg = (f"CUDA out of memory on {node}: too many trials or too large a pack on one GPU; "
           f"raise resources.gpu (fewer trials per GPU) or lower `pack` "
           f"({str(err).splitlines()[0][:200]})")
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    trial.set_status("failed", error=msg)
    return FatalTrialError(msg)


def _start(cfg, trial, node, done, log):
    """Mark the trial running, load its data and model, resume from its latest checkpoint."""
    node = mark_running(cfg, trial, node, done)
    device = setup_torch(cfg)
    train_x, test = load_splits(cfg, device)
    run = start_run(cfg, trial, node, log, tuple(train_x.shape[1:]), device,
                    fresh=done is None)
    return run, train_x, test


def mark_running(cfg, trial, node, done, **status) -> str:
    """The trial's status says running (and on which node) before anything can fail."""
    node = node or socket.gethostname()
    trial.begin(config=cfg.to_dict(), epochs=cfg.train.epochs,
                     attempts=(done or {}).get("attempts", 0) + 1, node=node, **status)
    return node


def setup_torch(cfg: TrialConfig) -> torch.device:
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    return pick_device(cfg.train.device)


def load_splits(cfg: TrialConfig, device: torch.device) -> tuple[torch.Tensor, datasets.Data]:
    """(training images on the device, the test split on the device)."""
    data = datasets.load(cfg.dataset)
    splits = datasets.split(data, cfg.dataset.split, cfg.dataset.split_seed)
    return splits.train.x.to(device), splits.test.to(device)


def start_run(cfg, trial, node, log, shape, device, fresh: bool = False) -> Run:
    """Build the trial and resume it from its latest checkpoint on storage; a `fresh` trial
    (no status file before this start) has no rows or checkpoints to look for."""
    run = build(cfg, shape, device)
    run.node = node
    if fresh:
        return run
    state = trial.resume()                             # rows after it are rolled back
    if state is not None:
        load_state(run, state)
        log(f"[{trial.id}] resuming after epoch {run.epoch} from its checkpoint")
    return run


def _timed_epoch(run: Run, train_x: torch.Tensor) -> float:
    t0 = time.perf_counter()
    if run.cfg.train.fault_oom_epoch == run.epoch + 1:   # as torch raises it, before any step
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB "
                                     "(injected by train.fault_oom_epoch)")
    if run.cfg.train.fault_nan_epoch == run.epoch + 1:   # a real NaN through the real step
        with torch.no_grad():
            next(run.vae.parameters()).view(-1)[0] = float("nan")
    loss = train_epoch(run, train_x)
    run.epoch += 1
    run.wall += time.perf_counter() - t0
    if run.cfg.train.fault_epoch_delay:                 # outside the recorded training time
        time.sleep(run.cfg.train.fault_epoch_delay)
    return loss


def finish_diverged(run, trial, loss, last, log) -> dict:
    """End the trial as diverged; its rows up to the last good evaluation stay."""
    log(f"[{trial.id}] diverged at epoch {run.epoch} (loss {loss}); keeping the last good "
        "evaluation")
    run.epoch -= 1
    flush(run, trial)
    run.writer.flush()
    last = last or last_metrics(trial)
    trial.finish("diverged", error=f"non-finite loss at epoch {run.epoch + 1}", final=last)
    return last


def finish_completed(run, trial, test, last, report) -> dict:
    """Traversals, merged files, the completed state; then the final report."""
    cfg = run.cfg
    if cfg.eval.traversals:
        mi = run.last_mi if run.last_mi is not None else \
            evaluate(run, test)["indicators"].factors["mi"]  # resumed at the end: recompute
        factors = traversal.pick_factors(mi, cfg.eval.used_threshold)
        images = datasets.as_float(test.x[:cfg.eval.traversal_images])
        png = traversal.montage(run.vae, images, factors)
        run.writer.submit(trial.traversal, png)
    run.writer.flush()                           # every row and checkpoint before the end state
    last = last or last_metrics(trial)
    trial.finish("completed", final=last)
    trial.keep_final(cfg.checkpoint.final, state_dict(run))   # never resumed now
    if report and last:                     # after finish: a scheduler may stop us here
        report(last)
    return last


def _evaluate_and_buffer(run, study, trial_id, loss, test) -> dict:
    rows, last = evaluation_rows(run, study, trial_id, evaluate(run, test), loss, test)
    for table, new in rows.items():
        run.rows[table] += new
    return last


def evaluation_rows(run, study, trial_id, ev, loss, test) -> tuple[dict[str, list[dict]], dict]:
    """One evaluation (with its indicators) -> (its rows, the last metrics); sets last_mi."""
    ev = {**ev, "scores": disentanglement_scores(run, ev, test)}
    rows = {**result_rows(run, study, trial_id, ev, loss, test), "codes": []}
    run.last_mi = ev["indicators"].factors["mi"]
    if run.epoch == run.cfg.train.epochs:                    # codes: the last evaluation only
        rows["codes"] = code_rows(run, study, trial_id, ev, test)
    row = rows["trials"][0]
    return rows, {k: row[k] for k in METRICS if row[k] is not None}


def disentanglement_scores(run: Run, ev: dict, test: datasets.Data) -> dict:
    """eval.metrics (MIG, SAP, modularity) on the points just encoded and their true factors;
    {} when none is asked for or the data have no factors."""
    names = run.cfg.eval.metrics
    if not names or test.factors is None:
        return {}
    from trainables.metrics import compute_searchable

    n = ev["eval_points"]
    return compute_searchable(names, ev["mu"].double().cpu().numpy(),            # [n, H]
                              test.factors[:n].double().cpu().numpy(),           # [n, P]
                              seed=(run.cfg.train.seed, run.epoch))


def last_metrics(trial: TrialHandle) -> dict:
    t = trial.read("trials")
    if t is None or t.num_rows == 0:
        return {}
    row = t.sort_by("epoch").slice(t.num_rows - 1).to_pylist()[0]
    return {k: v for k, v in row.items() if k in METRICS and v is not None}


def _finite_params(run: Run) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in run.vae.parameters())

"""Issue 16's benchmark: each disentanglement metric's cost per trial, the bias of small
stored samples, and the codes table's storage per trial.

Synthetic codes: P = 4 factors y ~ N(0, I), H = 128 latents; the first P codes are
y plus 0.1 noise, the rest N(0, 1) noise (a trial that uses P factors). Codes-based
metrics are timed on N = 1,000 and 10,000 stored points (medians of --reps), with
the per-pair `mutual_info_score(y, z)` MIG as the baseline of the bincount
contingency used here. FactorVAE and BetaVAE are timed in the report's fast setting
with the real App. D encoder (untrained; the cost is the same) on intrinsic images.
Storage: the codes table of one trial (mu, logvar, truth as float32 lists, zstd)
written through the result store. UDR (`--only udr`): its cost per trial in a
configuration of 5 seeds, and its values on independent codes per seed (the noise
figures of docs/analysis.md), 20 draws of 5 seeds each.

  python bench/bench_metrics.py                 # N = 1,000 and 10,000, 3 reps
  python bench/bench_metrics.py --smoke-test    # seconds; for CI
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.metrics import METRICS, compute_searchable  # noqa: E402
from trainables.metrics import discrete  # noqa: E402
from trainables.metrics.mig import gap  # noqa: E402
from resultstore.store import ResultStore  # noqa: E402


def planted(n: int, H: int, P: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.standard_normal((n, P))
    mu = rng.standard_normal((n, H))
    mu[:, :P] = y + 0.1 * rng.standard_normal((n, P))
    return mu, y


def timed(fn, reps: int) -> tuple[float, dict]:
    times, out = [], {}
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def sklearn_pairwise_mig(mu, y) -> dict:
    """The baseline: disentanglement_lib's loop, one mutual_info_score(y_k, z_h) per pair."""
    from sklearn.metrics import mutual_info_score

    z, c = discrete.histogram_discretize(mu), discrete.factor_classes(y)
    m = np.array([[mutual_info_score(c[:, k], z[:, h]) for k in range(c.shape[1])]
                  for h in range(z.shape[1])])
    return {"mig": gap(m, discrete.entropy(c))}


def codes_costs(sizes, H, P, reps, gbt_points):
    print(f"\ncost per trial, codes-based (H = {H}, P = {P}; median of {reps}; s)")
    print(f"{'metric':<42}" + "".join(f"{f'N={n:,}':>12}" for n in sizes) + f"{'speed vs base':>15}")
    rows = [("mig, per-pair mutual_info_score (base)", lambda mu, y: sklearn_pairwise_mig(mu, y)),
            *[(name, _metric(name)) for name in ("mig", "sap", "modularity", "dci_lasso",
                                                 "explicitness")],
            ("default (mig+dci_lasso+sap+modularity)",
             lambda mu, y: [_metric(n)(mu, y) for n in ("mig", "dci_lasso", "sap", "modularity")]),
            ("search objectives (mig+sap+modularity)",
             lambda mu, y: compute_searchable(("mig", "sap", "modularity"), mu, y, seed=0))]
    base = {}
    for label, fn in rows:
        line = f"{label:<42}"
        for n in sizes:
            mu, y = planted(n, H, P)
            t, _ = timed(lambda: fn(mu, y), reps)
            base.setdefault(n, t)
            line += f"{t:>12.2f}"
        print(line + f"{base[sizes[-1]] / t:>14.1f}x")
    if not gbt_points:
        print("dci_gbt: skipped (--smoke-test)")
        return
    h = min(H, 16)                  # trees' cost grows about linearly with the codes
    mu, y = planted(gbt_points, h, P)
    t, _ = timed(lambda: _metric("dci_gbt")(mu, y), 1)
    print(f"{f'dci_gbt (all {h} codes), N=' + format(gbt_points, ','):<42}{t:>12.2f}"
          f"   (disentanglement_lib's; about {t * H / h:.0f} s at H = {H})")


def _metric(name):
    m = METRICS[name]
    return lambda mu, y: m.fn(mu, y, np.random.default_rng(0), **m.hparams)


def bias(sizes, H, P):
    print("\nsmall-sample bias (planted codes as above; noise codes carry no information)")
    print(f"{'N':>8}{'MIG':>8}{'MI noise code (nats)':>22}{'Miller-Madow (B-1)^2/2N':>26}")
    for n in sizes:
        mu, y = planted(n, H, P, seed=1)
        z, c = discrete.histogram_discretize(mu), discrete.factor_classes(y)
        m = discrete.mutual_info(z, c)
        print(f"{n:>8,}{gap(m, discrete.entropy(c)):>8.3f}{m[P:].mean():>22.4f}"
              f"{(discrete.BINS - 1) ** 2 / (2 * n):>26.4f}")


def storage(sizes, H, P):
    print(f"\ncodes table per trial (H = {H}, P = {P}; Parquet, zstd)")
    for n in sizes:
        mu, y = planted(n, H, P)
        logvar = np.log(np.full((n, H), 0.05)) + 0.01 * np.random.default_rng(2).standard_normal((n, H))
        rows = [{"study": "b", "trial_id": "t", "epoch": 1, "point": i, "index": i,
                 "mu": mu[i].astype(np.float32).tolist(), "logvar": logvar[i].astype(np.float32).tolist(),
                 "truth": y[i].astype(np.float32).tolist()} for i in range(n)]
        with tempfile.TemporaryDirectory() as tmp:
            st = ResultStore(tmp, "b")
            st.trial("t").append({"codes": rows}, 1, 1)
            size = sum(p.stat().st_size for p in Path(tmp).rglob("*.parquet"))
        print(f"{n:>8,} points: {size / 1e6:6.2f} MB per trial; 1,000 trials {size / 1e6:6.2f} GB")


def render_costs(H, settings):
    import torch

    from analysis.metrics.truth import ground_truth
    from trainables.config import TrialConfig
    from trainables.vae import VAE

    torch.set_num_threads(1)
    cfg = TrialConfig.from_dict({"dataset": {"name": "intrinsic", "factors": 4},
                                 "model": {"latent_dim": H}})
    truth = ground_truth(cfg)
    vae = VAE((1, 28, 28), cfg).eval()

    @torch.no_grad()
    def encode(x):
        return torch.cat([vae.encoder(c)[0] for c in torch.as_tensor(x).split(4096)]).double().numpy()

    print(f"\ncost per trial, re-encoding rendered images (App. D encoder, H = {H}, 1 thread)")
    for name in ("factorvae", "betavae"):
        # an untrained encoder's codes vary less than the 0.05 prune: keep every dim, so the
        # whole vote loop runs as for a trained model
        hp = {**METRICS[name].hparams, **settings.get(name, {}),
              **({"prune_threshold": 0.0} if name == "factorvae" else {})}
        t, _ = timed(lambda: METRICS[name].fn(truth, encode, np.random.default_rng(0), **hp), 1)
        pair = 2 if name == "betavae" else 1                    # BetaVAE encodes pairs
        n = hp["batch_size"] * (hp["num_train"] + hp["num_eval"]) * pair
        print(f"{name:<12}{t:>8.2f} s  ({hp}, ~{n:,} images; published setting "
              f"{(10_000 + 5_000) * 64 * pair:,})")


def udr(sizes, reps, draws: int = 20):
    from analysis.metrics.udr import VARIANTS, compute_udr

    def seeds(rng, n, k, s=5):
        return [{"mu": rng.standard_normal((n, k)), "index": np.arange(n),
                 "used_idx": list(range(k))} for _ in range(s)]

    print("\nUDR cost per trial (5 seeds of one configuration: 4 pairs a trial; s)")
    for corr in VARIANTS:
        for k in (4, 16):
            cost = [timed(lambda: compute_udr(seeds(np.random.default_rng(0), n, k), None, corr),
                          reps)[0] / 5 for n in sizes]
            print(f"udr_{corr:<9} K={k:<3}" + "".join(f"  N={n:,}: {t:.3f}" for n, t in
                                                     zip(sizes, cost)))
    print(f"\nUDR on independent codes per seed ({draws} draws x 5 seeds): mean / max")
    for corr in VARIANTS:
        for n in (200, 1000, 5000):
            line = f"udr_{corr:<9} N={n:<6,}"
            for k in (2, 4, 10):
                v = [r[f"udr_{corr}"] for d in range(draws)
                     for r in compute_udr(seeds(np.random.default_rng(d), n, k), None, corr)]
                line += f"  K={k}: {np.mean(v):.3f} / {np.max(v):.3f}"
            print(line)
    udr_coverage(truth_draws=20 * draws * 50, reps=50 * draws)


def udr_coverage(truth_draws: int, reps: int):
    """Known truth for UDR's per-configuration interval: pair scores S[a, b] = 0.5 +
    0.1 (u_a + u_b) + 0.05 e_ab; the truth is the statistic's expectation over
    `truth_draws`; coverage of the jackknife interval and of a t-interval over the seeds'
    scores over `reps` draws."""
    from scipy.stats import t as student_t

    from analysis.metrics.udr import config_interval, seed_udr

    rng = np.random.default_rng(5)

    def draw(s):
        u = rng.standard_normal(s)
        pairs = 0.5 + 0.1 * (u[:, None] + u[None, :]) + 0.05 * rng.standard_normal((s, s))
        np.fill_diagonal(pairs, np.nan)
        return pairs

    print(f"\nUDR per configuration, 95% interval coverage ({reps} draws; truth from "
          f"{truth_draws:,}): seeds, jackknife, t over the seeds' scores")
    for s in (4, 6, 10):
        every = np.ones(s, dtype=bool)
        truth = np.mean([np.nanmean(seed_udr(draw(s), every)) for _ in range(truth_draws)])
        jack = naive = 0
        for _ in range(reps):
            pairs = draw(s)
            m, half, _ = config_interval(pairs)
            sd = np.nanmedian(pairs, axis=0).std(ddof=1)
            jack += abs(m - truth) <= half
            naive += abs(m - truth) <= student_t.ppf(0.975, s - 1) * sd / np.sqrt(s)
        print(f"  {s:>2} seeds: {jack / reps:.3f}  {naive / reps:.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--smoke-test", action="store_true", help="tiny sizes, for CI")
    p.add_argument("--only", help="comma-separated parts: codes, bias, storage, render, udr")
    a = p.parse_args()
    if a.smoke_test:
        sizes, H, reps, gbt, small = [200, 400], 16, 1, 0, {
            "factorvae": {"num_train": 10, "num_eval": 5, "num_variance_estimate": 200},
            "betavae": {"num_train": 20, "num_eval": 10}}
    else:
        sizes, H, reps, gbt, small = [1000, 10000], 128, a.reps, 1000, {}
    parts = a.only.split(",") if a.only else ["codes", "bias", "storage", "render", "udr"]
    if "codes" in parts:
        codes_costs(sizes, H, 4, reps, gbt)
    if "bias" in parts:
        bias(sizes + ([] if a.smoke_test else [100_000]), H, 4)
    if "storage" in parts:
        storage(sizes, H if not a.smoke_test else 16, 4)
    if "render" in parts:
        render_costs(H, small)
    if "udr" in parts:
        udr(sizes, reps, draws=2 if a.smoke_test else 20)
    if a.smoke_test:
        print("(--smoke-test: sizes too small for the figures to mean anything)")


if __name__ == "__main__":
    main()

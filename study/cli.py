"""`vaestudy`: the one console command.

    vaestudy train   --out DIR [--study NAME] [--config FILE] [--set k=v ...]   one trial, no Ray
"""
from __future__ import annotations

import argparse
import sys

from study.inputs import UsageError, check_name, load_yaml, merge, parse_sets


def cmd_train(args: argparse.Namespace) -> int:
    from trainables.config import ConfigError, TrialConfig
    from trainables.data import DataError
    from trainables.store import ResultStore, StoreError
    from trainables.train import run_trial

    study = check_name(args.study, "--study")
    raw = merge(load_yaml(args.config) if args.config else {}, parse_sets(args.set))
    try:
        cfg = TrialConfig.from_dict(raw)
        store = ResultStore(args.out, study)
        store.check_writable()
    except (ConfigError, StoreError) as e:
        raise UsageError(str(e)) from None
    trial_id = cfg.trial_id()
    print(f"trial {trial_id}: {cfg.noise.kind} noise, beta={cfg.noise.beta}, "
          f"sigma2={cfg.noise.sigma2}, {cfg.model.latent_dim} latents, {cfg.train.epochs} epochs "
          f"on {cfg.dataset.name}", flush=True)

    def report(m: dict) -> None:
        print(f"  epoch {m['epoch']:>4}  evlb {m['evlb']:10.2f}  mse {m['recon_mse']:.5f}  "
              f"mi_xz {m['mi_xz']:7.2f}  kl_qz_pz {m['kl_qz_pz']:7.3f}  "
              f"used {m['n_used_factors']:>3}  sigma2 {m['sigma2']:.5g}", flush=True)

    try:
        run_trial(cfg, store, report=report)
    except DataError as e:
        raise UsageError(str(e)) from None
    state = store.status(trial_id)["state"]
    print(f"trial {trial_id} {state}; results in {store.uri()}")
    print(f"  polars.scan_parquet('{store.glob('trials')}')")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vaestudy", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="run one trial in-process (no Ray) and write its results")
    t.add_argument("--out", required=True, help="results root (local path or s3://, gs:// URI)")
    t.add_argument("--study", default="train", help="study name under --out (default: train)")
    t.add_argument("--config", help="YAML file of trial keys (dataset.*, model.*, noise.*, ...)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a key; YAML value")
    t.set_defaults(func=cmd_train)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as e:
        print(f"vaestudy: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vaestudy: interrupted; `vaestudy resume` continues from the last checkpoints",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

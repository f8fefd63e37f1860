"""`vaestudy`: the one console command.

    vaestudy run     [SPEC.yaml | --preset NAME] [--out DIR] [--set k=v ...] [--address ADDR]
    vaestudy resume  DIR/STUDY [--address ADDR]
    vaestudy extend  DIR/STUDY [--spec FILE] [--set k=v ...] [--reuse OTHER ...]
    vaestudy status  DIR/STUDY
    vaestudy compact DIR/STUDY
    vaestudy check   DIR/STUDY [--repair]
    vaestudy report  DIR/STUDY [DIR/STUDY ...] [--higgins fast|published|none] [--metrics mig,dci,sap,modularity] [...]
    vaestudy presets
    vaestudy train   --out DIR [--study NAME] [--config FILE] [--set k=v ...]   one trial, no Ray
"""
from __future__ import annotations

import argparse
import sys

from study.inputs import UsageError, check_name, load_yaml, merge, parse_sets


def cmd_train(args: argparse.Namespace) -> int:
    from trainables.config import ConfigError, TrialConfig
    from trainables.data import DataError
    from resultstore.store import ResultStore
    from resultstore.uri import StoreError
    from trainables.train import FatalTrialError, run_trial

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
    except FatalTrialError as e:
        print(f"vaestudy: trial {trial_id} failed: {e}", file=sys.stderr)
        return 1
    state = store.status(trial_id)["state"]
    print(f"trial {trial_id} {state}; results in {store.uri()}")
    opts = f", storage_options={store.storage_options}" if store.storage_options else ""
    print(f"  polars.scan_parquet('{store.glob('trials')}'{opts})")
    return 0


def load_spec(args: argparse.Namespace):
    from study import presets
    from study.spec import parse

    if args.spec and args.preset:
        raise UsageError("give either SPEC.yaml or --preset NAME, not both")
    raw = load_yaml(args.spec) if args.spec else presets.load(args.preset or "quickstart")
    sets = parse_sets(args.set)
    if args.out:
        sets["storage"] = args.out
    if getattr(args, "reuse", None):
        sets["reuse"] = args.reuse
    return parse(merge(raw, sets))


def cmd_run(args: argparse.Namespace) -> int:
    spec = load_spec(args)
    if spec.search:                       # resume reads a recorded spec: not refused there
        from study.optuna_storage import refuse_password
        from study.search import parse_search

        refuse_password(parse_search(spec).storage)
    return _run(spec, spec.storage, args.address, resume=False, report=not args.no_report)


def cmd_resume(args: argparse.Namespace) -> int:
    from study.spec import parse
    from study.status import split_study_path
    from resultstore.store import ResultStore

    root, name = split_study_path(args.study)
    store = ResultStore(root, check_name(name, "DIR/STUDY"))
    if not store.exists(store.path("study.json")):
        raise UsageError(f"{args.study}: no study.json there; nothing to resume")
    meta = store.read_meta()
    spec = parse(meta["spec"])
    return _run(spec, root, args.address, resume=True, report=not args.no_report)


def cmd_extend(args: argparse.Namespace) -> int:
    from study import extend

    grow = extend.prepare(args.study, args.spec, parse_sets(args.set), args.reuse)
    print(grow.describe(), flush=True)
    return _run(grow.spec, grow.root, args.address, resume=True, report=not args.no_report,
                grow=grow)


def _run(spec, root: str, address: str | None, resume: bool, report: bool, grow=None) -> int:
    from study import runner
    from study.status import status_text

    out = runner.run(spec, root, address=address, resume=resume, grow=grow)
    if out.lost:
        print(f"study {spec.name}: another driver took it over; it is running there "
              f"(`vaestudy status {out.store.uri()}`)", file=sys.stderr)
        return 3
    print(status_text(out.store))
    current = None if out.ran else runner.report_current(out.store)
    if report and current:                 # nothing ran and no result since it was written
        print(f"report: {current} (no result changed since it was written)")
    elif report:
        _report(out.store)
    print(f"study {spec.name}: {out.counts['completed']} completed, {out.counts['diverged']} "
          f"diverged, {out.counts['failed']} failed in {out.seconds:.0f} s; results in "
          f"{out.store.uri()}")
    unfinished = out.counts.get("running", 0) + out.counts.get("pending", 0)
    if unfinished:
        print(f"{unfinished} trials did not finish (interrupted); continue with "
              f"`vaestudy resume {out.store.uri()}`", file=sys.stderr)
        return 130
    return 0 if out.counts["failed"] == 0 else 1


def _report(store) -> None:
    from analysis.report import Options, build_report, summary_table

    print(summary_table(store.root, store.study))
    print(f"report: {build_report(store.root, store.study, Options(progress=True))}")


def cmd_report(args: argparse.Namespace) -> int:
    from analysis.compare import build_compare
    from analysis.higgins import SETTINGS
    from analysis.report import Options, build_report
    from study.status import split_study_path
    from resultstore.store import ResultStore

    if args.threshold is not None and not args.threshold >= 0:
        raise UsageError(f"--threshold: got {args.threshold}; allowed: a number of nats >= 0")
    higgins = None if args.no_higgins or args.higgins == "none" else args.higgins
    if higgins is not None and higgins not in SETTINGS:
        raise UsageError(f"--higgins: got {higgins!r}; allowed: {', '.join(SETTINGS)}, none")
    studies = []
    for path in args.study:
        root, name = split_study_path(path)
        store = ResultStore(root, check_name(name, "DIR/STUDY"))
        if not store.listdir(store.path("trials")):
            raise UsageError(f"{path}: no trials/ folder there; not a study with results")
        studies.append((root, store.study))
    opts = Options(threshold=args.threshold, include_running=args.include_running,
                   trial=args.trial, higgins=higgins, rotations=args.rotations,
                   higgins_seeds=args.higgins_seeds or None,
                   workers=args.workers, trial_pages=not args.no_trial_pages,
                   progress=not args.quiet, metrics=_metric_names(args.metrics))
    for root, name in studies:
        print(f"report: {build_report(root, name, opts)}")
    if len(studies) > 1:
        print(f"comparison: {build_compare(studies, opts)}")
    return 0


def _metric_names(text: str) -> tuple[str, ...]:
    from analysis.metrics import DEFAULT, parse_names

    try:
        return DEFAULT if text == "default" else parse_names(text)
    except ValueError as e:
        raise UsageError(str(e)) from None


def study_store(study: str):
    """The store of DIR/STUDY; one line where it is not a study folder. One HEAD (or a
    one-key listing), not a listing of every trial's status file: on S3 that is a page per
    1,000 trials to parse."""
    from study.status import split_study_path
    from resultstore.store import ResultStore

    root, name = split_study_path(study)
    store = ResultStore(root, check_name(name, "DIR/STUDY"))
    if not store.exists(store.path("study.json")) and not store.exists(store.path("status")):
        raise UsageError(f"{study}: not a study folder (no study.json or status/)")
    return store


def cmd_status(args: argparse.Namespace) -> int:
    from study.status import status_text

    store = study_store(args.study)
    print(status_text(store))
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    from resultstore.compact import compact

    store = study_store(args.study)
    from study.runner import hold

    try:
        with hold(store, log=lambda line: None):
            n = compact(store, grace_s=args.grace)
    except UsageError as e:
        raise UsageError(f"compact: {args.study}: a driver holds the study and compacts it when "
                         f"it ends ({str(e).split('; wait', 1)[0].split(': ', 1)[-1]})") from None
    print(f"compacted {n} newly finished trials; one file per table in {store.uri()}"
          if n else f"nothing to compact in {store.uri()}: no finished trial outside the "
          "compact files")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Exit 0: nothing found (or all repaired); 1: findings left (without --repair, or lost)."""
    from resultstore.check import check
    from study.runner import hold

    store = study_store(args.study)
    if args.repair:
        with hold(store, log=lambda line: None):
            found = check(store, repair=True)
    else:
        found = check(store)
    bad = {k: v for k, v in found.items() if v}
    print(f"{store.uri()}: " + (", ".join(f"{v} {k}" for k, v in sorted(bad.items())) or
                                "every row readable exactly once")
          + (" (repaired)" if args.repair and bad else ""))
    return 1 if bad.get("lost") or (bad and not args.repair) else 0


def cmd_presets(args: argparse.Namespace) -> int:
    from study import presets
    from study.spec import parse

    for name in presets.names():
        spec = parse(presets.load(name))
        print(f"{name:<24} {spec.size_line():<40} {spec.description}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vaestudy", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run a study (default: the quickstart preset) on Ray Tune")
    r.add_argument("spec", nargs="?", help="study spec YAML (default: --preset quickstart)")
    r.add_argument("--preset", help="a built-in preset; `vaestudy presets` lists them")
    r.add_argument("--out", help="results root; overrides the spec's storage (default: results)")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a key; YAML value")
    r.add_argument("--address", help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray)")
    r.add_argument("--no-report", action="store_true", help="skip the report at the end")
    r.add_argument("--reuse", action="append", metavar="OTHER",
                   help="copy in trials that finished in study OTHER (same results root)")
    r.set_defaults(func=cmd_run)

    ex = sub.add_parser("extend", help="grow a study (more seeds, grid values, search budget); "
                                       "finished trials are kept, only new ones run")
    ex.add_argument("study", metavar="DIR/STUDY")
    ex.add_argument("--spec", help="a spec whose grid holds the study's (default: the recorded "
                                   "spec with --set applied)")
    ex.add_argument("--set", action="append", metavar="KEY=VALUE", help="e.g. seeds=[0,1,2,3]")
    ex.add_argument("--reuse", action="append", metavar="OTHER",
                    help="copy in trials that finished in study OTHER (same results root)")
    ex.add_argument("--address", help="Ray cluster to join (default: $RAY_ADDRESS, else local)")
    ex.add_argument("--no-report", action="store_true")
    ex.set_defaults(func=cmd_extend)

    re_ = sub.add_parser("resume", help="continue a killed study: finished trials are not rerun")
    re_.add_argument("study", metavar="DIR/STUDY")
    re_.add_argument("--address", help="Ray cluster to join (default: $RAY_ADDRESS, else local)")
    re_.add_argument("--no-report", action="store_true")
    re_.set_defaults(func=cmd_resume)

    st = sub.add_parser("status", help="counts by state, running trials, failures, throughput, "
                        "ETA, best trials so far")
    st.add_argument("study", metavar="DIR/STUDY")
    st.set_defaults(func=cmd_status)

    rp = sub.add_parser("report", help="write DIR/STUDY/report.html, report.md, analysis/*.parquet"
                        "; several studies: also a comparison page")
    rp.add_argument("study", metavar="DIR/STUDY", nargs="+")
    rp.add_argument("--threshold", type=float, default=None,
                    help="recount used factors with mi_h > this many nats (default: each "
                         "trial's eval.used_threshold)")
    rp.add_argument("--include-running", action="store_true",
                    help="also count running trials, all compared at a common epoch")
    rp.add_argument("--trial", default=None, help="trial id for Fig. 2 instead of the choice")
    rp.add_argument("--higgins", default="fast",
                    help="Higgins metric setting: fast (default), published "
                         "(disentanglement_lib's, minutes per trial) or none")
    rp.add_argument("--no-higgins", action="store_true", help="same as --higgins none")
    rp.add_argument("--rotations", type=int, default=10,
                    help="random rotations per trial for App. C (default 10)")
    rp.add_argument("--higgins-seeds", type=int, default=3,
                    help="score the lowest K seeds of each configuration (default 3; 0: all)")
    rp.add_argument("--workers", type=int, default=None,
                    help="processes scoring trials (default: the CPU count)")
    rp.add_argument("--no-trial-pages", action="store_true", help="skip pages/<trial>.html")
    rp.add_argument("--quiet", action="store_true", help="no progress bars")
    rp.add_argument("--metrics", default="default",
                    help="disentanglement metrics to compute, comma-separated: mig, dci, "
                         "dci_gbt, sap, modularity, explicitness, factorvae, betavae, udr "
                         "(= udr_lasso), udr_spearman, or none (default: "
                         "mig,dci,sap,modularity); see docs/analysis.md")
    rp.set_defaults(func=cmd_report)

    co = sub.add_parser("compact", help="merge finished trials into one sorted file per table")
    co.add_argument("study", metavar="DIR/STUDY")
    co.add_argument("--grace", type=float, default=5.0, metavar="S",
                    help="seconds readers that listed the old files get before they go [5]")
    co.set_defaults(func=cmd_compact)

    ck = sub.add_parser("check", help="find rows hidden or duplicated by a damaged compact file "
                                      "or a crash; --repair fixes them, losing nothing")
    ck.add_argument("study", metavar="DIR/STUDY")
    ck.add_argument("--repair", action="store_true", help="write what is found back (takes the "
                                                           "study's lease)")
    ck.set_defaults(func=cmd_check)

    pr = sub.add_parser("presets", help="list the built-in study presets")
    pr.set_defaults(func=cmd_presets)

    t = sub.add_parser("train", help="run one trial in-process (no Ray) and write its results")
    t.add_argument("--out", required=True, help="results root (local path or s3://, gs:// URI)")
    t.add_argument("--study", default="train", help="study name under --out (default: train)")
    t.add_argument("--config", help="YAML file of trial keys (dataset.*, model.*, noise.*, ...)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a key; YAML value")
    t.set_defaults(func=cmd_train)
    return p


def main(argv: list[str] | None = None) -> int:
    from resultstore.uri import StoreError

    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, StoreError) as e:               # bad input or unusable storage
        print(f"vaestudy: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vaestudy: interrupted; `vaestudy resume` continues from the last checkpoints",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

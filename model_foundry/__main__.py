"""`python -m model_foundry ARGS` is `foundry ARGS`: the CLI where no console script is installed,
and the module form launchers such as `torchrun -m model_foundry` expect."""
import sys

from model_foundry.cli.main import main

if __name__ == "__main__":
    sys.exit(main())

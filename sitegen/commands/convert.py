"""``sitegen convert SRC -o OUT``: convert one model checkpoint to the sitegen weights format."""

from __future__ import annotations

import argparse

from sitegen.convert import DEFAULT_SHARD_SIZE, QUANT_CHOICES, convert, parse_size
from sitegen.progress import ProgressReporter

__all__ = ["HELP", "add_arguments", "run"]

HELP = "convert a model (HF folder, hf:org/name, .gguf, package:DIST/PATH) to sharded weights"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SRC",
                        help="a Hugging Face folder, hf:org/name[@revision], a .gguf file or package:DIST/PATH")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder (replaced atomically)")
    parser.add_argument("--quant", default="q4", choices=QUANT_CHOICES,
                        help="storage type of the weight matrices (default: q4)")
    parser.add_argument("--embed-quant", default=None, choices=QUANT_CHOICES,
                        help="storage type of the embeddings and output head (default: same as --quant)")
    parser.add_argument("--shard-size", default=str(DEFAULT_SHARD_SIZE), metavar="SIZE",
                        help="bytes per shard file, e.g. 16MiB (default), 8MiB, 1048576")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")


def run(args: argparse.Namespace) -> int:
    """Run the verb; ``SitegenError`` propagates to the CLI, which prints it without a traceback."""
    shard_size = parse_size(args.shard_size, flag="--shard-size")
    reporter = None if args.quiet else ProgressReporter()
    try:
        out = convert(args.source, args.output, quant=args.quant, embed_quant=args.embed_quant,
                      shard_size=shard_size, progress=reporter)
    finally:
        if reporter:
            reporter.close()
    if not args.quiet:
        print(f"wrote {out / 'manifest.json'}")
    return 0

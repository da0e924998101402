"""The ``tfcompress`` command.

Usage:
    tfcompress demo [--epochs N] [--sparsity S] [--subset N] [--out DIR]
"""

import argparse
import os
import sys


def _demo(args):
    from tfcompress.recipes.demo import run_demo

    run_demo(out_dir=args.out, epochs=args.epochs, finetune_epochs=args.finetune_epochs,
             sparsity=args.sparsity, subset=args.subset, seed=args.seed)
    return 0


def build_parser():
    """Builds the argument parser of the ``tfcompress`` command."""
    parser = argparse.ArgumentParser(prog="tfcompress", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train a small CNN on Fashion-MNIST, prune, export, report")
    demo.add_argument("--epochs", type=int, default=1, help="dense training epochs (default 1)")
    demo.add_argument("--finetune-epochs", type=int, default=1, help="pruning fine-tune epochs")
    demo.add_argument("--sparsity", type=float, default=0.8, help="target sparsity (default 0.8)")
    demo.add_argument("--subset", type=int, default=None, help="training images (default all)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv=None):
    """Entry point of the ``tfcompress`` console script."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())

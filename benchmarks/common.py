"""Command-line arguments shared by the single-model benchmark scripts (throughput, embedding geometry)."""

import argparse

import torch


def single_model_parser(doc, default_model):
    """A parser with ``--model``, ``--dataset``, ``--data_path``, ``--set KEY=VALUE ...`` and ``--threads``."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--model", default=default_model)
    parser.add_argument("--dataset", default="amazon-beauty")
    parser.add_argument("--data_path", default="../shared/data")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    return parser


def apply_threads_and_overrides(args):
    """Set torch's CPU threads if asked; return the ``--set`` overrides as a config dict."""
    if args.threads:
        torch.set_num_threads(args.threads)
    return dict(item.split("=", 1) for item in args.set)

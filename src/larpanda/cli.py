"""The ``larpanda`` command line: one sub-command per job (docs/design.md §3).

Each sub-command lives in ``larpanda/commands/<name>.py`` with ``add_parser(subparsers)`` (which sets
``func``). Command modules import heavy libraries only inside their ``run`` function, so ``--help`` is fast.
User mistakes and bad data raise `larpanda.errors.UserError` / `DataError` and are printed here as one line
``larpanda: error: ...`` with exit status 2, never a traceback. Between parsing and the command, `main`
applies the thread policy (`larpanda.threads`; ``--threads N`` on any command): nothing before it may
import torch, because OpenMP reads its settings when torch loads it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = (
    "simulate",
    "info",
    "pretrain",
    "train",
    "evaluate",
    "predict",
    "embed",
    "bench",
    "convert",
    "study",
    "demo",
    "data",
)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="larpanda",
        description="Panda, a foundation model for LArTPC data, in pure PyTorch.",
    )
    parser.add_argument("--version", action="version", version=f"larpanda {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"larpanda.commands.{name}").add_parser(sub)
    _add_threads_option(parser, argparse.SUPPRESS)
    parser.set_defaults(threads=None)
    return parser


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _add_threads_option(parser: argparse.ArgumentParser, default) -> None:
    """``--threads N`` on ``parser`` and every (nested) sub-command parser, so that it may follow the
    command (``larpanda train semantic ... --threads 1``)."""
    parser.add_argument("--threads", type=_positive_int, default=default, metavar="N",
                        help="torch CPU threads (default: one per free core, see larpanda.threads)")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in set(action.choices.values()):
                _add_threads_option(child, argparse.SUPPRESS)


def error_exit(message: str, code: int = 2) -> None:
    first_line = " ".join(str(message).split("\n")).strip()
    print(f"larpanda: error: {first_line}", file=sys.stderr)
    raise SystemExit(code)


def _leave_process_group() -> None:
    """Under torchrun, leave the process group cleanly once a command has finished (``fit`` joins it)."""
    if "torch.distributed" in sys.modules:
        from .train import distributed as D

        D.cleanup()


def main(argv=None) -> int:
    from .errors import UserError
    from .threads import apply_thread_policy

    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        apply_thread_policy(args.threads)
        rc = args.func(args)
        _leave_process_group()
    except UserError as exc:
        error_exit(str(exc))
    except FileNotFoundError as exc:
        error_exit(f"{exc.filename}: no such file" if exc.filename else str(exc))
    except KeyboardInterrupt:
        print("larpanda: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())

"""The command line: ``aekit train | evaluate | score | export-projector | export | compare | pack | demo`` and the
uses of a run's codes (denoise, upscale, compress, decompress).

A user mistake (an :class:`AekitError`, a missing file, a bad option, a write the file system refuses) ends in one
line on stderr and exit status 2; an interrupt (Ctrl-C, or SIGTERM, which every command takes as it takes Ctrl-C) ends
with 128 + the signal's number (130, 143) after removing what was half written and saying how to resume, where there
is something to resume. The parser is built from the model registry (PyTorch, then); each command imports what it
runs (matplotlib, scikit-learn, the readers) only when it runs: `tests/test_cli.py` checks that building the parser
loads none of them.

Each command is one builder in :mod:`aekit.cli.runs` or :mod:`aekit.cli.uses` that adds its parser and attaches its
runner; :data:`COMMANDS` lists them in the order ``aekit --help`` shows, and the flags they share are in
:mod:`aekit.cli.flags`.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading

from aekit.cli import runs, uses
from aekit.errors import AekitError, Interrupted, TrainingStopped
from aekit.training import distributed

# The commands, each one builder that adds its parser and attaches its runner (`args.runner`, which `main` calls; its
# result goes to stdout, what was written where to stderr), in the order `aekit --help` lists them.
COMMANDS = (
    runs.train,
    runs.evaluate,
    uses.score,
    runs.export_projector,
    runs.export,
    runs.compare,
    uses.denoise,
    uses.upscale,
    uses.compress,
    uses.decompress,
    runs.pack,
    runs.demo,
)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line (it prints the usage as well by default)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="aekit",
        description="Auto-encoders (AE, denoising, dropout, adversarial, "
        "variational) and PCA: train, evaluate and compare them, and use their codes "
        "to denoise, upscale and compress images.",
    )
    parser.add_argument("--version", action="version", version=f"aekit {__import__('aekit').__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with _terminated_as_interrupted():
            args.runner(args)
    except AekitError as error:
        print(f"aekit: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        # What aekit's own writes do not already name (they raise StorageError, an AekitError), e.g. a library's.
        print(
            f"aekit: error: {error.filename or 'a file'}: {error.strerror or error}; check the path, its "
            "permissions and the free space",
            file=sys.stderr,
        )
        return 2
    except TrainingStopped as stop:
        print(f"aekit: {stop}", file=sys.stderr)
        return 128 + stop.signal_number
    except KeyboardInterrupt as interrupt:
        number = getattr(interrupt, "signal_number", signal.SIGINT)
        by = "" if number == signal.SIGINT else f" by {signal.Signals(number).name}"
        print(f"aekit: interrupted{by}{_resume_hint(args)}", file=sys.stderr)
        return 128 + number
    else:
        # A rank that tore its gloo group down while another still used it could abort the other (SIGABRT).
        distributed.wait_for_all()
    finally:
        distributed.shutdown()
    return 0


@contextlib.contextmanager
def _terminated_as_interrupted():
    """SIGTERM (what `timeout`, schedulers and `docker stop` send) interrupts the command inside the block as Ctrl-C
    does, so that it removes what it half wrote (training stops after a checkpoint on either, by itself)."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may handle signals
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(number: int, frame) -> None:
    raise Interrupted(number)


def _resume_hint(args: argparse.Namespace) -> str:
    """How to go on after an interrupted ``train``: resume where a checkpoint was written, else run it again."""
    if args.command != "train":
        return ""
    from aekit.training.run_folder import holds_run

    if holds_run(args.out):
        return f"; continue with `aekit train --resume --out {args.out}`"
    return "; no epoch had finished, so nothing was kept: run the same command again to start over"

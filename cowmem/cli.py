"""The command line: ``cowmem COMMAND``, one module per command in ``cowmem.commands``.

Exit status: 0 on success, 2 on bad usage or bad input (one line on
stderr, never a traceback), 1 when a measurement itself failed (the child
was killed, timed out, or the platform cannot measure) or a gate tripped,
130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from typing import Any, NoReturn, Optional, Sequence

from .errors import CowmemError, InsufficientMemoryError, NotApplicableError, UnknownNameError

# Each command: name -> (module, one-line help).  A module provides
# ``add_arguments(parser)`` and ``run(args) -> int`` and is imported only
# when its command runs, so that ``cowmem report`` needs neither numpy nor
# the measuring code, and a broken module breaks only its own command.
COMMANDS = {
    "list": ("cowmem.commands.list", "the data kinds and accesses, and which pairs apply"),
    "measure": ("cowmem.commands.measure", "measure what one access copies in a forked child"),
    "workers": ("cowmem.commands.workers",
                "multiprocessing workers read a numpy array and lists: what each copies"),
    "report": ("cowmem.commands.report",
               "asv results side by side per environment, and the upgrade gate"),
    "publish": ("cowmem.commands.publish",
                "the offline site: cowmem's overview, the upgrade page, the report, asv's graphs"),
    "watch": ("cowmem.commands.watch",
              "watch a prefork server: what each worker copied from its parent, over time"),
}


class UsageError(Exception):
    """Bad command-line input, reported in one line with exit status 2."""


# Errors that mean "the input was wrong", as opposed to "measuring failed".
BAD_INPUT = (UsageError, UnknownNameError, NotApplicableError, InsufficientMemoryError)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``cowmem measure: error: ...``, exit 2).

    A command's parser carries ``lazy_module``: its options are added from
    that module when the command is parsed.
    """

    lazy_module: Optional[str] = None

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_known_args(self, args: Optional[Sequence[str]] = None, namespace: Any = None) -> Any:
        if self.lazy_module is None:
            return super().parse_known_args(args, namespace)
        if importlib.util.find_spec(self.lazy_module) is None:
            self.exit(2, f"{self.prog}: error: not available in this installation "
                         f"({self.lazy_module} is missing)\n")
        module = importlib.import_module(self.lazy_module)
        module.add_arguments(self)
        self.lazy_module = None  # loaded: parse as any other subcommand
        self.set_defaults(handler=module.run)
        return super().parse_known_args(args, namespace)


def build_parser() -> argparse.ArgumentParser:
    """The ``cowmem`` parser with every command (their options load when used)."""
    parser = _Parser(prog="cowmem", description="Page-exact measurement of what a forked child copies.")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"cowmem {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        p.lazy_module = module
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except BAD_INPUT as exc:
        return fail(args.command, exc, 2)
    except CowmemError as exc:
        return fail(args.command, exc, 1)
    except KeyboardInterrupt:
        print("cowmem: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader left (``cowmem list | head``): silence the final flush.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def fail(command: str, exc: BaseException, status: int) -> int:
    """Print the error's first line (a child's traceback follows it) and return ``status``."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    print(f"cowmem {command}: error: {text}", file=sys.stderr)
    return status

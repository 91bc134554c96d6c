"""What every gpt2edu program does the same way: one-line errors, exit codes and quiet library logs.

A program turns an expected error (bad input, a damaged file, a full disk) into one line on stderr, worded as
argparse words its own (`PROG: error: MESSAGE`), and exits with 2; tracebacks are left for bugs.
"""

import argparse
import contextlib
import logging
import os
import sys

from transformers.utils import logging as transformers_logging

EXIT_OK = 0
EXIT_PIPE_CLOSED = 1  # Python's own exit code for a closed stdout (the `signal` module's "Note on SIGPIPE")
EXIT_USAGE = 2  # argparse's code for bad input; ours for every expected error
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C


class UsageError(Exception):
    """Bad input from the user, or a fault they can fix: reported as one line on stderr with exit code 2."""


def one_line(error: Exception | str, limit: int = 400) -> str:
    """An error's message on one line, cut at `limit` characters (library messages can run to thousands)."""
    message = " ".join(str(error).split()) or type(error).__name__
    return message if len(message) <= limit else message[: limit - 1] + "…"


def first_line(error: Exception | str, limit: int = 200) -> str:
    """The first line of an error's message (the line that says what went wrong), at most `limit` characters."""
    lines = str(error).strip().splitlines()
    return lines[0][:limit] if lines else type(error).__name__


def few(names: list[str], shown: int = 3) -> str:
    """'a, b, c (+4 more)': the first names of a list, and how many more there are."""
    more = f" (+{len(names) - shown} more)" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def report(error: Exception | str, prog: str | None = None, code: int = EXIT_USAGE) -> int:
    """Print an error as one line on stderr, as argparse words it, and return the exit code."""
    prog = prog or os.path.basename(sys.argv[0])
    print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
    return code


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, reporting an error in one line (argparse prints the whole usage above it)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def quiet_logs() -> None:
    """A program's logging: warnings and errors only, and no progress bars from transformers' loaders."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    transformers_logging.disable_progress_bar()


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' load reports for a while: the caller turns what they would say into errors of its own."""
    level = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(level)

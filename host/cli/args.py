# Runs on CPython (host): argument parsing for `tapkiosk` — a parser that raises, typed arguments, shared option sets.
"""The pieces every command group's parser is built from."""

from __future__ import annotations

import argparse
from datetime import date
from typing import Any, NamedTuple, NoReturn

from host.errors import InputError
from host.money import parse_yuan


class Parser(argparse.ArgumentParser):
    """argparse that raises InputError (one line, exit 2) instead of printing usage."""

    def error(self, message: str) -> NoReturn:
        raise InputError(f"{message} (see: {self.prog} --help)")


class Parents(NamedTuple):
    """Keyword arguments for ``add_parser``: ``read`` (``--json``) and ``write`` (``--json``
    and ``--idempotency-key``)."""

    read: dict[str, Any]
    write: dict[str, Any]


def parents() -> Parents:
    """The shared option sets of read and write commands."""
    common = Parser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine-readable output")
    write = Parser(add_help=False)
    write.add_argument("--idempotency-key", dest="key", metavar="KEY",
                       help="a repeat with the same key returns the first result")
    return Parents(dict(parents=[common]), dict(parents=[common, write]))


def group(sub: Any, name: str, help_text: str) -> Any:
    """A command with required subcommands (``tapkiosk member add`` ...)."""
    g = sub.add_parser(name, help=help_text).add_subparsers(dest="sub", parser_class=Parser)
    g.required = True
    return g


def whole(what: str, lo: int = 1, hi: int = 2**62) -> Any:
    """An argument type: a whole number ``lo..hi`` named ``what`` in the error."""
    def parse(text: str) -> int:
        if not (text.isascii() and text.isdigit()) or not lo <= int(text) <= hi:
            raise InputError(f"bad {what} {text!r}: expected a whole number {lo}..{hi}")
        return int(text)
    return parse


member_arg = whole("member id")


def money_arg(text: str) -> int:
    """An amount in yuan (``12.50``), above zero, as fen."""
    fen = parse_yuan(text)
    if fen <= 0:
        raise InputError(f"amount must be above 0.00, got {text!r}")
    return fen


def date_arg(text: str) -> date:
    """A ``YYYY-MM-DD`` date."""
    try:
        if len(text) != 10:
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        raise InputError(f"bad date {text!r}: use YYYY-MM-DD") from None

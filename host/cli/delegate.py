# Runs on CPython (host): `tapkiosk daemon|flash|sim|demo ...` — subcommands handed to their own modules.
"""Delegated subcommands: each is another module's ``main(argv)``, imported only when used.
The global options given before the subcommand are passed on when that module takes them.

The subcommands are the package's ``tapkiosk.commands`` entry points (pyproject.toml): the
daemon, the flash tool, the simulator and the demo. ``host`` names none of them itself, so
it imports nothing from ``sim`` or ``tools``."""

from __future__ import annotations

import importlib
import sys
from importlib.metadata import entry_points
from typing import Any

from host.errors import InputError

#: The entry-point group of the subcommands owned by other modules.
GROUP = "tapkiosk.commands"
GLOBAL_WITH_VALUE = ("--db", "--policy")


def delegated() -> dict[str, str]:
    """Subcommands owned by other modules, imported only when used: name -> module."""
    return {ep.name: ep.value for ep in entry_points(group=GROUP)}


def split_global(argv: list[str]) -> tuple[list[str], str | None, list[str]]:
    """Split leading global options from a delegated subcommand and its own argv."""
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in GLOBAL_WITH_VALUE:
            i += 2
        elif a == "--json" or any(a.startswith(g + "=") for g in GLOBAL_WITH_VALUE):
            i += 1
        else:
            break
    if i < len(argv) and argv[i] in delegated():
        return argv[:i], argv[i], argv[i + 1:]
    return argv, None, []


def _global_values(head: list[str]) -> list[tuple[str, str | None]]:
    """The global options before a delegated subcommand as (option, value or None)."""
    out: list[tuple[str, str | None]] = []
    i = 0
    while i < len(head):
        a = head[i]
        if a in GLOBAL_WITH_VALUE:
            out.append((a, head[i + 1] if i + 1 < len(head) else None))
            i += 2
            continue
        opt, eq, val = a.partition("=")
        out.append((opt, val) if eq else (a, None))
        i += 1
    return out


def forward_globals(name: str, accepted: Any, head: list[str], rest: list[str]) -> list[str]:
    """The delegated command's argv with the global options given before it appended.

    ``accepted`` is the module's ``GLOBAL_OPTIONS``: the global options its command line
    takes (a tuple), or for a command with subcommands a dict subcommand -> tuple. An option
    the command was also given after its name is not forwarded (its own flag wins); one it
    does not take raises InputError rather than being dropped silently.
    """
    given = _global_values(head)
    if not given:
        return rest
    if isinstance(accepted, dict):
        sub = next((a for a in rest if not a.startswith("-")), None)
        where = f"{name} {sub}" if sub else name
        accepted = accepted.get(sub, ())
    else:
        where = name
    out = list(rest)
    for opt, val in given:
        if opt not in accepted:
            raise InputError(f"{opt} is not an option of 'tapkiosk {where}'")
        if any(a == opt or a.startswith(opt + "=") for a in rest):
            continue
        if opt in GLOBAL_WITH_VALUE:
            if val is None:
                raise InputError(f"{opt} needs a value")
            out += [opt, val]
        else:
            out.append(opt)
    return out


def run(name: str, head: list[str], rest: list[str]) -> int:
    """Run the delegated subcommand ``name``; its exit code (2 when it is not installed or
    was given a global option it does not take)."""
    modname = delegated()[name]
    try:
        mod = importlib.import_module(modname)
        fn = mod.main
    except (ImportError, AttributeError) as e:
        print(f"tapkiosk: error: '{name}' is not available ({modname}: {e})", file=sys.stderr)
        return 2
    try:
        rest = forward_globals(name, getattr(mod, "GLOBAL_OPTIONS", ()), head, rest)
    except InputError as e:
        print(f"tapkiosk: error: {e}", file=sys.stderr)
        return e.exit_code
    return fn(rest)

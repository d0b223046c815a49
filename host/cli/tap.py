# Runs on CPython (host): `tapkiosk tap` — one operator tap through the rules engine.
"""The operator tap: a negative seq, idempotent by key (``Engine.decide_local``)."""

from __future__ import annotations

import argparse
from typing import Any

from host.store.uid import canonical_uid
from host.cli.args import Parents, money_arg, whole
from host.cli.context import Ctx, Handler
from host.errors import InputError
from host.rules import sales
from host.rules.engine import Engine, Tap
from host.store.devices import get_device


def add_parsers(sub: Any, p: Parents) -> None:
    """``tap DEVICE UID [--service N] [--amount YUAN] [--direction in|out] [--use-points [N]]``."""
    t = sub.add_parser("tap", help="run one tap through the engine", **p.write)
    t.add_argument("device_id")
    t.add_argument("uid")
    t.add_argument("--service", type=whole("service code", 0, 255),
                   help="wash program code (wash bays: required)")
    t.add_argument("--amount", type=money_arg, help="yuan (kiosks: required)")
    t.add_argument("--direction", choices=("in", "out"),
                   help="gate set to both directions: in (default) or out (leaving)")
    t.add_argument("--use-points", nargs="?", const="max", metavar="N",
                   help="kiosk: pay part with points, as many as the policy allows or N "
                        "(policy [points_payment])")


def _check_usage(kind: str, a: argparse.Namespace) -> None:
    """A kiosk tap needs --amount, a wash tap --service; neither is recorded without."""
    if kind == "kiosk" and a.amount is None:
        raise InputError(f"device {a.device_id} is a kiosk: give --amount YUAN")
    if kind == "wash" and a.service is None:
        raise InputError(f"device {a.device_id} is a wash bay: give --service CODE")
    if kind != "gate" and a.direction is not None:
        raise InputError("--direction is only for gates")


def _use_points(ctx: Ctx, kind: str, a: argparse.Namespace) -> int:
    """``--use-points [N]`` as ``Tap.use_points`` (0 without it); InputError when paying with
    points is off for the device's kind or N is not a number of points."""
    if a.use_points is None:
        return 0
    given: str | int = a.use_points
    if given != "max":
        if not given.isascii() or not given.isdigit():
            raise InputError(f"--use-points takes a number of points, got {given!r}")
        given = int(given)
    return sales.points_request(ctx.policy, kind, given)


def tap(ctx: Ctx, a: argparse.Namespace) -> None:
    kind = get_device(ctx.db, a.device_id)["kind"]
    _check_usage(kind, a)
    t = Tap(a.device_id, 0, canonical_uid(a.uid), service=a.service or 0,
            amount_fen=a.amount or 0, direction=a.direction,
            use_points=_use_points(ctx, kind, a))
    engine = Engine(ctx.db, ctx.policy)
    d = engine.decide_local(t, key=a.key)
    ctx.show({"seq": engine.last_local_seq, "verdict": d.verdict, "reason": d.reason,
              "text": d.text, "relay_ms": d.relay_ms, "pattern": d.pattern,
              "balance_fen": d.balance_fen, "points": d.points, "uses_left": d.uses_left,
              "member_id": d.member_id, "replayed": d.replayed})


COMMANDS: dict[str, Handler] = {"tap": tap}

# Runs on CPython (pytest): `tapkiosk card enroll --secure` through nfcpy's PN532 driver and the PN532 emulator over a pty; site key commands.
"""The CLI personalises a virtual NTAG 424 DNA lying on the emulated PN532: nfcpy senses it,
activates it as a Type 4A tag (RATS and ISO-DEP blocks over InCommunicateThru, answered by
sim/isodep.py) and carries the APDUs. Refusals exit 2 with one line and write nothing."""

import json
import os

import pytest

pytest.importorskip("nfc")

from sim.ntag424 import Ntag424  # noqa: E402
from sim.pn532 import PN532Emulator  # noqa: E402

UID = "04A1B2C3D4E5F6"


@pytest.fixture
def run(site_cli):
    assert site_cli("member", "add", "--consent-terms", "t1", "--name", "Li")[0] == 0
    return site_cli


@pytest.fixture
def emu():
    e = PN532Emulator()
    path = e.serve_pty()
    yield e, "pn532:" + path
    e.close()


def cards(run):
    code, out, err = run("--json", "export")
    return [(c["uid"], c["member_id"], c["secure"], c["key_version"], c["sun_counter"])
            for c in json.loads(out)["cards"]]


def refused(run, *argv):
    before = run("export")[1]
    code, out, err = run(*argv)
    assert code == 2, (out, err)
    assert err.startswith("tapkiosk: error: ") and err.count("\n") == 1
    assert run("export")[1] == before
    return err


def test_secure_enrolment_through_nfcpy_and_the_emulator(run, emu):
    e, reader = emu
    card = Ntag424(bytes.fromhex(UID))
    e.place(card)
    code, out, err = run("--json", "card", "enroll", UID, "--member", "1", "--secure",
                         "--reader", reader)
    assert code == 0, err
    r = json.loads(out)
    assert (r["secure"], r["key_version"], r["sun_counter"]) == (True, 1, card.counter)
    assert cards(run) == [(UID, 1, 1, 1, 1)]
    assert card.keys[0] != bytes(16)
    # Again: a no-op that does not touch the card.
    n = len(card.apdu_log)
    code, out, err = run("--json", "card", "enroll", UID, "--member", "1", "--secure",
                         "--reader", reader)
    assert code == 0 and json.loads(out)["unchanged"] is True
    assert len(card.apdu_log) == n


def test_card_that_is_not_blank_is_refused(run, emu):
    e, reader = emu
    e.place(Ntag424(bytes.fromhex(UID), keys=[os.urandom(16) for _ in range(5)]))
    err = refused(run, "card", "enroll", UID, "--member", "1", "--secure", "--reader", reader)
    assert "not blank" in err


def test_another_card_on_the_reader_is_refused(run, emu):
    e, reader = emu
    card = Ntag424(bytes.fromhex("04000000000001"))
    e.place(card)
    err = refused(run, "card", "enroll", UID, "--member", "1", "--secure", "--reader", reader)
    assert "04000000000001" in err and card.keys[0] == bytes(16)


def test_no_reader_unknown_member_and_bad_arguments_are_refused(run, emu, tmp_path):
    e, reader = emu
    card = Ntag424(bytes.fromhex(UID))
    e.place(card)
    err = refused(run, "card", "enroll", UID, "--member", "1", "--secure", "--reader",
                  "pn532:" + str(tmp_path / "no-such-tty"))
    assert "no reader" in err
    assert "unknown member 7" in refused(run, "card", "enroll", UID, "--member", "7",
                                         "--secure", "--reader", reader)
    assert "--reader" in refused(run, "card", "enroll", UID, "--member", "1", "--secure")
    assert "7-byte" in refused(run, "card", "enroll", "DEADBEEF", "--member", "1", "--secure",
                               "--reader", reader)
    assert card.apdu_log == []


def test_plain_enrolment_keeps_both_forms(run):
    assert run("card", "enroll", "1", "DEADBEEF")[0] == 0
    assert run("card", "enroll", "DEADBEE0", "--member", "1")[0] == 0
    assert [c[:3] for c in cards(run)] == [("DEADBEEF", 1, 0), ("DEADBEE0", 1, 0)]


def test_site_key_is_never_printed(run):
    code, out, err = run("--json", "site", "key")
    info = json.loads(out)
    assert (info["version"], info["created"]) == (1, False)  # made by init
    code, out, err = run("--json", "site", "key", "--rotate")
    assert json.loads(out)["version"] == 2
    exported = json.loads(run("--json", "export")[1])["site_keys"]
    assert [sorted(r) for r in exported] == [["created_at", "version"]] * 2
    with_keys = json.loads(run("--json", "export", "--with-keys")[1])["site_keys"]
    keys = [r["key"] for r in with_keys]
    assert all(len(k) == 32 for k in keys)
    for argv in (("site", "key"), ("init",), ("--json", "site", "key")):
        out = run(*argv)[1]
        assert not any(k in out.lower() for k in keys)

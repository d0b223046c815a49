# Runs on CPython (pytest): the PN532 emulator against frames written like UM0701-02.
"""Emulator tests at the byte level: checksums, ACK/NACK, error frame, extended frames, cards."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import wait_until  # noqa: E402
from sim.cards import FelicaCard, IsoDepCard, UidCard  # noqa: E402
from sim.pn532 import PN532Emulator  # noqa: E402
from pn532_frames import ACK, CMD, ERR, NACK, RSP  # noqa: E402


def drain(emu: PN532Emulator) -> bytes:
    out = b""
    while (f := emu.read_frame()) is not None:
        out += f
    return out


@pytest.fixture
def emu():
    e = PN532Emulator()
    e.feed(b"\x55")  # HSU wake-up byte (lost by the chip)
    yield e
    e.close()


def test_get_firmware_version(emu):
    emu.feed(CMD("02"))
    assert drain(emu) == ACK() + RSP("0332010607")


def test_first_byte_after_power_up_only_wakes_the_chip():
    e = PN532Emulator()
    e.feed(CMD("02")[1:])  # no preamble: the start code's 00 wakes the chip and is lost
    assert drain(e) == b""
    e.feed(CMD("02"))
    assert drain(e) == ACK() + RSP("0332010607")


def test_bad_length_or_data_checksum_gets_no_ack(emu):
    bad_lcs = bytearray(CMD("02"))
    bad_lcs[4] ^= 1
    bad_dcs = bytearray(CMD("02"))
    bad_dcs[-2] ^= 1
    emu.feed(bytes(bad_lcs) + bytes(bad_dcs))
    assert drain(emu) == b""
    emu.feed(CMD("02"))  # and the chip still parses what follows
    assert drain(emu) == ACK() + RSP("0332010607")


@pytest.mark.parametrize("cmd", ["FE", "4A0109", "3201", "06", "080011"])
def test_unknown_command_or_bad_parameters_give_the_error_frame(emu, cmd):
    emu.feed(CMD(cmd))
    assert drain(emu) == ACK() + ERR()


def test_nack_repeats_the_last_response(emu):
    emu.feed(CMD("02"))
    drain(emu)
    emu.feed(NACK())
    assert drain(emu) == RSP("0332010607")


def test_in_list_waits_for_a_card_and_ack_aborts_it(emu):
    emu.feed(CMD("4A0100"))  # MxRtyPassiveActivation is FF after power-up: wait forever
    assert drain(emu) == ACK()
    emu.feed(ACK())  # host aborts
    emu.place(UidCard(bytes.fromhex("01020304")))
    assert drain(emu) == b""
    emu.feed(CMD("4A0100"))
    assert drain(emu) == ACK() + RSP("4B01010004080401020304")


def test_pending_in_list_completes_when_a_card_arrives(emu):
    emu.feed(CMD("4A0100"))
    assert drain(emu) == ACK()
    emu.place(UidCard(bytes.fromhex("A1A2A3A4"), sak=0x18, atqa=0x0002))
    assert drain(emu) == RSP("4B010100021804A1A2A3A4")


def test_bounded_retries_answer_no_target_and_leave_sens_req_in_fifo(emu):
    emu.feed(CMD("3205FF0102"))
    assert drain(emu) == ACK() + RSP("33")
    emu.feed(CMD("4A0100"))
    assert drain(emu) == ACK() + RSP("4B00")
    emu.feed(CMD("066339"))  # ReadRegister CIU_FIFOData
    assert drain(emu) == ACK() + RSP("0726")


def test_card_removed_then_placed(emu):
    emu.feed(CMD("3205FF0102"))
    drain(emu)
    card = UidCard(bytes.fromhex("04A1B2C3D4E5F6"), sak=0x00, atqa=b"\x00\x44")
    emu.place(card)
    emu.feed(CMD("4A0100"))
    assert drain(emu) == ACK() + RSP("4B0101004400" "07" "04A1B2C3D4E5F6")
    emu.remove()
    emu.feed(CMD("4A0100"))
    assert drain(emu) == ACK() + RSP("4B00")


def test_uid_filter_with_cascade_tag(emu):
    emu.feed(CMD("3205FF0102"))
    drain(emu)
    emu.place(UidCard(bytes.fromhex("04A1B2C3D4E5F6"), sak=0x00, atqa=0x0044))
    emu.feed(CMD("4A0100" + "88" + "04A1B2C3D4E5F6"))
    assert drain(emu) == ACK() + RSP("4B0101004400" "07" "04A1B2C3D4E5F6")
    emu.feed(CMD("4A0100" + "88" + "04A1B2C3D4E5F7"))
    assert drain(emu) == ACK() + RSP("4B00")


def test_iso_dep_card_gets_ats_and_apdus(emu):
    card = IsoDepCard(bytes.fromhex("04112233445566"),
                      apdu_handler=lambda apdu: b"\x01\x02\x90\x00" if apdu[1] == 0xB0 else b"\x6a\x82")
    emu.place(card)
    emu.feed(CMD("4A0100"))
    assert drain(emu) == ACK() + RSP("4B010103442007" "04112233445566" "067577810280")
    emu.feed(CMD("4001" + "00B0000002"))
    assert drain(emu) == ACK() + RSP("4100" + "01029000")
    assert card.apdus == [bytes.fromhex("00B0000002")]
    emu.remove()
    emu.feed(CMD("4001" + "00B0000002"))
    assert drain(emu) == ACK() + RSP("4101")  # timeout: the card left


def test_set_parameters_without_auto_rats_drops_the_ats(emu):
    emu.place(IsoDepCard(bytes.fromhex("01020304")))
    emu.feed(CMD("1200"))
    emu.feed(CMD("4A0100"))
    assert drain(emu) == ACK() + RSP("13") + ACK() + RSP("4B01010344200401020304")


def test_felica_polling_at_212(emu):
    idm = bytes.fromhex("0101010601B00ADE")
    pmm = bytes.fromhex("0B03014B024F4993")
    emu.place(FelicaCard(idm, pmm, 0x12FC))
    emu.feed(CMD("4A0101" + "00FFFF0100"))
    assert drain(emu) == ACK() + RSP("4B0101" + "14" + "01" + idm.hex() + pmm.hex() + "12FC")


def test_extended_frames_both_ways(emu):
    data = "00" + bytes(x & 0xFF for x in range(262)).hex()  # Diagnose line test, 263 bytes
    emu.feed(CMD("00" + data))
    out = drain(emu)
    assert out == ACK() + RSP("01" + data)
    assert out[6:11] == bytes.fromhex("0000FFFFFF")


def test_hang_until_reset(emu):
    emu.hang()
    emu.feed(CMD("02"))
    assert drain(emu) == b""
    emu.reset()
    emu.feed(b"\x55" + CMD("02"))
    assert drain(emu) == ACK() + RSP("0332010607")
    assert emu.resets == 1


def test_babble_acks_commands_then_sends_only_stray_acks_until_reset(emu):
    emu.babble()
    emu.feed(CMD("02"))
    seen = bytearray()

    def three_more_acks():
        seen.extend(drain(emu))
        return len(seen) >= 4 * len(ACK())

    wait_until(three_more_acks, what="stray ACK frames")
    assert bytes(seen) == ACK() * (len(seen) // len(ACK()))  # the command's ACK, then only ACKs
    assert emu.commands == [0x02]
    emu.reset()
    assert not emu.babbling
    emu.feed(b"\x55" + CMD("02"))
    assert drain(emu) == ACK() + RSP("0332010607")


def test_rstpdn_low_holds_the_chip_in_reset(emu):
    emu.set_rstpdn(0)
    emu.feed(b"\x55" + CMD("02"))
    assert drain(emu) == b""
    emu.set_rstpdn(1)
    emu.feed(b"\x55" + CMD("02"))
    assert drain(emu) == ACK() + RSP("0332010607")


def test_corrupt_next_spoils_the_data_checksum_once(emu):
    emu.corrupt_next(1)
    emu.feed(CMD("02"))
    out = drain(emu)
    assert out[:6] == ACK() and out[6:] != RSP("0332010607") and len(out) == 6 + 13
    emu.feed(CMD("02"))
    assert drain(emu) == ACK() + RSP("0332010607")


def test_power_down_then_wake(emu):
    emu.feed(CMD("16B000"))
    assert drain(emu) == ACK() + RSP("1700")
    emu.feed(b"\x55" + CMD("02"))
    assert drain(emu) == ACK() + RSP("0332010607")


def test_i2c_status_byte_and_frames():
    e = PN532Emulator()
    assert e.i2c_read(0x24, 7) == bytes(7)  # not ready
    assert e.i2c_write(0x25, CMD("02")) is False  # wrong address: NACK
    assert e.i2c_write(0x24, CMD("02")) is True
    assert e.i2c_read(0x24, 1) == b"\x01"  # status only: frame stays
    assert e.i2c_read(0x24, 7) == b"\x01" + ACK()
    assert e.i2c_read(0x24, 20) == b"\x01" + RSP("0332010607") + bytes(6)
    assert e.i2c_read(0x24, 3) == bytes(3)


def test_spi_dw_sr_dr():
    e = PN532Emulator()
    e.spi_select(0)
    e.spi_exchange(b"\x01" + CMD("02"))
    e.spi_select(1)
    e.spi_select(0)
    assert e.spi_exchange(b"\x02\x00") == b"\x00\x01"
    e.spi_select(1)
    e.spi_select(0)
    assert e.spi_exchange(b"\x03" + bytes(6)) == b"\x00" + ACK()
    e.spi_select(1)
    e.spi_select(0)
    assert e.spi_exchange(b"\x03" + bytes(13)) == b"\x00" + RSP("0332010607")
    e.spi_select(1)
    e.spi_select(0)
    assert e.spi_exchange(b"\x02\x00") == b"\x00\x00"
    e.spi_select(1)


def test_hsu_over_tcp_round_trip():
    with PN532Emulator(card=UidCard(bytes.fromhex("CAFEBABE"))) as e:
        port = e.serve_tcp()
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"\x55\x55\x00\x00\x00" + CMD("3205FF0102") + CMD("4A0100"))
            want = ACK() + RSP("33") + ACK() + RSP("4B010100040804CAFEBABE")
            got = b""
            while len(got) < len(want):
                chunk = s.recv(256)
                assert chunk, "emulator closed the connection"
                got += chunk
            assert got == want


def test_bus_messages_over_tcp():
    import struct

    def req(s, kind, payload):
        s.sendall(kind + struct.pack(">H", len(payload)) + payload)
        n = struct.unpack(">H", s.recv(2))[0]
        data = b""
        while len(data) < n:
            data += s.recv(n - len(data))
        return data

    with PN532Emulator() as e:
        port = e.serve_bus()
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            assert req(s, b"W", b"\x24" + CMD("02")) == b"\x01"
            assert req(s, b"Q", b"irq") == b"\x00"  # IRQ low: a frame waits
            assert req(s, b"R", b"\x24\x00\x07") == b"\x01" + ACK()
            assert req(s, b"R", b"\x24\x00\x0e") == b"\x01" + RSP("0332010607")
            assert req(s, b"Q", b"irq") == b"\x01"
            e.hang()
            assert req(s, b"P", b"\x00rstpdn") == b""
            assert req(s, b"P", b"\x01rstpdn") == b""
            assert not e.hung and e.resets == 1


def test_place_rejects_non_cards():
    with pytest.raises(TypeError):
        PN532Emulator().place(object())


def test_cli_rejects_missing_transport(capsys):
    from sim.pn532 import main

    assert main([]) == 2
    assert "error" in capsys.readouterr().err

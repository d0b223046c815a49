# Runs on CPython (pytest): tools/flash.py --pins programN=GPIO — wash program buttons in config.json.
import pytest

from tools.flash import UsageError, build_config, parse_pins


def wash(pins: str) -> dict:
    return build_config({"device_id": "wash-1", "kind": "wash", "program": 1, "pins": pins},
                        bytes(32))


def test_program_buttons_go_to_config_json_as_inputs_with_the_pull_up():
    c = wash("program1=18,program2=19,program3=34")      # 34: input-only is fine for a button
    assert c["buttons"] == {"pins": {"1": 18, "2": 19, "3": 34}, "active": 0}
    assert "buttons" not in wash("")


@pytest.mark.parametrize("pins, needle", [
    ("program1=18,program2=18", "GPIO18 is given to both"),
    ("program1=26", "relay"),                            # the relay's default pin
    ("program0=18", "unknown pin"), ("program256=18", "unknown pin"),
    ("program1=6", "flash chip"),
])
def test_bad_button_pins_are_refused(pins, needle):
    with pytest.raises(UsageError, match=needle):
        wash(pins)


def test_buttons_only_on_a_wash_reader():
    with pytest.raises(UsageError, match="for wash readers"):
        build_config({"device_id": "k", "kind": "kiosk", "amount": "5.00",
                      "pins": "program1=18"}, bytes(32))
    assert parse_pins("program7=21") == {"program7": 21}

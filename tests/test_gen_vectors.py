# Runs on CPython (pytest): protocol/vectors.json is what tools/gen_vectors.py's independent reference writes.
from tools import gen_vectors


def test_committed_vectors_match_the_reference_encoder(capsys):
    assert gen_vectors.main(["--check"]) == 0, capsys.readouterr().out
    assert "up to date" in capsys.readouterr().out

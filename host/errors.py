# Runs on CPython (host): the exception root of the host layer and its subclasses.
"""Host exceptions.

Library code raises these; only ``main(argv=None) -> int`` entry points turn them into one
line on stderr and an exit code: every request the host refuses (bad input, unknown member,
conflicting idempotency key, not enough balance) exits 2 with nothing written.
"""


class HostError(Exception):
    """Root of every error raised by host code on purpose."""

    exit_code = 1


class InputError(HostError):
    """Bad user input (argument, money string, policy key): CLI exit code 2, nothing written."""

    exit_code = 2


class NotFound(HostError):
    """A member, card, device, pass or ledger entry that does not exist."""

    exit_code = 2


class Conflict(HostError):
    """The write contradicts what is stored (idempotency key reused with other arguments,
    device registered with another key, card enrolled to another member...)."""

    exit_code = 2


class InsufficientFunds(HostError):
    """A debit larger than the balance, points or uses available."""

    exit_code = 2

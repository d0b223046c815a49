# Runs on both CPython and MicroPython: the protocol layer's one exception root and its kinds.


class ProtocolError(ValueError):
    # Root of every error the protocol layer raises, with its message as the one argument
    # (str(e) is the message on both interpreters). `code` is the wire ERROR code.
    code = 1


class FrameError(ProtocolError):
    # Serial framing: bad COBS, bad CRC, oversize or truncated frame.
    code = 1


class MalformedError(ProtocolError):
    # Packet or body that does not follow the format (lengths, ranges, types, UTF-8).
    code = 1


class AuthError(ProtocolError):
    # MAC does not match the device key.
    code = 2


class ReplayError(ProtocolError):
    # Sequence number already used, or too old to be a retransmission.
    code = 4


class UnsupportedError(ProtocolError):
    # Version or message type this side does not speak.
    code = 5

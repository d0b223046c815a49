# Runs on both CPython and MicroPython: Consistent Overhead Byte Stuffing (Cheshire & Baker).
from protocol.errors import FrameError


def max_encoded_len(n):
    return n + n // 254 + 1


def encode_into(src, dst):
    # Encodes src into dst (no trailing 0x00); returns the number of bytes written.
    n = len(src)
    code_at = 0
    out = 1
    code = 1
    for i in range(n):
        b = src[i]
        if b == 0:
            dst[code_at] = code
            code_at = out
            out += 1
            code = 1
        else:
            dst[out] = b
            out += 1
            code += 1
            if code == 0xFF:
                dst[code_at] = code
                if i == n - 1:
                    # Input ends on a full block: no empty block after it (canonical COBS).
                    return out
                code_at = out
                out += 1
                code = 1
    dst[code_at] = code
    return out


def encode(src):
    buf = bytearray(max_encoded_len(len(src)))
    n = encode_into(src, buf)
    return bytes(buf[:n])


def decode_into(src, n, dst):
    # Decodes the first n bytes of src (one frame, without the 0x00 delimiter) into dst.
    # Returns the decoded length; raises FrameError on a malformed frame.
    i = 0
    out = 0
    cap = len(dst)
    while i < n:
        code = src[i]
        if code == 0:
            raise FrameError("cobs: zero byte inside frame")
        i += 1
        end = i + code - 1
        if end > n:
            raise FrameError("cobs: truncated block")
        if out + (end - i) > cap:
            raise FrameError("cobs: frame too large")
        while i < end:
            b = src[i]
            if b == 0:
                raise FrameError("cobs: zero byte inside frame")
            dst[out] = b
            out += 1
            i += 1
        if code != 0xFF and i < n:
            if out >= cap:
                raise FrameError("cobs: frame too large")
            dst[out] = 0
            out += 1
    return out


def decode(src):
    buf = bytearray(len(src))
    n = decode_into(src, len(src), buf)
    return bytes(buf[:n])

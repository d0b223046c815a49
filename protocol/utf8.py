# Runs on both CPython and MicroPython: strict UTF-8 (RFC 3629 section 4), one answer on both.
# MicroPython's bytes.decode accepts surrogates (ED A0 80), overlong forms (C0 80) and code points
# above U+10FFFF (F4 90 80 80); CPython refuses them. Text fields are checked here on both sides.


def valid(b):
    # True when b (bytes, bytearray or memoryview) is well-formed UTF-8.
    n = len(b)
    i = 0
    while i < n:
        c = b[i]
        if c < 0x80:
            i += 1
            continue
        if 0xC2 <= c <= 0xDF:
            k, lo, hi = 1, 0x80, 0xBF
        elif 0xE0 <= c <= 0xEF:
            # E0: no overlong 3-byte forms; ED: no UTF-16 surrogates D800..DFFF.
            k = 2
            lo = 0xA0 if c == 0xE0 else 0x80
            hi = 0x9F if c == 0xED else 0xBF
        elif 0xF0 <= c <= 0xF4:
            # F0: no overlong 4-byte forms; F4: nothing above U+10FFFF.
            k = 3
            lo = 0x90 if c == 0xF0 else 0x80
            hi = 0x8F if c == 0xF4 else 0xBF
        else:
            return False  # 80..C1 cannot start a sequence, F5..FF never appear
        if i + k >= n or not lo <= b[i + 1] <= hi:
            return False
        for j in range(i + 2, i + k + 1):
            if not 0x80 <= b[j] <= 0xBF:
                return False
        i += k + 1
    return True

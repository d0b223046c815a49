# Runs on the MicroPython unix port only (tests, demo): stand-in for `neopixel`; write() logs the colours to the pins log.
import machine


class NeoPixel:
    ORDER = (1, 0, 2, 3)

    def __init__(self, pin, n, bpp=3, timing=1):
        self.pin = pin
        self.n = n
        self.bpp = bpp
        self.buf = bytearray(n * bpp)
        self._name = "np%s" % (pin._id if isinstance(pin, machine.Pin) else pin)

    def __len__(self):
        return self.n

    def __setitem__(self, i, v):
        off = i * self.bpp
        for j in range(self.bpp):
            self.buf[off + j] = v[j]

    def __getitem__(self, i):
        off = i * self.bpp
        return tuple(self.buf[off + j] for j in range(self.bpp))

    def fill(self, v):
        for i in range(self.n):
            self[i] = v

    def write(self):
        # Logged as RGB(W) hex per pixel, e.g. "np5 00ff00" for one green pixel.
        machine._log(self._name, self.buf.hex() if hasattr(self.buf, "hex") else bytes(self.buf).hex())

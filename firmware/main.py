# Runs on the ESP32 (and the unix port in tests): the boot stub — picks the app directory (over-the-air switch, trial, rollback), then runs device.py from it.
#
# Never updated over the air (an update replaces the app, not this file), so it stays small and
# imports nothing of the app before it has chosen which app to run. Directories at the root:
#   app/   the app installed by the last update (absent: the app flashed at the root runs)
#   next/  a staged update (firmware/update.py wrote it and checked every hash)
#   prev/  the app before the last switch, kept for a rollback
# Files: trial.dat (the new app's boots so far, until it reaches the host), rollback.txt (why
# the last new app was rolled back: the app reports it as an EVENT, then deletes it).
# A switch is two renames (app -> prev, next -> app), each atomic; trial.dat is written before
# them, so a power cut anywhere leaves a state the next boot completes or rolls back.
import asyncio
import os
import sys

import machine

APP = "app"
NEXT = "next"
PREV = "prev"
TRIAL = "trial.dat"
ROLLBACK = "rollback.txt"
TRIAL_RESETS = 3          # boots on trial without reaching the host: then the old app comes back
TRIAL_MS = 60000          # time on trial to get a WELCOME (sim tests shorten it: trial_ms in config)


def _say(*args):
    print("tapkiosk:", *args)


def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def rmtree(path):
    if not exists(path):
        return
    if os.stat(path)[0] & 0x4000:
        for entry in os.ilistdir(path):
            rmtree(path + "/" + entry[0])
        os.rmdir(path)
    else:
        os.remove(path)


def read(path, default=""):
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return default


def write(path, text):
    with open(path + ".tmp", "w") as fh:
        fh.write(text)
    try:
        os.remove(path)
    except OSError:
        pass
    os.rename(path + ".tmp", path)


def rollback(why):
    # The app on trial goes; prev/ (or the app flashed at the root) runs from the next boot.
    _say("update rolled back:", why)
    write(ROLLBACK, read(APP + "/VERSION", "?") + ": " + why)
    rmtree(APP)
    if exists(PREV):
        os.rename(PREV, APP)
    try:
        os.remove(TRIAL)
    except OSError:
        pass


def switch():
    # Returns the boots on trial so far (0 = the app is not on trial).
    if exists(NEXT):
        write(TRIAL, "0")
        if exists(APP):
            rmtree(PREV)
            os.rename(APP, PREV)
        os.rename(NEXT, APP)
        _say("switched to app", read(APP + "/VERSION", "?"))
    if not exists(TRIAL):
        return 0
    n = int(read(TRIAL, "0") or "0") + 1
    if n > TRIAL_RESETS:
        rollback("reset %d times on trial" % (n - 1))
        return 0
    write(TRIAL, str(n))
    return n


class Ota:
    # What the stub tells the app: its version, whether it is on trial, a rollback to report.
    def __init__(self, trial):
        self.trial = trial
        self.version = read(APP + "/VERSION", "").strip() if exists(APP) else ""
        self.rollback = read(ROLLBACK, "").strip()
        self.trial_ms = TRIAL_MS
        if trial:
            import json
            try:
                with open("config.json") as fh:
                    self.trial_ms = int(json.load(fh).get("ota_trial_ms") or TRIAL_MS)
            except (OSError, ValueError, TypeError, AttributeError):
                pass

    def confirm(self):
        # The app reached the host: it stays.
        try:
            os.remove(TRIAL)
        except OSError:
            pass
        self.trial = 0

    def reported(self):
        try:
            os.remove(ROLLBACK)
        except OSError:
            pass
        self.rollback = ""

    def fail(self, why):
        rollback(why)
        machine.reset()

    async def guard(self):
        # On trial: no WELCOME within trial_ms and the old app comes back.
        await asyncio.sleep_ms(self.trial_ms)
        if self.trial:
            self.fail("no answer from the host in %d s" % (self.trial_ms // 1000))


async def _run(dev, ota):
    if ota.trial:
        asyncio.create_task(ota.guard())
    await dev.run()


def main():
    ota = Ota(switch())
    if exists(APP):
        sys.path.insert(0, APP)
    try:
        import device
        dev = device.build(ota)
    except Exception as e:  # noqa: BLE001 - any failure of a new app on trial rolls it back
        if not ota.trial:
            raise
        ota.fail("start failed: %r" % (e,))
    try:
        asyncio.run(_run(dev, ota))
    except KeyboardInterrupt:
        _say("stopped")
        sys.exit(0)
    except Exception as e:  # noqa: BLE001
        if not ota.trial:
            raise
        ota.fail("crashed: %r" % (e,))


if __name__ == "__main__":
    main()

# Runs on the ESP32 (and the unix port in tests): the boot stub — picks the app directory (over-the-air switch, trial, rollback), then runs device.py from it.
#
# Never updated over the air (an update replaces the app, not this file), so it stays small and
# imports nothing of the app before it has chosen which app to run. Directories at the root:
#   app/   the app installed by the last update (absent: the app flashed at the root runs)
#   next/  a staged update (firmware/update.py wrote it and checked every hash)
#   prev/  the app before the last switch, kept for a rollback
# Files: trial.dat (the new app's boots so far, until it reaches the host), rollback.txt (why
# the last new app was rolled back: the app reports it as an EVENT, then deletes it).
# A MicroPython firmware update (fwimage.py) switches ESP32 OTA app partitions instead: the
# same trial, confirmed with esp32.Partition.mark_app_valid_cancel_rollback(); on failure the
# previous partition boots again (set_boot, or the boot loader's own rollback).
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
FW_TRIAL = "fwtrial.dat"  # "<new partition> <previous partition> <version>" (fwimage.py)
FW_VERSION = "fw.txt"     # "<partition> <version>": the firmware image an update installed
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


def remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def running_partition():
    try:
        import esp32
        return esp32.Partition(esp32.Partition.RUNNING).info()[4]
    except (ImportError, OSError, AttributeError):
        return ""


def rollback(why):
    # The app on trial goes; prev/ (or the app flashed at the root) runs from the next boot.
    _say("update rolled back:", why)
    fw = read(FW_TRIAL).split(" ", 2)
    if len(fw) == 3:
        import esp32
        esp32.Partition(fw[1]).set_boot()
        write(ROLLBACK, fw[2] + ": " + why)
        remove(FW_TRIAL)
    else:
        write(ROLLBACK, read(APP + "/VERSION", "?") + ": " + why)
        rmtree(APP)
        if exists(PREV):
            os.rename(PREV, APP)
    remove(TRIAL)


def firmware_check():
    # After a firmware update: did the new partition start? If the boot loader went back,
    # that is the rollback to report. With no firmware on trial the running image is marked
    # valid (after a rollback the boot loader would otherwise go back again).
    fw = read(FW_TRIAL).split(" ", 2)
    if len(fw) != 3:
        try:
            import esp32
            esp32.Partition.mark_app_valid_cancel_rollback()
        except (ImportError, OSError, AttributeError):
            pass
        return
    if running_partition() != fw[0]:
        _say("firmware", fw[2], "did not start: running", running_partition())
        write(ROLLBACK, fw[2] + ": firmware did not start (boot loader went back)")
        remove(FW_TRIAL)
        remove(TRIAL)


def switch():
    # Returns the boots on trial so far (0 = the app is not on trial).
    firmware_check()
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
        fw = read(FW_VERSION).split(" ", 1)
        # The version of the firmware image an update installed, while that image runs.
        self.firmware = fw[1].strip() if len(fw) == 2 and fw[0] == running_partition() else ""
        self.trial_ms = TRIAL_MS
        if trial:
            import json
            try:
                with open("config.json") as fh:
                    self.trial_ms = int(json.load(fh).get("ota_trial_ms") or TRIAL_MS)
            except (OSError, ValueError, TypeError, AttributeError):
                pass

    def confirm(self):
        # The app (or firmware) reached the host: it stays. Returns the version confirmed.
        fw = read(FW_TRIAL).split(" ", 2)
        done = self.version
        if len(fw) == 3:
            import esp32
            esp32.Partition.mark_app_valid_cancel_rollback()
            write(FW_VERSION, fw[0] + " " + fw[2])
            remove(FW_TRIAL)
            self.firmware = done = fw[2].strip()
        remove(TRIAL)
        self.trial = 0
        return done

    def reported(self):
        remove(ROLLBACK)
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

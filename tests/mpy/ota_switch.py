# Runs under the MicroPython unix port (tests/test_fleet_units.py): the boot stub's app switch, trial and rollback (main.py), power cuts between its renames, and the updater waiting for the outbox before its restart (update.py).
import asyncio
import os

import main as M


def ver(d):
    return M.read(d + "/VERSION", "-") if M.exists(d) else "none"


def stage(v):
    os.mkdir("next")
    M.write("next/VERSION", v)


def state(tag, n):
    print(tag, n, "app", ver("app"), "prev", ver("prev"), "next", ver("next"),
          "trial", M.read("trial.dat", "none"))


state("PLAIN", M.switch())
stage("2")
state("FIRST", M.switch())           # from the app flashed at the root: no prev
os.remove("trial.dat")                 # it reached the host
stage("3")
state("SECOND", M.switch())
state("BOOT2", M.switch())
state("BOOT3", M.switch())
state("BOOT4", M.switch())           # more than TRIAL_RESETS boots on trial: rolled back
print("ROLLBACK", M.read("rollback.txt"))
os.remove("rollback.txt")
# Power cut between the two renames: app/ already moved to prev/, next/ not yet app/.
stage("4")
M.write("trial.dat", "0")
os.rename("app", "prev")
state("CUT", M.switch())
# Power cut in the middle of a rollback: app/ gone, prev/ not yet renamed back.
M.rmtree("app")
M.write("trial.dat", "3")
state("CUT_ROLLBACK", M.switch())


class _Outbox:
    def __init__(self):
        self.n = 2

    def pending(self):
        return self.n


class _App:
    def __init__(self):
        self.outbox = _Outbox()
        self.tap_path = type("T", (), {"live_seq": 0})()
        self.session = type("S", (), {"ctrl": []})()


async def _deliver(app, log):
    for _ in range(2):
        await asyncio.sleep_ms(300)
        log.append("tap delivered")
        app.outbox.n = max(app.outbox.n - 1, 0)


async def _run():
    from update import Updater
    app = _App()
    u = Updater(app)
    u.version = "9"
    log = []
    asyncio.create_task(_deliver(app, log))
    try:
        await u._switch()
    except SystemExit as e:
        log.append("reset %d" % e.args[0])
    print("SWITCH", log)

asyncio.run(_run())

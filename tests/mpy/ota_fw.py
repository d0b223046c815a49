# Runs under the MicroPython unix port with the sim/mpy esp32 stand-in (tests/test_fleet_units.py): a firmware image on trial that fails is rolled back to the partition it came from.
import main as M

with open("otadata.txt", "w") as fh:
    fh.write("ota_1 new")            # fwimage.Image.boot() chose ota_1 (set_boot)
M.write("fwtrial.dat", "ota_1 ota_0 3.0")
M.write("trial.dat", "0")
print("SWITCH", M.switch(), M.running_partition())
M.rollback("no answer from the host in 60 s")
print("DATA", open("otadata.txt").read(), M.exists("fwtrial.dat"), M.exists("trial.dat"))
print("ROLLBACK", M.read("rollback.txt"))

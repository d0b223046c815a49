# Runs on CPython (host): `python -m host.cli` runs the `tapkiosk` command line.
import sys

from host.cli.app import main

sys.exit(main())

# Runs on CPython (host): the `tapkiosk` command line; `main` is the console script.
from host.cli.app import main

__all__ = ["main"]

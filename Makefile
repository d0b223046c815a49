# tapkiosk: `make demo` runs the demo, `make test` runs every test. Both set themselves up.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-micropython venv site mosquitto postgresql chromium selftest bench clean screenshots

demo: $(STAMP)
	$(PY) -m sim.demo

test: $(STAMP) mosquitto postgresql chromium
	$(VENV)/bin/ruff check .
	$(PY) -m protocol.selftest
	$${TAPKIOSK_MICROPYTHON:-$(VENV)/bin/micropython} -m protocol.selftest
	$(PY) -m pytest -q

# The console pictures of docs/operators.md (docs/img/), taken from a running demo site.
screenshots: $(STAMP) chromium
	$(PY) docs/screenshots.py

# The MicroPython tests alone, under $$TAPKIOSK_MICROPYTHON when set (.ci/run: the 32-bit build).
test-micropython: $(STAMP)
	$${TAPKIOSK_MICROPYTHON:-$(VENV)/bin/micropython} -m protocol.selftest
	$(PY) -m pytest -q -m micropython

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "tapkiosk needs Python >= 3.11")'
	@$(PY) -m pip --version >/dev/null 2>&1 || $(PYTHON) -m venv --clear $(VENV) >/dev/null || { \
	  echo "error: cannot create $(VENV) with pip in it; on Debian: apt-get install python3-venv, then run make again" >&2; exit 1; }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

# The site PC: runtime dependencies only (the daemon, the CLI and tools/flash.py), no dev extras.
site:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "tapkiosk needs Python >= 3.11")'
	@$(PY) -m pip --version >/dev/null 2>&1 || $(PYTHON) -m venv --clear $(VENV) >/dev/null || { \
	  echo "error: cannot create $(VENV) with pip in it; on Debian: apt-get install python3-venv, then run make again" >&2; exit 1; }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .

mosquitto:
	@{ command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto; } && command -v mosquitto_passwd >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing mosquitto and mosquitto_passwd (MQTT tests use a real broker with the site's ACL)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; \
	  else \
	    echo "error: mosquitto is missing; install it with: sudo apt-get install mosquitto" >&2; exit 1; \
	  fi; }

# The tests on the PostgreSQL backend start their own server from Debian's package (initdb into
# a temporary folder); without it they are skipped, with the reason.
postgresql:
	@{ command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing postgresql (the store's PostgreSQL backend is tested on a real server)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  else \
	    echo "warning: postgresql is missing, the PostgreSQL tests will be skipped; install it with: sudo apt-get install postgresql" >&2; \
	  fi; }

# The console's browser tests drive Debian's chromium through Playwright (never its own download).
chromium:
	@command -v chromium >/dev/null 2>&1 || test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (console browser tests)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "warning: chromium is missing, the console browser tests will be skipped; install it with: sudo apt-get install chromium" >&2; \
	  fi; }

# Every bench once, in this order; each prints its figures, the last line JSON.
BENCHES := ledger mqtt_rtt throughput serial_rtt firmware_heap chain fsync_gap
bench: $(STAMP) postgresql
	@date -u '+== make bench %Y-%m-%d %H:%M UTC'; uptime
	@for b in $(BENCHES); do echo "== bench/$$b.py"; $(PY) bench/$$b.py || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis

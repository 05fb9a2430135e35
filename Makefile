# ics2gw: two commands do everything on a fresh machine
#   make demo   set up, then run the gateway against the bundled customs simulator
#   make test   set up, then run the whole test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED ?= ../shared
INTEROP := $(SHARED)/interop/santuario

.PHONY: install test pki state interop-deps broker-deps pg-deps systemd-deps browser-deps demo bench mutation clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# A stamp so that `make test` after `make install` does not reinstall.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@

pki: $(VENV)/.installed
	$(BIN)/python certs/make_pki.py

# the sample configuration's state folders and empty journal (`ics2gw run` refuses a journal that does not exist)
state: pki
	$(BIN)/ics2gw journal init --conf conf/gateway.toml >/dev/null

install: $(VENV)/.installed pki state

# Java + Apache Santuario for the interop tests (Debian packages; CI runs as root).
interop-deps:
	@if ! command -v javac >/dev/null 2>&1 || [ ! -f /usr/share/java/xmlsec.jar ] || [ ! -f /usr/share/java/javax.mail.jar ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jdk-headless \
	      libxml-security-java libmail-java >/dev/null) || echo "interop-deps: apt-get failed; interop tests will be skipped"; \
	  else echo "interop-deps: not root or no apt-get; interop tests will be skipped"; fi; \
	fi

# RabbitMQ for the AMQP tests (Debian package; the tests start a private node, never the system service).
broker-deps:
	@if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null) \
	      || echo "broker-deps: apt-get failed; AMQP tests will be skipped (and reported)"; \
	  else echo "broker-deps: not root or no apt-get; AMQP tests will be skipped (and reported)"; fi; \
	fi

# PostgreSQL for the postgresql journal tests (Debian package; the tests start a private server with initdb + pg_ctl
# in a temporary directory, gateway/journal/pglocal.py, never the system cluster). A policy-rc.d that denies
# service starts keeps the package's post-install from starting a cluster; a "main" cluster the package created is
# stopped anyway (and told not to start at boot), so the only PostgreSQL running is the one a test starts.
pg-deps:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    rc=/usr/sbin/policy-rc.d; own_rc=; \
	    if [ ! -e $$rc ]; then printf '#!/bin/sh\nexit 101\n' > $$rc && chmod 755 $$rc && own_rc=1; fi; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
	      || echo "pg-deps: apt-get failed; PostgreSQL tests will be skipped (and reported)"; \
	    if [ -n "$$own_rc" ]; then rm -f $$rc; fi; \
	    if command -v pg_lsclusters >/dev/null 2>&1; then \
	      pg_lsclusters -h 2>/dev/null | while read ver name rest; do \
	        pg_ctlcluster $$ver $$name stop >/dev/null 2>&1 || true; \
	        if [ -f /etc/postgresql/$$ver/$$name/start.conf ]; then echo manual > /etc/postgresql/$$ver/$$name/start.conf; fi; \
	      done; \
	    fi; \
	  else echo "pg-deps: not root or no apt-get; PostgreSQL tests will be skipped (and reported)"; fi; \
	fi

# systemd-analyze for tests/test_packaging.py (verifies the shipped unit); skipped loudly when missing.
systemd-deps:
	@if ! command -v systemd-analyze >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null) \
	      || echo "systemd-deps: apt-get failed; the unit-file test will be skipped"; \
	  else echo "systemd-deps: not root or no apt-get; the unit-file test will be skipped"; fi; \
	fi



# Debian chromium + chromium-driver for the status page browser tests (tests/test_statuspage_browser.py).
browser-deps:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver \
	      >/dev/null) || echo "browser-deps: apt-get failed; browser tests will be skipped"; \
	  else echo "browser-deps: not root or no apt-get; browser tests will be skipped"; fi; \
	fi

# the run ends with a list of every skipped test and its reason (tests/conftest.py)
test: install interop-deps broker-deps pg-deps systemd-deps browser-deps
	$(BIN)/python -m pytest -q

demo: install
	$(BIN)/ics2gw demo

bench: install
	$(BIN)/python -m bench

# Mutation testing (mutmut 3), one working directory per module group with the suites that exercise it
# (scripts/mutation.py --list); not run in CI (hours for every group on a shared 2-core VM). `make mutation GROUPS="verify mime"` runs
# some groups; `.venv/bin/python scripts/mutation.py --results GROUP` lists survivors; docs/mutation.md records the
# last score and why each remaining survivor stays. MUTMUT_CHILDREN=N sets the parallelism (default 1).
mutation: install
	$(BIN)/python scripts/mutation.py $(GROUPS)

clean:
	rm -rf $(VENV) certs/out var bench/results.json .pytest_cache dist build mutants

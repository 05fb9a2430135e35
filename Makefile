# ics2gw: two commands do everything on a fresh machine
#   make demo   set up, then run the gateway against the bundled customs simulator
#   make test   set up, then run the whole test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED ?= ../shared
INTEROP := $(SHARED)/interop/santuario

.PHONY: install test pki interop-deps demo bench mutation clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# A stamp so that `make test` after `make install` does not reinstall.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@

pki: $(VENV)/.installed
	$(BIN)/python certs/make_pki.py

install: $(VENV)/.installed pki

# Java + Apache Santuario for the interop tests (Debian packages; CI runs as root).
interop-deps:
	@if ! command -v javac >/dev/null 2>&1 || [ ! -f /usr/share/java/xmlsec.jar ] || [ ! -f /usr/share/java/javax.mail.jar ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jdk-headless \
	      libxml-security-java libmail-java >/dev/null) || echo "interop-deps: apt-get failed; interop tests will be skipped"; \
	  else echo "interop-deps: not root or no apt-get; interop tests will be skipped"; fi; \
	fi

test: install interop-deps
	$(BIN)/python -m pytest -q

demo: install
	$(BIN)/ics2gw demo

bench: install
	$(BIN)/python -m bench

# Mutation testing of verify.py, parse.py and mime.py ([tool.mutmut] in pyproject.toml); not run in CI (an hour
# or more on 2 cores). `$(BIN)/mutmut results` lists the survivors; docs/mutation.md records the last score.
mutation: install
	rm -rf mutants
	$(BIN)/mutmut run --max-children $${MUTMUT_CHILDREN:-2}
	$(BIN)/mutmut export-cicd-stats 2>/dev/null || true
	$(BIN)/mutmut results | tail -n 40

clean:
	rm -rf $(VENV) certs/out var bench/results.json .pytest_cache mutants

# nodenet: every target creates .venv (python3 -m venv) and installs what it needs first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-test

# mypy resolves `nodenet.*` through this tree of symlinks (the source folders are mapped
# to import names by setuptools' package-dir, which static checkers cannot follow).
TYPEROOT := build/typecheck

.PHONY: all test lint fmt typecheck bench soak demo clean install uninstall

all: test

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

$(TYPEROOT)/nodenet:
	mkdir -p $@
	ln -sfn ../../../protocol $@/protocol
	ln -sfn ../../../nodenetd $@/daemon
	ln -sfn ../../../cli $@/cli
	ln -sfn ../../../simulations $@/simulations

lint: $(STAMP) typecheck
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP) $(TYPEROOT)/nodenet
	MYPYPATH=$(TYPEROOT) $(BIN)/mypy --strict -p nodenet.protocol
	MYPYPATH=$(TYPEROOT) $(BIN)/mypy -p nodenet.daemon -p nodenet.cli -p nodenet.simulations

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/python -m pytest

# Long fuzzing, chaos and simulator runs; CI runs the short versions inside `make test`.
soak: $(STAMP)
	NODENET_FUZZ_ITERATIONS=2000000 $(BIN)/python -m pytest tests -k fuzz
	NODENET_SOAK=1 $(BIN)/python -m pytest tests/chaos
	NODENET_SIM_LARGE=1 $(BIN)/python -m pytest tests/simulations/test_swim_validation.py -k dissemination

bench: $(STAMP)
	$(BIN)/python benchmarks/codec.py
	$(BIN)/python benchmarks/reconcile.py
	$(BIN)/python benchmarks/membership.py
	$(BIN)/python benchmarks/store.py

# Three real daemons on 127.0.0.1, watched until Ctrl-C (README: "A 60-second tour").
demo: $(STAMP)
	$(BIN)/nodenet dev --nodes 3

clean:
	rm -rf build .demo .pytest_cache .mypy_cache .ruff_cache .hypothesis

# --- installation (as root): docs/operations.md -------------------------------------------
# A venv in $(PREFIX) built from the system Python (a pyenv or user Python would live under
# /root or /home, which the unit's ProtectHome=yes hides from the service).
PREFIX ?= /opt/nodenet
SYSTEM_PYTHON ?= /usr/bin/python3
DESTDIR ?=
UNITDIR ?= /etc/systemd/system
MANDIR ?= /usr/local/share/man
COMPLETIONDIR ?= /usr/share/bash-completion/completions

install:
	test "$$(id -u)" = 0 || { echo "make install: run as root"; exit 1; }
	$(SYSTEM_PYTHON) -m venv $(DESTDIR)$(PREFIX)
	$(DESTDIR)$(PREFIX)/bin/pip install --quiet --upgrade pip
	$(DESTDIR)$(PREFIX)/bin/pip install --quiet .
	# A staged install (DESTDIR) must run from $(PREFIX): pip wrote the staging path into
	# the scripts' #! lines and the venv's activate scripts.
	if [ -n "$(DESTDIR)" ]; then grep -rlI "$(DESTDIR)$(PREFIX)" $(DESTDIR)$(PREFIX)/bin | xargs -r sed -i "s|$(DESTDIR)$(PREFIX)|$(PREFIX)|g"; fi
	install -D -m 0644 systemd/nodenetd.service $(DESTDIR)$(UNITDIR)/nodenetd.service
	install -D -m 0644 systemd/nodenet.sysusers $(DESTDIR)/usr/lib/sysusers.d/nodenet.conf
	install -D -m 0644 systemd/nodenet.tmpfiles $(DESTDIR)/usr/lib/tmpfiles.d/nodenet.conf
	install -d $(DESTDIR)/usr/local/bin
	ln -sf $(PREFIX)/bin/nodenet $(DESTDIR)/usr/local/bin/nodenet
	ln -sf $(PREFIX)/bin/nodenetd $(DESTDIR)/usr/local/bin/nodenetd
	$(DESTDIR)$(PREFIX)/bin/python -m nodenet.cli.manpages --out $(DESTDIR)$(MANDIR)
	install -d $(DESTDIR)$(COMPLETIONDIR)
	_NODENET_COMPLETE=source_bash $(DESTDIR)$(PREFIX)/bin/python $(DESTDIR)$(PREFIX)/bin/nodenet > $(DESTDIR)$(COMPLETIONDIR)/nodenet
	if [ -z "$(DESTDIR)" ] && command -v systemd-sysusers >/dev/null; then systemd-sysusers; fi
	if [ -z "$(DESTDIR)" ] && command -v systemd-tmpfiles >/dev/null; then systemd-tmpfiles --create /usr/lib/tmpfiles.d/nodenet.conf; fi
	install -d -m 0750 $(DESTDIR)/etc/nodenet
	install -m 0640 systemd/nodenet.toml $(DESTDIR)/etc/nodenet/nodenet.toml.example
	if [ -z "$(DESTDIR)" ] && getent group nodenet >/dev/null; then chgrp -R nodenet /etc/nodenet; fi
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@echo "installed; next: nodenet init --config /etc/nodenet/nodenet.toml ... (docs/operations.md), then systemctl enable --now nodenetd"

# Leaves /etc/nodenet and /var/lib/nodenet (the node's identity and data) unless PURGE=1.
uninstall:
	test "$$(id -u)" = 0 || { echo "make uninstall: run as root"; exit 1; }
	if [ -d /run/systemd/system ]; then systemctl disable --now nodenetd 2>/dev/null || true; fi
	rm -f $(DESTDIR)$(UNITDIR)/nodenetd.service $(DESTDIR)/usr/lib/sysusers.d/nodenet.conf \
	      $(DESTDIR)/usr/lib/tmpfiles.d/nodenet.conf $(DESTDIR)/usr/local/bin/nodenet \
	      $(DESTDIR)/usr/local/bin/nodenetd $(DESTDIR)$(MANDIR)/man1/nodenet.1 \
	      $(DESTDIR)$(MANDIR)/man8/nodenetd.8 $(DESTDIR)$(COMPLETIONDIR)/nodenet \
	      $(DESTDIR)/etc/nodenet/nodenet.toml.example
	rm -rf $(DESTDIR)$(PREFIX)
	if [ "$(PURGE)" = 1 ]; then rm -rf $(DESTDIR)/etc/nodenet $(DESTDIR)/var/lib/nodenet; fi
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi

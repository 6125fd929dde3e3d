# Two commands on a fresh machine: `make run` and `make test`. Everything else is set up here.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
CONFIG ?= conf/router.yaml

.PHONY: run test lint format bench check clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,postgresql]'
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/webhook-router run -c $(CONFIG)

check: $(VENV)/.installed
	$(VENV)/bin/webhook-router check -c $(CONFIG)

test: $(VENV)/.installed /usr/bin/chromedriver
	$(PY) -m pytest

# Debian's chromium and chromium-driver for the console's browser tests, when missing.
/usr/bin/chromedriver:
	sh tests/install_browser.sh

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check router tests bench
	$(VENV)/bin/ruff format --check router tests bench

format: $(VENV)/.installed
	$(VENV)/bin/ruff format router tests bench
	$(VENV)/bin/ruff check --fix router tests bench

# Every target of issue 7 against nginx (installed here if missing), medians of BENCH_RUNS runs;
# BENCH_ARGS=--quick for tiny sizes. About 7 minutes with 3 runs.
BENCH_RUNS ?= 3
bench: $(VENV)/.installed
	sh bench/install_nginx.sh
	$(PY) -m compileall -q router  # as an installed package has it (PYTHONDONTWRITEBYTECODE may be set)
	$(PY) bench/bench.py --runs $(BENCH_RUNS) $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var *.egg-info .pytest_cache

# Ten minutes of mixed traffic with kill -9 every few seconds; SOAK_SECONDS=60 for a short one.
.PHONY: soak
soak: $(VENV)/.installed
	nice $(PY) bench/soak.py

# Production install, as root, on a stock Debian 12 / Ubuntu 24.04 (README, Install for
# production): a venv under PREFIX holding the package (the system Python refuses pip, PEP 668),
# the config directory (the example config only where none is: an operator's is never
# overwritten), the systemd unit naming PREFIX. DESTDIR stages it all for a package: the venv is
# built at $(DESTDIR)$(PREFIX) and, a venv not being relocatable, its commands get a launcher
# that runs the interpreter beside them, so they work there and at PREFIX alike.
PREFIX         ?= /opt/webhook-router
SYSTEMD_DIR    ?= /etc/systemd/system
INSTALL_PYTHON ?= /usr/bin/python3
CONF_DIR        = /etc/webhook-router
STATE_DIR       = /var/lib/webhook-router
UNIT            = webhook-router.service
STAGED          = $(DESTDIR)$(PREFIX)

# Replaces a command's "#!/path/to/venv/bin/python": sh runs the python beside the (resolved)
# script, which Python then reads as a docstring.
define LAUNCHER
#!/bin/sh
'''exec' "$$(dirname -- "$$(readlink -f -- "$$0")")/python" "$$0" "$$@"
' '''
endef
export LAUNCHER

.PHONY: install uninstall
install:
	@$(INSTALL_PYTHON) -c 'import ensurepip' 2>/dev/null || { \
	    echo "make install: $(INSTALL_PYTHON) cannot make a venv: apt-get install python3-venv" >&2; exit 1; }
	umask 022 && $(INSTALL_PYTHON) -m venv --clear $(STAGED)
	umask 022 && $(STAGED)/bin/python -m pip install --quiet --disable-pip-version-check '.[postgresql]'
	cd $(STAGED)/bin && for f in $$(grep -l '^#!$(STAGED)/bin/python' *); do \
	    { echo "$$LAUNCHER"; tail -n +2 "$$f"; } > "$$f.new" && chmod 0755 "$$f.new" && mv "$$f.new" "$$f"; done
	sed -i 's|$(STAGED)|$(PREFIX)|g' $(STAGED)/pyvenv.cfg $(STAGED)/bin/activate*
	install -d -m 0755 $(DESTDIR)$(CONF_DIR) $(DESTDIR)$(SYSTEMD_DIR)
	test -e $(DESTDIR)$(CONF_DIR)/router.yaml || { \
	    sed 's|^state_dir: .*|state_dir: $(STATE_DIR)    # journal and control socket (StateDirectory=)|' \
	        conf/router.yaml > $(DESTDIR)$(CONF_DIR)/router.yaml.new && \
	    grep -q '^state_dir: $(STATE_DIR) ' $(DESTDIR)$(CONF_DIR)/router.yaml.new && \
	    chmod 0644 $(DESTDIR)$(CONF_DIR)/router.yaml.new && \
	    mv $(DESTDIR)$(CONF_DIR)/router.yaml.new $(DESTDIR)$(CONF_DIR)/router.yaml; }
	test -e $(DESTDIR)$(CONF_DIR)/tokens.yaml || { \
	    { sed '/^# DEMO token/,$$d' conf/tokens.yaml && \
	      echo '# None yet: add the entry that `webhook-router token NAME --scope admin` prints.'; \
	    } > $(DESTDIR)$(CONF_DIR)/tokens.yaml.new && \
	    chmod 0644 $(DESTDIR)$(CONF_DIR)/tokens.yaml.new && \
	    mv $(DESTDIR)$(CONF_DIR)/tokens.yaml.new $(DESTDIR)$(CONF_DIR)/tokens.yaml; }
	sed 's|/opt/webhook-router/bin/webhook-router|$(PREFIX)/bin/webhook-router|g' systemd/$(UNIT) \
	    > $(DESTDIR)$(SYSTEMD_DIR)/$(UNIT).new
	chmod 0644 $(DESTDIR)$(SYSTEMD_DIR)/$(UNIT).new
	mv $(DESTDIR)$(SYSTEMD_DIR)/$(UNIT).new $(DESTDIR)$(SYSTEMD_DIR)/$(UNIT)
	@echo "Installed. Edit $(CONF_DIR)/router.yaml, then: systemctl daemon-reload && systemctl enable --now $(UNIT)"

# Removes the venv and the unit; keeps the config ($(CONF_DIR)) and the state ($(STATE_DIR)).
uninstall:
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl disable --now $(UNIT) || true; fi
	rm -rf $(STAGED) $(DESTDIR)$(SYSTEMD_DIR)/$(UNIT)
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@echo "Removed $(PREFIX) and the unit; kept $(CONF_DIR) and $(STATE_DIR)."

# mimocorb2: everything a fresh machine needs goes through these targets.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test demo bench soak clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	sh scripts/ensure-test-deps.sh
	$(PY) -m pytest -q

# the daemon in the foreground, a run started through its socket, live status ~20 s, stop, outputs
demo: $(STAMP)
	$(PY) -m mimocorb2.demo --seconds $${DEMO_SECONDS:-20}

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

# not in CI: a multi-stage pipeline under the daemon for SOAK_MINUTES (default 10); SOAK_RATE events/s
# (default 0: as fast as it goes); SOAK_PAGES headless Chromium pages on the daemon's web page (default 0)
soak: $(STAMP)
	$(PY) benchmarks/soak.py --minutes $${SOAK_MINUTES:-10} --rate $${SOAK_RATE:-0} --pages $${SOAK_PAGES:-0}

clean:
	rm -rf $(VENV) build *.egg-info

# convscope — the two commands a newcomer needs: `make demo` and `make test`.
# Each installs what it needs itself: a venv, torch==2.13.0 (CPU build) first, then the package.
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CHROMIUM ?= /usr/bin/chromium

.PHONY: demo test lint typecheck pytest bench chromium clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# Debian's chromium for the browser tests (never a downloaded browser).
chromium:
	@test -x $(CHROMIUM) || { (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@test -x $(CHROMIUM) && $(CHROMIUM) --version

demo: $(STAMP)
	$(VENV)/bin/convscope demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench scripts docs

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# pytest exits 5 when it ran no test: that is a failure here.
pytest: $(STAMP) chromium
	$(PY) -m pytest; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest ran no test: failing"; exit 1; fi; exit $$rc

test: lint typecheck pytest

bench: $(STAMP)
	$(PY) bench/watch.py
	$(PY) bench/diagnose.py
	$(PY) bench/projections.py
	$(PY) bench/units.py
	$(PY) bench/embed.py
	$(PY) bench/occlusion.py
	$(PY) bench/distributed.py
	$(PY) bench/speed.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# hostagent - developer entry points. Run as root (BPF needs it).
VENV    ?= .venv
PY      := $(VENV)/bin/python
CONFIG  ?= packaging/hostagent.toml
PROTO_OUT := hostagent/admin/v1

.PHONY: setup deps venv compile run test test-unit lint proto clean

setup: deps $(VENV)/.installed compile

deps:
	bash .ci/install-deps.sh

# --system-site-packages: bcc's Python module comes from Debian's python3-bpfcc.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# The per-span stages compiled with mypyc (setup.py lists them; hostagent/compiled.py falls back to
# the source when a module was edited since). Rebuilt when any hostagent source is newer.
COMPILED_STAMP := hostagent/.compiled
$(COMPILED_STAMP): setup.py $(shell find hostagent -name '*.py' -not -path '*/v1/*') | $(VENV)/.installed
	HOSTAGENT_COMPILE=1 $(PY) setup.py -q build_ext --inplace
	@# a source edit that leaves the generated C unchanged (a comment) relinks nothing: mark the
	@# libraries as built from the current sources (hostagent/compiled.py compares the times)
	find hostagent -name '*.so' -exec touch {} +
	touch $@

compile: $(COMPILED_STAMP)

run: setup
	$(VENV)/bin/hostagent run --config $(CONFIG)

# pytest exits 5 when it collected no test: that is a failure here, never a silent pass.
# Then the unit tests once more on the per-span stages' Python source (HOSTAGENT_PURE=1): what a
# host runs whose CPython has no compiled wheel in the package.
test: setup
	$(PY) -m pytest tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	[ $$rc -eq 0 ] || exit $$rc; \
	echo "make test: unit tests on the pure-Python stages (HOSTAGENT_PURE=1)"; \
	HOSTAGENT_PURE=1 $(PY) -m pytest -q tests/unit; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test-unit: $(VENV)/.installed
	$(PY) -m pytest tests/unit

proto: $(VENV)/.installed
	$(PY) -m hostagent.admin.gen

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check hostagent control tests bench
	$(VENV)/bin/mypy hostagent control

include packaging/packaging.mk
include bench/bench.mk

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache $(COMPILED_STAMP)
	find hostagent -name '*.so' -delete

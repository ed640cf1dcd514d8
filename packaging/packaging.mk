# Packaging targets; included by the top-level Makefile (`include packaging/packaging.mk`).
#   make deb [RELEASE=2]   -> dist/hostagent_<version>-<release>_amd64.deb
#   make rpm [RELEASE=2]   -> dist/hostagent-<version>-<release>.x86_64.rpm
# The build needs a python with pip (the project venv) to build and download wheels, dpkg-deb
# and rpmbuild (package rpm). See packaging/README.md.
RELEASE ?= 1
PKG_PYTHON ?= $(VENV)/bin/python

.PHONY: deb rpm packages

deb: $(VENV)/.installed
	PYTHON=$(PKG_PYTHON) RELEASE=$(RELEASE) bash packaging/build.sh deb

rpm: $(VENV)/.installed
	PYTHON=$(PKG_PYTHON) RELEASE=$(RELEASE) bash packaging/build.sh rpm

packages: $(VENV)/.installed
	PYTHON=$(PKG_PYTHON) RELEASE=$(RELEASE) bash packaging/build.sh all

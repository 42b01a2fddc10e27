# Developer entry points. `make demo` and `make test` each work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DISTS := vxsandbox_core vxsandbox_resources_log vxsandbox_resources_outbound vxsandbox_resources_kv \
         vxsandbox_resources_http vxsandbox_resources_contacts vxsandbox_js
PKG_FILES := $(foreach d,$(DISTS),$(d)/pyproject.toml)
NPM_APPS := $(patsubst %/package-lock.json,%,$(wildcard examples/*/package-lock.json))
# npm writes node_modules/.package-lock.json on every install: it is the stamp of an install
# that matches package-lock.json, so `npm ci` (which first wipes node_modules, and fails offline)
# runs only when the lock file changed or nothing is installed.
NPM_STAMPS := $(foreach app,$(NPM_APPS),$(app)/node_modules/.package-lock.json)

.PHONY: demo test lint tox services npm

$(VENV)/.installed: $(PKG_FILES) pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e "./vxsandbox_core[test]" $(foreach d,$(filter-out vxsandbox_core,$(DISTS)),-e ./$(d)) \
		ruff tox hatchling
	touch $@

npm: $(NPM_STAMPS)

examples/%/node_modules/.package-lock.json: examples/%/package-lock.json
	npm ci --silent --no-audit --no-fund --prefix examples/$*
	touch $@

services:
	scripts/start-services

## Run the example USSD app in the terminal on the embedded defaults (no broker, no Redis needed).
demo: $(VENV)/.installed npm
	$(VENV)/bin/vxsandbox chat examples/vumigo_app --config-json '{"name": "Tea Time"}' $(DEMO_ARGS)

## Install everything, start Redis and RabbitMQ if needed, run the whole test suite.
test: $(VENV)/.installed npm services
	$(PY) -m pytest -n 2 -q -p no:cacheprovider

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

## One environment per distribution, each with only that distribution installed.
tox: $(VENV)/.installed npm services
	$(VENV)/bin/tox -p 2 -e core,resources_log,resources_outbound,resources_kv,resources_http,resources_contacts,js

## Tools the ecosystem tests and the docs need: building and checking distributions, MkDocs.
$(VENV)/.tools: $(VENV)/.installed
	$(PY) -m pip install -q build twine "mkdocs>=1.6,<2"
	touch $@

test: $(VENV)/.tools

.PHONY: docs
## Build the documentation into build/site; any warning fails the build.
docs: $(VENV)/.tools
	$(PY) -m mkdocs build --strict -f docs/mkdocs.yml

# Segue — everything runs from the project's own virtual environment in .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_DIR := data/demo
DEMO_BUNDLE := artifacts/demo

.PHONY: install demo-data bundle run test bench-data bench-core evaluate clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

$(DEMO_DIR)/.done: | $(STAMP)
	$(PY) -m jobs.demo_data --out $(DEMO_DIR)
	touch $@

$(DEMO_BUNDLE)/manifest.json: $(DEMO_DIR)/.done
	$(PY) -m jobs.preprocess --catalog "$(DEMO_DIR)/Music Info.csv" \
		--interactions "$(DEMO_DIR)/User Listening History.csv" --out $(DEMO_BUNDLE) --overwrite

demo-data: $(DEMO_DIR)/.done
bundle: $(DEMO_BUNDLE)/manifest.json

run: install bundle
	@echo "Demo bundle ready in $(DEMO_BUNDLE) (version: $$($(PY) -c 'import json;print(json.load(open("$(DEMO_BUNDLE)/manifest.json"))["version"])'))."
	@echo "The Serve graph and UI are not built yet (see Status in README.md); make run will start them once they land."

test: install
	$(PY) -m pytest -q

bench-data: install
	$(PY) -m jobs.bench_data

bench-core: install
	$(PY) -m jobs.bench_core

HETREC_SRC ?= ../shared/data/hetrec2011-lastfm-2k
evaluate: install
	$(PY) -m jobs.import_hetrec --src $(HETREC_SRC) --out data/hetrec
	$(PY) -m jobs.preprocess --catalog "data/hetrec/Music Info.csv" \
		--interactions "data/hetrec/User Listening History.csv" --out artifacts/hetrec --overwrite
	$(PY) -m jobs.evaluate --bundle artifacts/hetrec --out reports/hetrec

clean:
	rm -rf $(DEMO_DIR) $(DEMO_BUNDLE) bench-out reports

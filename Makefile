# Segue — everything runs from the project's own virtual environment in .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_DIR := data/demo
DEMO_BUNDLE := artifacts/demo

.PHONY: install demo-data bundle run test bench-data clean

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

clean:
	rm -rf $(DEMO_DIR) $(DEMO_BUNDLE) bench-out reports

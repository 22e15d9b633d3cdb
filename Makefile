# Segue — everything runs from the project's own virtual environment in .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_DIR := data/demo
DEMO_BUNDLE := artifacts/demo

.PHONY: install browser demo-data bundle run lint test docs-screenshot bench-data bench-core bench-http bench-autoscale bench-users reliability evaluate clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Headless Chromium for tests/test_browser.py: Debian's package (Playwright drives it; it never
# downloads a browser of its own), with fonts for the screenshots' text and the buttons' emoji.
# Without it those tests skip, so a failed install only warns.
CHROMIUM_FIND := command -v chromium || command -v chromium-browser || command -v google-chrome
BROWSER_APT := apt-get install -y -qq --no-install-recommends chromium fonts-liberation fonts-noto-color-emoji
browser:
	@( $(CHROMIUM_FIND) ) >/dev/null 2>&1 || { \
		command -v apt-get >/dev/null 2>&1 && { \
			export DEBIAN_FRONTEND=noninteractive; \
			$(BROWSER_APT) >/dev/null 2>&1 || \
			{ apt-get update -qq >/dev/null 2>&1 && $(BROWSER_APT) >/dev/null 2>&1; }; } && \
		( $(CHROMIUM_FIND) ) >/dev/null 2>&1 || \
		echo "make browser: could not install chromium with apt-get; the browser tests will be skipped"; }

$(DEMO_DIR)/.done: | $(STAMP)
	$(PY) -m jobs.demo_data --out $(DEMO_DIR)
	touch $@

$(DEMO_BUNDLE)/manifest.json: $(DEMO_DIR)/.done
	$(PY) -m jobs.preprocess --catalog "$(DEMO_DIR)/Music Info.csv" \
		--interactions "$(DEMO_DIR)/User Listening History.csv" --out $(DEMO_BUNDLE) --overwrite

demo-data: $(DEMO_DIR)/.done
bundle: $(DEMO_BUNDLE)/manifest.json

ADMIN_TOKEN_FILE := .segue-admin-token

$(ADMIN_TOKEN_FILE):
	@umask 077 && $(PY) -c 'import secrets; print(secrets.token_urlsafe(32))' > $@

# Serve (with the local Ray it starts) in the foreground and the UI beside it; Ctrl-C stops both.
run: install bundle $(ADMIN_TOKEN_FILE)
	@$(PY) -m serve_app.shell.ray_env >/dev/null  # a setting the machine cannot meet stops here, with why
	@echo "Segue API  http://127.0.0.1:8000   (OpenAPI: /docs; ready when /readyz answers 200)"
	@echo "Segue UI   http://127.0.0.1:7860"
	@echo "Admin token for POST /adjust_weights: in $(ADMIN_TOKEN_FILE) (or set SEGUE_ADMIN_TOKEN)"
	@echo "Try: curl -s localhost:8000/recommend -d '{\"song\": \"$$($(PY) -c 'import pandas as p; print(p.read_parquet("$(DEMO_BUNDLE)/catalog.parquet").name[0])')\", \"k\": 10}'"
	@$(PY) -m ui.app --api http://127.0.0.1:8000 --port 7860 & ui=$$!; \
	trap 'kill $$ui 2>/dev/null' EXIT INT TERM; \
	SEGUE_ADMIN_TOKEN_FILE=$${SEGUE_ADMIN_TOKEN_FILE:-$(CURDIR)/$(ADMIN_TOKEN_FILE)} \
		RAY_AUTH_MODE=$${RAY_AUTH_MODE:-token} env $$($(PY) -m serve_app.shell.ray_env) $(VENV)/bin/serve run serve_config.yaml

# ruff (lint + format check, [tool.ruff]) and mypy ([tool.mypy]) over the tree: pyproject.toml
lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

test: lint browser
	$(PY) -m pytest -q

# Refresh docs/ui.png (a result page) from the browser test that picks a song.
docs-screenshot: install browser
	SEGUE_DOCS_SCREENSHOT=1 $(PY) -m pytest -q tests/test_browser.py -k 'autocomplete_gives_ten_songs or segue_goes_from'

bench-data: install
	$(PY) -m loadtest.bench_data

bench-core: install
	$(PY) -m loadtest.bench_core

bench-http: install
	$(PY) -m loadtest.bench_http

# A load step per scenario on serve_config.yaml as shipped: replicas per deployment over time
# (docs/img/autoscale.png), latency before and after the scale-up (the 30K-song bench bundle).
bench-autoscale: install
	$(PY) -m loadtest.bench_autoscale --bundle "$$($(PY) -m loadtest.bench_core --bundle-only)"

# 10,000 keep-alive users, one request a minute each, over a two-node local cluster (~12 min).
bench-users: install
	$(PY) -m loadtest.bench_users --bundle "$$($(PY) -m loadtest.bench_core --bundle-only)"

# Upgrades, replica loss, bad bundles, hostile input, the admin surface, S3 and metrics on a
# private local Serve cluster under load: reports/reliability.json and reports/reliability.md.
reliability: install bundle
	$(PY) -m loadtest.reliability

# The demo bundle (the artist cap's trade-off on 3 seeds of 1,000 sampled users, segues), then
# the whole evaluation of HetRec: reports/{demo,hetrec}/report.md and metrics.json (docs/QUALITY.md).
HETREC_SRC ?= ../shared/data/hetrec2011-lastfm-2k
evaluate: install bundle
	$(PY) -m jobs.evaluate --bundle $(DEMO_BUNDLE) --out reports/demo --quick --seeds 3 --max-users 1000 --artist-caps
	$(PY) -m jobs.import_hetrec --src $(HETREC_SRC) --out data/hetrec
	$(PY) -m jobs.preprocess --catalog "data/hetrec/Music Info.csv" \
		--interactions "data/hetrec/User Listening History.csv" --out artifacts/hetrec --overwrite
	$(PY) -m jobs.evaluate --bundle artifacts/hetrec --out reports/hetrec

clean:
	rm -rf $(DEMO_DIR) $(DEMO_BUNDLE) bench-out reports

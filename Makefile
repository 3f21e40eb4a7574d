# The two commands of the README:
#   make app   - set up (first run only) and open the walkthrough on the built-in model
#   make test  - set up (first run only) and run the whole test suite
# Also: make serve (the walkthrough for a class: all interfaces, PORT=8501), make screenshots (refresh
# docs/screenshots/ from the browser test).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# torch is pinned in the same pip command: an unpinned torch would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0

.PHONY: app serve screenshots test setup bench parity lessons lessons-html reproduce clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)" -e ".[dev]"
	touch $(STAMP)

# on this machine only (localhost): the Models page's download / delete buttons are then the user's own
app: $(STAMP)
	$(PY) -m streamlit run app/streamlit_app.py --server.address localhost

# for a class: every network interface, a fixed port, no browser opened on the server; visitors see no error
# details (only their type), no developer menu, and the server does not watch its files (usage statistics are off
# and XSRF protection on in .streamlit/config.toml). Model-folder management (download, delete, server paths) is off
# for visitors; VARLITE_TEACHER_TOKEN=<secret> make serve lets a teacher unlock it in their session.
PORT ?= 8501
serve: $(STAMP)
	$(PY) -m streamlit run app/streamlit_app.py --server.address 0.0.0.0 --server.port $(PORT) --server.headless true \
		--client.showErrorDetails type --client.toolbarMode viewer --server.fileWatcherType none --server.runOnSave false

# the browser tests save their screenshots under test-artifacts/; this copies the README's pictures over docs/
# (not models-own-run.png: it shows the test's temporary paths)
SCREENSHOTS := generate generate-linked generate-compare encode edit edit-paint edit-surgery cost models
screenshots: $(STAMP)
	$(PY) -m pytest -q tests/test_browser.py tests/test_browser_linked.py
	for name in $(SCREENSHOTS); do cp test-artifacts/screenshots/$$name.png docs/screenshots/; done

# lint-imports: the import contracts in pyproject.toml (the core imports nothing else of varlite; no upward import)
test: $(STAMP)
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q --durations=25

parity: $(STAMP)
	$(PY) -m varlite parity varlite/reference/upstream_tiny

bench: $(STAMP)
	$(PY) bench/bench_core.py

lessons: $(STAMP)
	VARLITE_CI=1 $(PY) -m pytest -q --nbmake lessons/*.ipynb

# lesson 12's runs: three claims of the VAR paper on Shapes (about 30 CPU-minutes on one thread; resumes, skips
# finished stages; writes lessons/data/reproduce/)
reproduce: $(STAMP)
	$(PY) recipes/reproduce.py

lessons-html: $(STAMP)
	$(PY) lessons/render.py

clean:
	rm -rf $(VENV) .pytest_cache

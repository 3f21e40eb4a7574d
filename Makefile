# The two commands of the README:
#   make app   - set up (first run only) and open the walkthrough on the built-in model
#   make test  - set up (first run only) and run the whole test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# torch is pinned in the same pip command: an unpinned torch would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0

.PHONY: app test setup bench parity lessons lessons-html clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)" -e ".[dev]"
	touch $(STAMP)

app: $(STAMP)
	$(PY) -m streamlit run app/streamlit_app.py

test: $(STAMP)
	$(PY) -m pytest -q

parity: $(STAMP)
	$(PY) -m varlite.parity tests/data/upstream_tiny

bench: $(STAMP)
	$(PY) bench/bench_core.py

lessons: $(STAMP)
	VARLITE_CI=1 $(PY) -m pytest -q --nbmake lessons/*.ipynb

lessons-html: $(STAMP)
	$(PY) lessons/render.py

clean:
	rm -rf $(VENV) .pytest_cache

# One-command set-up, run and test. Plain commands are in README.md.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SHARED ?= $(abspath ../shared)

.PHONY: setup setup-browser run serve-proxy test test-fast lint format reproduce report benchmark clean

setup: $(BIN)/streamlit setup-browser  ## create .venv and install everything (Python deps + Chromium)

$(BIN)/streamlit: requirements.txt requirements-medmnist.txt pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -r requirements.txt
	# medmnist's own dependencies pull ~2.7 GB of CUDA torch; we only need its INFO and evaluator
	$(BIN)/pip install --no-deps -r requirements-medmnist.txt
	# this project, editable: `core`, `app`, `benchmarks` import from any directory
	$(BIN)/pip install --no-deps -e .
	touch $@

# Debian's Chromium (browser tests), poppler-utils (pdftotext: PDF report test) and nginx-light
# (make serve-proxy and its tests); root or sudo. nginx is looked for at /usr/sbin/nginx, where
# Debian puts it (not on a normal user's PATH).
setup-browser:  ## Debian's Chromium, poppler-utils and nginx-light (system packages the tests use)
	@command -v chromium >/dev/null 2>&1 && command -v pdftotext >/dev/null 2>&1 \
	  && [ -x /usr/sbin/nginx ] || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium poppler-utils nginx-light; }

# `run` and `test` do whatever set-up is missing, so a fresh clone needs only these two commands.
run: $(BIN)/streamlit  ## start the app on http://127.0.0.1:8501 (sets up .venv first if needed)
	$(BIN)/streamlit run app/Home.py

# nginx sends Streamlit's front-end bundle, Streamlit the pages: less server CPU per visit
# (docs/deploy.md). Needs nginx (make setup-browser installs it).
serve-proxy: $(BIN)/streamlit  ## the app behind nginx on http://127.0.0.1:8080
	$(BIN)/python -m deploy.nginx

lint: $(BIN)/streamlit
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(BIN)/streamlit
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint setup-browser  ## lint + the whole suite (slow and browser tests included)
	$(BIN)/python -m pytest -q --timeout=900 --durations=40

test-fast: $(BIN)/streamlit  ## skip training/browser tests while iterating
	$(BIN)/python -m pytest -q -m "not slow and not browser"

reproduce: $(BIN)/streamlit  ## rerun every experiment from nothing and regenerate docs/RESULTS.md
	$(BIN)/python -m benchmarks.reproduce

report: $(BIN)/streamlit
	$(BIN)/python -m benchmarks.report

benchmark: $(BIN)/streamlit
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf .pytest_cache .ruff_cache test-artifacts var

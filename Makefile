# Every target does its own set-up on a fresh machine: the virtual environment, the CPU torch wheel,
# the package with its test and dev extras, and Fashion-MNIST from Debian when apt is available.
VENV   ?= .venv
PYTHON := $(VENV)/bin/python
STAMP  := $(VENV)/.hmcam-installed
# Where `make docs` builds the site (ignored by git).
SITE   ?= site

.PHONY: install data browser lint docs test demo reproduce results-page bench

$(STAMP): pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q torch==2.13.0
	$(PYTHON) -m pip install -q -e '.[test,dev,arviz,tensorboard]'
	$(PYTHON) -m pip install -q --no-deps torchattacks==3.5.1
	touch $(STAMP)

install: $(STAMP)

# Fashion-MNIST (full 60k/10k) from Debian's package; without apt, hmcam downloads it on first use.
data:
	@dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || { \
	  command -v apt-get >/dev/null 2>&1 && { \
	    apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; }; \
	  } || echo "note: could not install dataset-fashion-mnist through apt; hmcam will download it"; }

# Headless Chromium, in which the tests load the HTML report pages; without it those tests are skipped.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  command -v apt-get >/dev/null 2>&1 && { \
	    apt-get install -y -q chromium >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }; \
	  } || echo "note: could not install chromium through apt; the report-page browser tests will be skipped"; }

# Lint, formatting, the import layers and strict types; configured in pyproject.toml ([tool.ruff],
# [tool.importlinter], [tool.mypy]).
lint: install
	$(PYTHON) -m ruff check .
	$(VENV)/bin/lint-imports --no-cache
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m mypy

# The API and user-guide site (mkdocs.yml, docs/); --strict turns every warning into an error.
docs: install
	NO_MKDOCS_2_WARNING=1 $(PYTHON) -m mkdocs build --strict --site-dir $(SITE)

test: install data browser lint docs
	$(PYTHON) -m pytest -q

demo: install data
	$(PYTHON) -m hmcam demo --out runs/demo

# Every experiment of the paper at the small scale, then one report page (the README gives the time).
reproduce: install data
	$(PYTHON) -m hmcam reproduce --scale small --out runs/reproduce

# docs/results.md, its figures (docs/results/) and the README's results block, from the committed results/small
# (`hmcam results publish runs/reproduce` puts a finished reproduction there).
results-page: install
	$(PYTHON) -m hmcam results page results/small

bench: install
	$(PYTHON) benchmarks/attacks.py
	$(PYTHON) benchmarks/training.py

# The two commands in the README: `make serve` and `make test`. Each sets everything up first.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Extra arguments, e.g. `make serve ARGS="/data/vol.zarr --port 9000"`.
ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup serve test test-quick lint bench

$(STAMP): setup.cfg pyproject.toml scripts/install-system-deps.sh
	bash scripts/install-system-deps.sh
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The sam extra pins torchvision, which pins PyPI's default torch build: it runs on the
	# CPU and uses CUDA when a GPU is present (no CPU-only torchvision exists).
	$(PY) -m pip install -q -e '.[test,sam]'
	# micro-sam headless: its metadata drags napari/PyQt6 in; the sam extra lists what it uses.
	$(PY) -m pip install -q --no-deps 'micro-sam>=1.8.14,<1.9'
	touch $@

setup: $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/ilastik-web serve $(ARGS)

# The whole suite, slow cases included (plain `pytest` skips those marked slow).
test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -m "" $(PYTEST_ARGS)

test-quick: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .

VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python

.PHONY: setup demo test lint bench deb clean

setup:
	@bash scripts/setup.sh

demo: setup
	@$(PY) -m wattgate.demo

# Two workers, each file on one (its module fixtures built once): most tests wait on a
# daemon, a socket or a child process, so two cores run the suite in about half the time.
test: setup
	$(BIN)/ruff check wattgate tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q -n 2 --dist loadfile

lint: setup
	$(BIN)/ruff check wattgate tests bench
	$(BIN)/mypy

bench: setup
	$(PY) -m wattgate.cli bench all

deb: setup
	bash scripts/build-deb.sh dist

clean:
	rm -rf run build dist *.egg-info .pytest_cache .mypy_cache

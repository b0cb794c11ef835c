# Two commands set everything up on a fresh machine with python3 (3.11+) and make:
#   make run    venv, install, Postgres (embedded unless DATABASE_URL), migrate, serve all four
#   make test   venv, install, the whole suite against real Postgres
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install run test protos check-protos bench soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/tally run

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

protos: install
	$(BIN)/python scripts/gen_protos.py

# Fails when tally_gen/ differs from what the protos produce.
check-protos: protos
	@git diff --exit-code --stat -- tally_gen || (echo "tally_gen/ is stale: run 'make protos' and commit" && exit 1)
	@test -z "$$(git status --porcelain -- tally_gen)" || (git status --porcelain -- tally_gen; echo "tally_gen/ has untracked or changed files: run 'make protos' and commit"; exit 1)

bench: install
	$(BIN)/python -m bench

# SIGKILL soak: 20 seeded runs per service; figures go to .tally/soak-results.jsonl.
# Long fuzz over every RPC: TALLY_FUZZ_EXAMPLES calls (default 5,000), TALLY_FUZZ_SEED;
# figures and findings go to .tally/fuzz/soak.json and the terminal summary.
soak: install
	TALLY_SOAK_RECORD=1 $(BIN)/python -m pytest -m slow -rA tests/reliability tests/fuzz $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis

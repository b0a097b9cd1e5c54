# The two commands (see README): `make run` and `make test`. Both work on a fresh Debian
# machine as root; scripts/bootstrap.sh installs what is missing.
.PHONY: run test lint docs clean

run:
	@scripts/bootstrap.sh run
	.venv/bin/heldar serve

test:
	@scripts/bootstrap.sh test
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	.venv/bin/pytest

lint:
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

docs:
	.venv/bin/heldar config-docs > docs/configuration.md

clean:
	rm -rf .venv .mypy_cache .pytest_cache .ruff_cache

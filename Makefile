# Developer and CI entry points; each delegates to ./dev, which bootstraps uv.
.PHONY: help quickstart test test-slow check lint typecheck imports up down status migrate generate ci

help:
	@./dev help

quickstart:
	./dev quickstart

test:
	./dev test

test-slow:
	./dev test-slow

check:
	./dev check

lint:
	./dev sync && .venv/bin/ruff check . && .venv/bin/ruff format --check .

typecheck:
	./dev sync && .venv/bin/mypy

imports:
	./dev sync && .venv/bin/lint-imports

up:
	./dev copilot up

down:
	./dev copilot down

status:
	./dev copilot status

migrate:
	./dev copilot db migrate

generate:
	./dev copilot generate --force

ci:
	bash .ci/run

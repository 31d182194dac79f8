# tickcast entry points. On a fresh machine use ./just (it installs uv, just and .venv first).
set shell := ["bash", "-euo", "pipefail", "-c"]

bin := justfile_directory() / ".venv/bin"

# Cache the bytecode of the project's own modules (src/, tests/, emulators/; __pycache__ is git-ignored)
# even where the environment sets PYTHONDONTWRITEBYTECODE: every test run and service start otherwise
# compiles them again (~3.5 s of the fast tier's ~27 s CPU). The venv's packages are compiled by uv sync.
export PYTHONDONTWRITEBYTECODE := ""

# list the recipes
default:
    @{{just_executable()}} --justfile {{justfile()}} --list --unsorted

# install what is missing, start the stack, and run the main job: backfill, ingest, retrain, deploy, predict
# (./just up --tape: the emulator replays the real tape in ../shared/data/tape instead of the synthetic market)
up *args: _bootstrap
    {{bin}}/tickcast up {{args}}
    {{bin}}/tickcast run

# only the stack (no backfill, no training); `just stack --reload` then restarts the endpoint, the
# Function app and the gateway when their source changes (until Ctrl-C; the stack stays up)
stack *args: _bootstrap
    {{bin}}/tickcast up {{args}}

# stop every service of the local stack, children included
down: _bootstrap
    {{bin}}/tickcast down

# the stack (service, URL, PID, healthy, uptime) and the pipeline (lake freshness, lag, model, traffic)
status: _bootstrap
    {{bin}}/tickcast status

# the whole test suite (what CI runs): one worker per core (pytest-xdist); the end-to-end drills and the other
# integration tests each run in order on a worker with its own stack (free ports), the unit tests a module at a
# time on whichever worker is free (tests/conftest.py); `just test -n 0` runs everything in one process
test *args: _bootstrap
    {{bin}}/pytest tests/unit tests/integration -n auto --no-loadscope-reorder {{args}}

# the quick tier (<= 30 s): unit tests without the `slow` (TensorFlow trainings, real installs) and
# `cloud_tools` (checkov / Azure SDK tool venvs, check-jsonschema) markers; no services; one pytest
# worker per core (pytest-xdist; `just test-fast -n 0` runs in one process)
test-fast *args: _bootstrap
    {{bin}}/pytest tests/unit -m "not slow and not cloud_tools and not integration" -n auto --durations=5 {{args}}

# unit tests only (no services), every tier; pick one with -m, e.g. just test-unit -m slow
test-unit *args: _bootstrap
    {{bin}}/pytest tests/unit {{args}}

# integration tests only (against the real local services)
test-integration *args: _bootstrap
    {{bin}}/pytest tests/integration {{args}}

# scripted smoke calls through the gateway (local; or: just smoke --url https://<apim>.azure-api.net --key <key>)
smoke *args: _bootstrap
    {{bin}}/tickcast smoke {{args}}

# deploy cloud/arm to Azure (--what-if: only show the plan; --env dev|test|prod); writes .tickcast/cloud/<env>.env
deploy-cloud *args: _bootstrap
    {{bin}}/tickcast deploy-cloud {{args}}

# delete the cloud environment's resource group (asks to type its name; --yes skips the question)
destroy-cloud *args: _bootstrap
    {{bin}}/tickcast destroy-cloud {{args}}

# ruff (lint + format check), mypy --strict, and the architecture's import contracts (pyproject [tool.importlinter])
lint: _bootstrap
    {{bin}}/ruff check .
    {{bin}}/ruff format --check .
    {{bin}}/mypy
    {{bin}}/lint-imports --no-cache

# stack startup benchmark: cold up, 10 warm restarts (every other one with DAG runs left pending), healthy count, time to healthy per service, down time, RSS
bench-stack: _bootstrap
    {{bin}}/python bench/stack_startup.py

# inner-loop benchmark: ./just no-op, tickcast --help, tickcast status, the fast test tier (--figures to pick)
bench-loop *args: _bootstrap
    {{bin}}/python bench/loop.py {{args}}

# (skipped when ./just has just run it for this checkout)
_bootstrap:
    @[ "${TICKCAST_BOOTSTRAPPED:-}" = "{{justfile_directory()}}" ] || local/bootstrap.sh

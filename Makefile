# Two entry points: `make demo` and `make test`. Both create/refresh .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STATE ?= $(CURDIR)/.state
export VIMOGEN_STATE_DIR := $(STATE)
export MLFLOW_DISABLE_TELEMETRY := true
export GX_ANALYTICS_ENABLED := false
export DAGSTER_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export GRADIO_ANALYTICS_ENABLED := False
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: venv system-deps test test-fast demo ui mlflow-ui playground serve-stack stop-stack clean

# Debian packages the slow tests drive: Blender's glTF importer (its numpy comes from Debian),
# a headless browser for the playground test, and the PostgreSQL server of the deployment test
# (and of `make serve-stack`).
SYSTEM_PACKAGES := blender python3-numpy chromium chromium-driver postgresql

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first: the local CPU wheel; any other torch requirement pulls CUDA packages
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# Installs only what is missing, and only as root; otherwise names the one command to run. Never
# fails the build: without the packages their tests are skipped, and say why.
system-deps:
	@missing="$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done | xargs)"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		{ apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; } || \
			echo "could not install $$missing; the tests needing them are skipped"; \
	else \
		echo "tests needing them are skipped; install with: sudo apt-get install -y --no-install-recommends $$missing"; \
	fi

test: venv system-deps
	$(PY) -m pytest -q -rs -p no:cacheprovider tests

test-fast: venv
	$(PY) -m pytest -q -m "not slow" tests

demo: venv
	$(PY) -m orchestration.demo --state-dir $(STATE)

ui: venv
	$(PY) -c 'import pathlib, sys; from orchestration.demo import prepare_dagster_home; prepare_dagster_home(pathlib.Path(sys.argv[1]))' $(STATE)/dagster_home
	DAGSTER_HOME=$(STATE)/dagster_home PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml

mlflow-ui: venv
	$(VENV)/bin/mlflow ui --host 127.0.0.1 --port 5000 --backend-store-uri sqlite:///$(STATE)/mlflow.db

# The registry's champion (after `make demo`), or CHECKPOINT=path/to/step.pt -> http://127.0.0.1:7860
playground: venv
	$(VENV)/bin/vimogen playground $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT))

# The deployment (deploy/compose.yaml) as local processes on 127.0.0.1, for machines without
# containers: PostgreSQL, S3 (moto), the MLflow server, Dagster's webserver (:3000) and daemon.
# Data, logs, PIDs and the environment to source (stack.env) in $(STATE)/stack.
serve-stack: venv system-deps
	$(PY) deploy/local_stack.py start --folder $(STATE)/stack

stop-stack:
	$(PY) deploy/local_stack.py stop --folder $(STATE)/stack

clean:
	rm -rf $(STATE)

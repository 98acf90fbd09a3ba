# fretflow: two commands on a fresh machine.
#   make demo   sets up what is missing, builds, and runs the main job on the embedded default.
#   make test   sets up what is missing and runs every test (starting a local Kafka broker for them).
SHELL := /bin/bash
CARGO ?= cargo
BIN := target/debug/fretflow

.PHONY: all setup setup-kafka setup-llama-server setup-model build check demo test test-rust fuzz kafka-up kafka-down bench bench-deps clean

all: build

setup:
	scripts/setup.sh python

setup-kafka:
	scripts/setup.sh kafka

# An opt-in larger LLM from assets/split-models.toml, e.g. `make setup-model MODEL=qwen2.5-coder-0.5b`.
setup-model:
	scripts/setup.sh model $(MODEL)

# llama-cpp-python's OpenAI-compatible server: the real server of the remote-backend tests.
setup-llama-server:
	scripts/setup.sh llama-server

build: setup
	$(CARGO) build --bins

demo: build
	scripts/demo.sh

# Formatting (rustfmt.toml), lints (Cargo.toml [lints] plus clippy's defaults), no import cycles between
# modules or files (scripts/module_cycles.py) and deploy/ in line with the code (scripts/check_deploy.py),
# as CI checks them.
check: setup
	$(CARGO) fmt --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	python3 scripts/module_cycles.py src crates/records/src crates/connectors/src
	python3 scripts/check_deploy.py

# Tests need the Python reference tools (parity fixtures are committed, but some tests call Python), the
# llama.cpp server and a local Kafka broker, which is started for the run and stopped afterwards. Nothing
# skips: under CI=true a test whose prerequisite is missing fails; elsewhere the skipped tests are listed
# at the end. TEST_ARGS goes to cargo test (e.g. TEST_ARGS="-- --test-threads=1").
TEST_ARGS ?=
test: setup setup-kafka setup-llama-server
	$(CARGO) build --workspace --bins --tests
	rm -f target/tmp/skipped-tests.txt
	rc=0; scripts/with-kafka.sh $(CARGO) test --workspace --no-fail-fast $(TEST_ARGS) || rc=$$?; \
	  scripts/report-skips.sh; exit $$rc

kafka-up: setup-kafka
	deploy/kafka/start.sh

kafka-down:
	deploy/kafka/stop.sh

# Benchmarks print ratios against the named peers on this machine (see docs/RESULTS.md, "Benchmarks").
# faiss-cpu is the retrieval peer of scripts/bench_retrieve.py.
bench-deps: setup-llama-server
	.venv/bin/python -m pip install --quiet --progress-bar off faiss-cpu==1.15.1

# Each fuzz target of tests/fuzz_decoders.rs for FUZZ_SECONDS (default 600), in rounds of fresh random cases.
fuzz: setup
	scripts/fuzz.sh

bench: build
	scripts/bench.sh

clean:
	$(CARGO) clean
	rm -rf out

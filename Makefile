# fretflow: two commands on a fresh machine.
#   make demo   sets up what is missing, builds, and runs the main job on the embedded default.
#   make test   sets up what is missing and runs every test (starting a local Kafka broker for them).
SHELL := /bin/bash
CARGO ?= cargo
BIN := target/debug/fretflow

.PHONY: all setup setup-kafka build demo test test-rust kafka-up kafka-down bench bench-deps clean

all: build

setup:
	scripts/setup.sh python

setup-kafka:
	scripts/setup.sh kafka

build: setup
	$(CARGO) build --bins

demo: build
	scripts/demo.sh

# Tests need the Python reference tools (parity fixtures are committed, but some tests call Python) and a
# local Kafka broker, which is started for the run and stopped afterwards.
test: setup setup-kafka
	$(CARGO) build --bins --tests
	scripts/with-kafka.sh $(CARGO) test --no-fail-fast

kafka-up: setup-kafka
	deploy/kafka/start.sh

kafka-down:
	deploy/kafka/stop.sh

# Benchmarks print ratios against the named peers on this machine (see README, "Benchmarks").
bench-deps: setup
	.venv/bin/python -m pip install --quiet llama-cpp-python

bench: build
	scripts/bench.sh

clean:
	$(CARGO) clean
	rm -rf out

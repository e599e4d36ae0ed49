# auditlog — the commands a developer needs. `make run` and `make test` are the two that matter.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO ?= cargo
# Helper tools (FerretDB, helm, venvs, Hadoop jars) live in <repo>/target/tools, whatever
# CARGO_TARGET_DIR says; scripts ask cargo where our own binaries are.

.PHONY: help run stop test tools test-rust test-helm test-browser test-mongodb test-k8s lint fmt bench-ingest profile-ingest bench-archive bench-find-archive clean-data

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

run: ## Start the service on 127.0.0.1:8080 (starts a local FerretDB unless MONGODB_URI is set)
	@bash infra/dev/run.sh

stop: ## Stop every local server make run or make test started (service, FerretDB, HDFS, S3, RabbitMQ)
	@bash infra/dev/stop.sh

tools: ## Install what the tests need (FerretDB, Python venv, Hadoop MiniDFS, helm, Chromium, RabbitMQ)
	bash infra/dev/install-tools.sh

test: ## Run every test: Rust unit + end-to-end, Helm chart checks, Swagger UI in Chromium
	@bash infra/dev/test.sh

test-rust: ## Rust unit and end-to-end tests (each test starts its own FerretDB)
	@bash infra/dev/test.sh rust

test-helm: ## helm lint, helm template over several value sets, strict schema validation, chart tests
	@bash infra/dev/test.sh helm

test-browser: ## Open /docs in headless Chromium and check the operations render
	@bash infra/dev/test.sh browser

test-mongodb: ## Every Rust test, ignored ones included, against MONGODB_URI (a real mongod/mongos)
	@bash infra/dev/test.sh mongodb

test-k8s: ## The chart on a private local Kubernetes API server (kwok nodes): install, upgrade, rollback, uninstall
	@bash infra/k8s-tests/run.sh

lint: ## rustfmt check, clippy with warnings as errors, no import cycle between modules
	@bash infra/dev/prereqs.sh lint
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	python3 infra/dev/module_cycles.py common/src service/src archiver/src infra/ops/src testcontainers-tests/src client/src cli/src

fmt: ## Format the code
	$(CARGO) fmt --all

bench-ingest: ## Ingest benchmark: events/s and latency, group commit on and off, vs direct insert_many
	bash benchmarks/ingest/run.sh

profile-ingest: ## Flamegraph of the service under the ingest benchmark's load (target/profile-ingest.svg)
	bash benchmarks/ingest/profile.sh

bench-archive: ## Archive benchmark: events/s and peak RSS vs pymongoarrow + pyarrow
	bash benchmarks/archive/run.sh

bench-find-archive: ## Find and histogram over the Parquet archive: latency vs DuckDB, peak RSS (BENCH_EVENTS)
	bash benchmarks/find-archive/run.sh

clean-data: stop ## Remove local data (FerretDB files, archives)
	rm -rf data archive

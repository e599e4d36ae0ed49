# auditlog — the commands a developer needs. `make run` and `make test` are the two that matter.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO ?= cargo
# Tests and benchmarks put their helper tools here (FerretDB, helm, venvs, Hadoop jars).
TOOLS := target/tools

.PHONY: help run test tools test-rust test-helm test-browser lint fmt bench-ingest bench-archive stop clean-data

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

run: ## Start the service on 127.0.0.1:8080 (starts a local FerretDB unless MONGODB_URI is set)
	@bash infra/dev/run.sh

tools: ## Install what the tests need (FerretDB, Python venv, Hadoop MiniDFS, S3 server, helm)
	bash infra/dev/install-tools.sh

test: tools ## Run every test: Rust unit + end-to-end, Helm chart checks, Swagger UI in Chromium
	$(MAKE) test-rust
	$(MAKE) test-helm
	$(MAKE) test-browser

test-rust: ## Rust unit and end-to-end tests (each test starts its own FerretDB)
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace --no-fail-fast

test-helm: ## helm lint, helm template over several value sets, strict schema validation, chart tests
	bash infra/helm-tests/run.sh

test-browser: ## Open /docs in headless Chromium and check the operations render
	bash service/tests-browser/check_docs.sh

lint: ## rustfmt check and clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

bench-ingest: ## Ingest benchmark: events/s and latency, group commit on and off, vs direct insert_many
	bash service/bench/run.sh

bench-archive: ## Archive benchmark: events/s and peak RSS vs pymongoarrow + pyarrow
	bash archiver/bench/run.sh

stop: ## Stop the local FerretDB started by `make run`
	bash infra/dev/ferretdb.sh stop

clean-data: stop ## Remove local data (FerretDB files, archives)
	rm -rf data archive

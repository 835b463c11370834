# Quick start: `make demo` then `make test`. Everything installs into ./.venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_START ?= 2026-09-01
DEMO_END ?= 2026-10-31
DEMO_SEED ?= 7
export ECM_DATA_DIR ?= $(CURDIR)/data
export ECM_WAREHOUSE ?= $(ECM_DATA_DIR)/warehouse.duckdb
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

DAILY_ASSETS := case_events,case_sla_daily_metrics,case_sla_rolling_30d,case_priority_mix_daily

.PHONY: install demo test dev dev-postgres lint bench bench-backfill clean dagster-home

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

dagster-home:
	mkdir -p $(DAGSTER_HOME)
	ln -sf $(CURDIR)/dagster.yaml $(DAGSTER_HOME)/dagster.yaml

demo: install dagster-home
	rm -f $(ECM_WAREHOUSE) $(ECM_WAREHOUSE).wal
	$(BIN)/ecm demo-data --start $(DEMO_START) --end $(DEMO_END) --seed $(DEMO_SEED) --out $(ECM_DATA_DIR)
	$(BIN)/dagster asset materialize -m ecm_assets.definitions --select $(DAILY_ASSETS) \
		--partition-range $(DEMO_START)...$(DEMO_END)
	$(BIN)/dagster asset materialize -m ecm_assets.definitions --select case_sla_monthly_report \
		--partition-range $$(echo $(DEMO_START) | cut -c1-7)-01...$$(echo $(DEMO_END) | cut -c1-7)-01
	$(BIN)/ecm demo-source --rows 20000
	$(BIN)/ecm sync run historical-sync-001
	@echo
	$(BIN)/ecm summary
	@echo
	@echo "Open the UI with 'make dev' (http://127.0.0.1:3000), or query the warehouse with:"
	@echo "  $(BIN)/python -c \"import duckdb; print(duckdb.connect('$(ECM_WAREHOUSE)', read_only=True).sql('from case_sla_monthly_report'))\""

# Two workers by default: most tests start real processes (dagster, daemons, a browser) and
# wait on them. Each test file stays on one worker (module fixtures are built once).
TEST_WORKERS ?= 2
test: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

dev: install dagster-home
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

# The Dagster instance on PostgreSQL (docs/deploy.md). The warehouse is the DuckDB file unless
# ECM_WAREHOUSE_URL=postgresql://... is set; then its steps are in the pool
# ecm_postgres_warehouse, which admits PG_POOL_LIMIT at once. A per-pool limit lives in the
# instance (set here with the CLI), not in dagster.postgres.yaml, whose default_limit (1)
# keeps the DuckDB pool serial.
DAGSTER_HOME_PG ?= $(CURDIR)/.dagster_home_pg
PG_POOL_LIMIT ?= 4
dev-postgres: export DAGSTER_PG_HOST ?= 127.0.0.1
dev-postgres: export DAGSTER_PG_PORT ?= 5432
dev-postgres: export DAGSTER_PG_USER ?= postgres
dev-postgres: export DAGSTER_PG_PASSWORD ?=
dev-postgres: export DAGSTER_PG_DB ?= ecm_dagster
dev-postgres: install
	mkdir -p $(DAGSTER_HOME_PG)
	ln -sf $(CURDIR)/dagster.postgres.yaml $(DAGSTER_HOME_PG)/dagster.yaml
	$(BIN)/python deploy/ensure_pg_database.py
	DAGSTER_HOME=$(DAGSTER_HOME_PG) $(BIN)/dagster instance concurrency set \
		ecm_postgres_warehouse $(PG_POOL_LIMIT)
	DAGSTER_HOME=$(DAGSTER_HOME_PG) $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install
	$(BIN)/python benchmarks/publish.py

# The 60-partition multi-run backfill through dagster-daemon (docs/benchmarks.md); the
# PostgreSQL setup needs the server at 127.0.0.1:5432 and is skipped without it.
bench-backfill: install
	$(BIN)/python benchmarks/backfill.py

clean:
	rm -rf $(ECM_DATA_DIR) $(DAGSTER_HOME)

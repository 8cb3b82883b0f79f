# cureflow: `make demo` runs the whole product on a simulated portfolio, `make test` runs the test suite.
SHELL  := /bin/bash
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO_DATA ?= data/portfolio
OUT       ?= outputs
AS_OF  ?= 2026-11-01T00:00:00+09:00
PORT   ?= 5000
# pip's one warning per package when a configured extra index lacks it: noise that buried the install output
PIP_NOISE := is ignored: it is neither a file nor a directory

.PHONY: install demo first-week readme-figures screenshots test audit lint mlflow-ui clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip 2>&1 | { grep -v "$(PIP_NOISE)" || true; }; test $${PIPESTATUS[0]} -eq 0
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]" 2>&1 | { grep -v "$(PIP_NOISE)" || true; }; \
		test $${PIPESTATUS[0]} -eq 0
	touch $@

install: $(VENV)/.installed

demo: install
	@start=$$(date +%s); \
	$(BIN)/cureflow simulate --accounts 20000 --months 24 --seed 7 --out $(DEMO_DATA) && \
	$(BIN)/cureflow train --data $(DEMO_DATA) --out $(OUT)/train && \
	$(BIN)/cureflow evaluate --data $(DEMO_DATA) --out $(OUT)/evaluation.json && \
	$(BIN)/cureflow experiments --data $(DEMO_DATA) --out $(OUT)/experiments.html && \
	$(BIN)/cureflow score --data $(DEMO_DATA) --as-of $(AS_OF) --out $(OUT)/work_queue.parquet --top 15 && \
	echo "" && \
	echo "work queue:      $(OUT)/work_queue.parquet (summary: $(OUT)/work_queue.parquet.summary.json)" && \
	echo "morning report:  $(OUT)/work_queue.parquet.report.html (decision records: decisions.db)" && \
	echo "policy value:    $(OUT)/evaluation.json" && \
	echo "A/B readout:     $(OUT)/experiments.html" && \
	echo "holdout metrics: $(OUT)/train/metrics.json (plots: $(OUT)/train/*.png)" && \
	echo "MLflow store:    $$(pwd)/mlflow.db (artifacts in mlartifacts/)" && \
	echo "MLflow UI:       make mlflow-ui [PORT=5000], then open the training runs' address it prints" && \
	echo "demo wall time:  $$(( $$(date +%s) - start ))s"

# The README's demo figures from a fresh demo (docs/demo_figures.json and the README block), and screenshots
# of the reports, /docs and the MLflow UI from a real browser (headless Chromium); tests/test_readme_figures.py
# checks the figures.
readme-figures: demo
	$(BIN)/python scripts/readme_figures.py --data $(DEMO_DATA) --outputs $(OUT)

screenshots: install
	scripts/screenshots.sh

# Day one to week one on a first export (no experiment in the history), in its own folders: the playbook's
# queue, a week of outcomes coming back as the CRM exports them (decision ids, no propensity), the retrain
# reading the decision log, and the A/B readout of the first week's experiments.
WEEK := outputs/first-week
first-week: install
	@$(BIN)/cureflow simulate --accounts 5000 --months 18 --seed 7 --preset lease --experiment-share 0 \
		--out $(WEEK)/data/day1 && \
	$(BIN)/cureflow train --data $(WEEK)/data/day1 --out $(WEEK)/train-day1 --no-register && \
	$(BIN)/cureflow score --data $(WEEK)/data/day1 --model $(WEEK)/train-day1/bundle.joblib \
		--decision-log sqlite:///$(WEEK)/decisions.db --out $(WEEK)/queue-day1.parquet --top 10 && \
	$(BIN)/cureflow play --data $(WEEK)/data/day1 --queue $(WEEK)/queue-day1.parquet --days 10 \
		--out $(WEEK)/data/week1 && \
	$(BIN)/cureflow train --data $(WEEK)/data/week1 --out $(WEEK)/train-week1 --no-register \
		--decision-log sqlite:///$(WEEK)/decisions.db && \
	$(BIN)/cureflow experiments --data $(WEEK)/data/week1 --decision-log sqlite:///$(WEEK)/decisions.db \
		--out $(WEEK)/experiments.html && \
	echo "" && echo "day one's queue: $(WEEK)/queue-day1.parquet (report beside it); decisions: $(WEEK)/decisions.db" && \
	echo "week one:        $(WEEK)/data/week1 (contacts name their decision_id); retrained: $(WEEK)/train-week1" && \
	echo "A/B readout:     $(WEEK)/experiments.html"

test: audit
	scripts/ensure_postgres.sh
	scripts/ensure_java.sh
	$(BIN)/pytest -q -n 2

audit: install
	$(BIN)/python scripts/audit.py

lint: install
	$(BIN)/ruff check models pipelines serving tests benchmarks
	$(BIN)/lint-imports --no-cache

# MLflow 3.17 opens an experiment on its GenAI overview unless the address asks for the model-training view:
# print the address of the training runs (the browser remembers the view once chosen).
mlflow-ui: install
	@id=$$($(BIN)/python -c "import sqlite3; print(sqlite3.connect('file:mlflow.db?mode=ro', uri=True).execute(\
		\"select experiment_id from experiments where name = 'cureflow'\").fetchone()[0])" 2>/dev/null) && \
		echo "the training runs: http://127.0.0.1:$(PORT)/#/experiments/$$id?workflowType=machine_learning" || \
		echo "no experiment cureflow in mlflow.db yet: run make demo first"
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$$(pwd)/mlflow.db --host 127.0.0.1 --port $(PORT)

clean:
	rm -rf outputs mlflow.db mlartifacts $(DEMO_DATA)

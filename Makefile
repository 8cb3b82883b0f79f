# cureflow: `make demo` runs the whole product on a simulated portfolio, `make test` runs the test suite.
SHELL  := /bin/bash
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO_DATA := data/portfolio
# the bundle the demo just trained (stamped with its registered version), whatever the quality gate said: the
# demo shows the product end to end; production scores models:/cureflow@champion, which only the gate sets
DEMO_MODEL := outputs/train/bundle.joblib
AS_OF  ?= 2026-11-01T00:00:00+09:00
PORT   ?= 5000
# pip's one warning per package when a configured extra index lacks it: noise that buried the install output
PIP_NOISE := is ignored: it is neither a file nor a directory

.PHONY: install demo test audit lint mlflow-ui clean

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
	$(BIN)/cureflow train --data $(DEMO_DATA) --out outputs/train && \
	$(BIN)/cureflow evaluate --data $(DEMO_DATA) --model $(DEMO_MODEL) --out outputs/evaluation.json && \
	$(BIN)/cureflow experiments --data $(DEMO_DATA) --out outputs/experiments.html && \
	$(BIN)/cureflow score --data $(DEMO_DATA) --model $(DEMO_MODEL) --as-of $(AS_OF) --out outputs/work_queue.parquet \
		--top 15 && \
	echo "" && \
	echo "work queue:      outputs/work_queue.parquet (summary: outputs/work_queue.parquet.summary.json)" && \
	echo "morning report:  outputs/work_queue.parquet.report.html (decision records: decisions.db)" && \
	echo "policy value:    outputs/evaluation.json" && \
	echo "A/B readout:     outputs/experiments.html" && \
	echo "holdout metrics: outputs/train/metrics.json (plots: outputs/train/*.png)" && \
	echo "MLflow store:    $$(pwd)/mlflow.db (artifacts in mlartifacts/)" && \
	echo "MLflow UI:       make mlflow-ui [PORT=5000], then open http://127.0.0.1:5000" && \
	echo "demo wall time:  $$(( $$(date +%s) - start ))s"

test: audit
	scripts/ensure_postgres.sh
	scripts/ensure_java.sh
	$(BIN)/pytest -q -n 2

audit: install
	$(BIN)/python scripts/audit.py

lint: install
	$(BIN)/ruff check models pipelines serving tests benchmarks

mlflow-ui: install
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$$(pwd)/mlflow.db --host 127.0.0.1 --port $(PORT)

clean:
	rm -rf outputs mlflow.db mlartifacts $(DEMO_DATA)

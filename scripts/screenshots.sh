#!/usr/bin/env bash
# Screenshots for the README from a real browser (Debian's headless Chromium): the morning report, the model
# report, the API's /docs page served by a running `cureflow serve`, and the MLflow UI on the demo's tracking
# store (the training runs, one run, the registered model), all offline. Run after `make demo`:
#   make screenshots            (installs chromium with apt-get when it is missing, as scripts/ensure_java.sh does)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=docs/figures
PORT=${PORT:-8765}
BIN=.venv/bin
mkdir -p "$OUT"
if ! command -v chromium >/dev/null; then
    SUDO=$([ "$(id -u)" -eq 0 ] && echo "" || echo sudo)
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
shot() {  # url, file, height[, width, budget ms]: a page, JavaScript run for up to 10 s of virtual time
    chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size="${4:-1280}","$3" \
        --virtual-time-budget="${5:-10000}" --screenshot="$2" "$1" 2>/dev/null
    echo "$2"
}
free_port() {  # host: a port nobody listens on there
    $BIN/python -c "import socket; s = socket.socket(); s.bind(('$1', 0)); print(s.getsockname()[1])"
}
wait_for() {  # url, log: up to 60 s for the url to answer, else the log and exit 1
    for _ in $(seq 60); do
        curl -sf "$1" >/dev/null && return 0
        sleep 1
    done
    cat "$2" >&2
    exit 1
}
for f in outputs/work_queue.parquet.report.html outputs/train/report.html outputs/train/bundle.joblib mlflow.db; do
    [ -e "$f" ] || { echo "missing $f: run make demo first" >&2; exit 1; }
done
pids=()
logs=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -f "${logs[@]}"' EXIT
shot "file://$PWD/outputs/work_queue.parquet.report.html" "$OUT/morning_report.png" 2200
shot "file://$PWD/outputs/train/report.html" "$OUT/model_report.png" 2200
log=$(mktemp)
logs+=("$log")
CUREFLOW_DATABASE_URL="sqlite:///$(mktemp -d)/decisions.db" CUREFLOW_API_KEYS=screenshot-key-0000000001 \
    $BIN/cureflow serve --model outputs/train/bundle.joblib --port "$PORT" >"$log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$PORT/readyz" "$log"
shot "http://127.0.0.1:$PORT/docs" "$OUT/api_docs.png" 1400

# The MLflow UI on the demo's store (make demo: mlflow.db, artifacts in mlartifacts/), on a free port. MLflow
# 3.17 opens an experiment on its GenAI overview unless the page asks for the model-training view
# (?workflowType=machine_learning; the browser remembers the choice), and on localhost it also opens its
# assistant panel over the right third on a first visit: the UI is served on 127.0.0.2 (loopback too, but
# not "localhost" to the UI), with that host and origin allowed, so the pictures show the runs themselves.
HOST=127.0.0.2
MLPORT=${MLFLOW_PORT:-$(free_port $HOST)}
UI="http://$HOST:$MLPORT"
mllog=$(mktemp)
logs+=("$mllog")
$BIN/mlflow ui --backend-store-uri "sqlite:///$PWD/mlflow.db" --host $HOST --port "$MLPORT" --workers 1 \
    --allowed-hosts "$HOST:$MLPORT" --cors-allowed-origins "$UI" >"$mllog" 2>&1 &
pids+=($!)
wait_for "$UI/health" "$mllog"
experiment=$(curl -sf "$UI/api/2.0/mlflow/experiments/get-by-name?experiment_name=cureflow" |
    $BIN/python -c 'import json, sys; print(json.load(sys.stdin)["experiment"]["experiment_id"])')
run=$(curl -sf -X POST "$UI/api/2.0/mlflow/runs/search" -H 'Content-Type: application/json' \
    -d "{\"experiment_ids\": [\"$experiment\"], \"max_results\": 1, \"order_by\": [\"attributes.start_time DESC\"]}" |
    $BIN/python -c 'import json, sys; print(json.load(sys.stdin)["runs"][0]["info"]["run_id"])')
view="workflowType=machine_learning"
shot "$UI/#/experiments/$experiment?$view" "$OUT/mlflow_runs.png" 600 1400 20000
shot "$UI/#/experiments/$experiment/runs/$run?$view" "$OUT/mlflow_run.png" 1100 1400 20000
shot "$UI/#/models/cureflow?$view" "$OUT/mlflow_model.png" 560 1400 20000

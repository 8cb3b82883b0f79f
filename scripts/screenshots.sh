#!/usr/bin/env bash
# Screenshots for the README from a real browser (Debian's headless Chromium): the morning report, the model
# report and the API's /docs page served by a running `cureflow serve`, all offline. Run after `make demo`:
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
shot() {  # url, file, height: a full-width page, JavaScript run for up to 10 s of virtual time
    chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,"$3" \
        --virtual-time-budget=10000 --screenshot="$2" "$1" 2>/dev/null
    echo "$2"
}
for f in outputs/work_queue.parquet.report.html outputs/train/report.html outputs/train/bundle.joblib; do
    [ -e "$f" ] || { echo "missing $f: run make demo first" >&2; exit 1; }
done
shot "file://$PWD/outputs/work_queue.parquet.report.html" "$OUT/morning_report.png" 2200
shot "file://$PWD/outputs/train/report.html" "$OUT/model_report.png" 2200
log=$(mktemp)
CUREFLOW_DATABASE_URL="sqlite:///$(mktemp -d)/decisions.db" CUREFLOW_API_KEYS=screenshot-key-0000000001 \
    $BIN/cureflow serve --model outputs/train/bundle.joblib --port "$PORT" >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 60); do
    curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break
    sleep 1
done
curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null || { cat "$log" >&2; exit 1; }
shot "http://127.0.0.1:$PORT/docs" "$OUT/api_docs.png" 1400

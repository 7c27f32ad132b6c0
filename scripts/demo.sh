#!/usr/bin/env bash
# The README's main job on embedded defaults. Usage: scripts/demo.sh [DATA_DIR]
#
# 1. generates the default synthetic world (seed 7: 2000 users, 5000 items, 300 queries,
#    7 warm-up days of events, 8 history days and the live day the demo scores), unless
#    DATA_DIR already holds it;
# 2. runs the feature_registry DAG: plan, validate, apply and materialise features/;
# 3. runs the model_publish DAG: builds training sets with Beam, trains a small onePiece
#    model, evaluates and gates it, exports it into DATA_DIR/model_repo, smoke-scores it
#    on Triton and pins it;
# 4. runs the prerank_refresh DAG for one logical date of the live day;
# 5. prints where the scores, manifest and report are, and a summary table;
# 6. audits the published scores against the outcomes the world logged afterwards.
#
# Every DAG runs with `airflow dags test` on a throwaway AIRFLOW_HOME under DATA_DIR.
# Knobs (environment): DEMO_EPOCHS (1), DEMO_TRAIN_DAYS (1), DEMO_EVAL_REQUESTS (500),
# DEMO_HOUR (0: the UTC hour of the live day to score; any hour 0-23 works, the contexts
# read that day's events before it), ONEPIECE_REFRESH_WINDOW_MINUTES (60).
# The defaults keep the demo short on 2 busy cores; raise them for a better model.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-data}
mkdir -p "$DATA"
DATA=$(cd "$DATA" && pwd)
BIN=$PWD/.venv/bin
export ONEPIECE_DATA="$DATA"
export ONEPIECE_MODEL_REPO=${ONEPIECE_MODEL_REPO:-$DATA/model_repo}
export AIRFLOW_HOME="$DATA/_airflow"
export AIRFLOW__CORE__DAGS_FOLDER="$PWD/dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export ONEPIECE_TASK_RETRIES=${ONEPIECE_TASK_RETRIES:-1}
export ONEPIECE_RETRY_DELAY_S=${ONEPIECE_RETRY_DELAY_S:-5}
LOGS="$DATA/_demo_logs"

step() { printf '\n== %s  (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }
run() {  # run LOGNAME CMD...: quiet on success, the log's tail on failure
  local log="$LOGS/$1.log"; shift
  mkdir -p "$LOGS"  # (the world generator publishes the whole data root in one step)
  if ! "$@" >"$log" 2>&1; then
    tail -n 40 "$log"; echo "demo: step failed; full log: $log" >&2; exit 1
  fi
}

if [[ ! -f "$DATA/world.json" ]]; then
  step "generating the synthetic world into $DATA"
  "$BIN/onepiece" world --out "$DATA" --seed 7 --users 2000 --items 5000 --queries 300 --days 8
else
  step "world already in $DATA (delete it to regenerate)"
fi
LIVE_DAY=$("$BIN/python" -c "
import json, sys
print(json.load(open(sys.argv[1]))['summary']['live_day'])" "$DATA/world.json")
HOUR=$(printf "%02d" "${DEMO_HOUR:-0}")
LOGICAL="${LIVE_DAY}T${HOUR}:00:00+00:00"

step "Airflow database in $AIRFLOW_HOME"
run airflow_db "$BIN/airflow" db migrate

step "feature_registry DAG: plan, validate, apply, materialise up to $LIVE_DAY"
run feature_registry "$BIN/airflow" dags test feature_registry "${LIVE_DAY}T00:00:00+00:00"

step "model_publish DAG: training set, train (${DEMO_EPOCHS:-1} epoch(s)), evaluate, gate, export, smoke, pin"
run model_publish "$BIN/airflow" dags test model_publish -c "{\"epochs\": ${DEMO_EPOCHS:-1}, \
\"train_days\": ${DEMO_TRAIN_DAYS:-1}, \"max_eval_requests\": ${DEMO_EVAL_REQUESTS:-500}}"

step "prerank_refresh DAG for logical date $LOGICAL"
run prerank_refresh "$BIN/airflow" dags test prerank_refresh "$LOGICAL"

step "done"
"$BIN/python" -m onepiece.pipeline.summary "$DATA" "dt=${LIVE_DAY}/hour=${HOUR}"
step "the published scores against what the world's users then did (onepiece outcomes)"
"$BIN/onepiece" outcomes --data "$DATA" --partition "dt=${LIVE_DAY}/hour=${HOUR}"
echo "Airflow UI on the same setup: AIRFLOW_HOME=$AIRFLOW_HOME AIRFLOW__CORE__DAGS_FOLDER=$PWD/dags $BIN/airflow standalone"
echo "Logs of every step: $LOGS"

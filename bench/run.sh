#!/usr/bin/env bash
# Load benchmark of the release binary, on SQLite and on PostgreSQL, against the storage
# engine's own ceiling. Writes bench/results/<date>.json and bench/results/<date>.md.
#
#   bench/run.sh            # the full run: 10,000 merchants, 3 s warm-up + 15 s per run
#   bench/run.sh --quick    # a smoke run: 600 merchants, 1 s + 3 s per run
#
# Settings (environment):
#   BENCH_MERCHANTS (10000)  BENCH_WARMUP (3)  BENCH_DURATION (15)   whole seconds
#   BENCH_CONCURRENCY (1,16,64)  BENCH_SCENARIOS (read-one,read-six,upsert,mixed)
#   BENCH_BACKENDS ("sqlite postgres")  BENCH_CEILING_BATCH (16; 0 skips the batched ceiling)
#   BENCH_WRITERS_SWEEP ("1 2": PostgreSQL writer counts tried besides the configured one)
#   BENCH_PG (postgres://postgres@127.0.0.1:5432, must allow CREATE DATABASE)
#   BENCH_TMPDIR (/var/tmp; must be a real disk: fsync on tmpfs costs nothing)
#   BENCH_OUT (bench/results)  BENCH_LOG_LEVEL (info, the service's default)
#   BENCH_NOTE (free text added to the report)
#   DATABASE_WRITERS, DATABASE_MAX_CONNECTIONS and other service settings pass through.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--quick" ]]; then
  : "${BENCH_MERCHANTS:=600}" "${BENCH_WARMUP:=1}" "${BENCH_DURATION:=3}"
elif [[ $# -gt 0 ]]; then
  sed -n '2,19p' "$0" >&2
  exit 2
fi
MERCHANTS=${BENCH_MERCHANTS:-10000}
WARMUP=${BENCH_WARMUP:-3}
DURATION=${BENCH_DURATION:-15}
CONCURRENCY=${BENCH_CONCURRENCY:-1,16,64}
SCENARIOS=${BENCH_SCENARIOS:-read-one,read-six,upsert,mixed}
BACKENDS=${BENCH_BACKENDS:-sqlite postgres}
CEILING_BATCH=${BENCH_CEILING_BATCH:-16}
WRITERS_SWEEP=${BENCH_WRITERS_SWEEP:-1 2}
PG=${BENCH_PG:-postgres://postgres@127.0.0.1:5432}
OUT=${BENCH_OUT:-bench/results}
for n in "$MERCHANTS" "$WARMUP" "$DURATION" "$CEILING_BATCH"; do
  [[ "$n" =~ ^[0-9]+$ ]] || { echo "bench: '$n' must be a whole number" >&2; exit 2; }
done
for tool in jq pgbench psql; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is required (apt-get install jq postgresql-client)" >&2; exit 2; }
done

log() { echo "bench: $*" >&2; }

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/token-service-target}"
log "building the release binaries"
cargo build --release --locked -p token-service -p token-bench
SERVICE_BIN="$CARGO_TARGET_DIR/release/token-service"
BENCH_BIN="$CARGO_TARGET_DIR/release/token-bench"

WORK=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/token-bench.XXXXXX")
RUNS="$WORK/runs.jsonl"
: >"$RUNS"
SERVICE_PID=""
PG_DB=""

stop_service() {
  if [[ -n "$SERVICE_PID" ]]; then
    kill -TERM "$SERVICE_PID" 2>/dev/null || true
    wait "$SERVICE_PID" 2>/dev/null || true
    SERVICE_PID=""
  fi
}
cleanup() {
  stop_service
  if [[ -n "$PG_DB" ]]; then
    psql "$PG/postgres" -qtAc "DROP DATABASE IF EXISTS $PG_DB" >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# Secrets for this run only.
CLIENT_SECRET=$("$SERVICE_BIN" keygen)
SERVICE_KEY=$("$SERVICE_BIN" keygen)
ENCRYPTION_KEY=$("$SERVICE_BIN" keygen)
export BENCH_CLIENT_SECRET="$CLIENT_SECRET" BENCH_SERVICE_KEY="$SERVICE_KEY"

# Starts the service on $1 (a DATABASE_URL) with its log in $2 and any further VAR=value
# settings; sets SERVICE_PID and PORT.
start_service() {
  local url=$1 logfile=$2
  shift 2
  # From the temporary directory, so that no .env of the checkout is read.
  (cd "$WORK" && exec env RATE_LIMIT_IP_PER_SEC=0 RATE_LIMIT_SHOP_PER_SEC=0 RATE_LIMIT_SERVICE_PER_SEC=0 "$@" APP_ENV=bench API_HOST=127.0.0.1 TOKEN_API_EXTERNAL_PORT=0 \
    DATABASE_URL="$url" CLIENT_JWT_SECRET="$CLIENT_SECRET" \
    INTERNAL_JWT_SECRET="platform-connector:$SERVICE_KEY" \
    TOKEN_ENCRYPTION_KEY="$ENCRYPTION_KEY" LOG_FORMAT=json \
    LOGGING_LEVEL="${BENCH_LOG_LEVEL:-info}" "$SERVICE_BIN" serve >"$logfile" 2>&1) &
  SERVICE_PID=$!
  PORT=""
  for _ in $(seq 1 300); do
    PORT=$(jq -r 'select(.message? == "token-service listening") | .port' "$logfile" 2>/dev/null | head -n1 || true)
    [[ -n "$PORT" ]] && return 0
    kill -0 "$SERVICE_PID" 2>/dev/null || break
    sleep 0.1
  done
  log "the service did not start; its log:"
  tail -n 20 "$logfile" >&2
  exit 1
}

# Half of the best closed-loop rate of scenario $2 on backend $1.
half_of_max() {
  jq -rs --arg b "$1" --arg s "$2" \
    '[.[] | select(.kind == "service" and .backend == $b and .scenario == $s and .mode == "closed") | .rps] | max // 0 | . / 2 | floor' \
    "$RUNS"
}

run_service() {
  local backend=$1 url=$2
  log "$backend: starting the service"
  start_service "$url" "$WORK/$backend.log"
  log "$backend: seeding $MERCHANTS merchants (pid $SERVICE_PID, port $PORT)"
  "$BENCH_BIN" seed --addr "127.0.0.1:$PORT" --merchants "$MERCHANTS"
  if [[ "$backend" == postgres ]]; then
    # Planner statistics, as autovacuum gathers them within a minute or so of a bulk load;
    # without them PostgreSQL guesses that a merchant has ~0.5% of all rows and plans the
    # batched lookup as a sequential scan.
    psql "$url" -qc "ANALYZE" >/dev/null
  fi
  log "$backend: scenarios $SCENARIOS at concurrency $CONCURRENCY"
  "$BENCH_BIN" load --addr "127.0.0.1:$PORT" --merchants "$MERCHANTS" --backend "$backend" \
    --scenarios "$SCENARIOS" --concurrency "$CONCURRENCY" --pid "$SERVICE_PID" \
    --warmup "$WARMUP" --duration "$DURATION" >>"$RUNS"
  for scenario in read-one read-six; do
    [[ ",$SCENARIOS," == *",$scenario,"* ]] || continue
    local rate
    rate=$(half_of_max "$backend" "$scenario")
    [[ "$rate" -gt 0 ]] || continue
    log "$backend: $scenario open loop at $rate/s (half of the maximum)"
    "$BENCH_BIN" load --addr "127.0.0.1:$PORT" --merchants "$MERCHANTS" --backend "$backend" \
      --scenarios "$scenario" --rate "$rate" --pid "$SERVICE_PID" \
      --warmup "$WARMUP" --duration "$DURATION" >>"$RUNS"
  done
  stop_service
  if [[ ",$SCENARIOS," == *",read-one,"* ]]; then
    # The naive design on the same binary: every request in its own transaction and commit.
    log "$backend: read-one with one commit per request (DATABASE_MAX_BATCH=1)"
    start_service "$url" "$WORK/$backend-single.log" DATABASE_MAX_BATCH=1
    "$BENCH_BIN" load --addr "127.0.0.1:$PORT" --merchants "$MERCHANTS" --backend "$backend" \
      --scenarios read-one --concurrency "$CONCURRENCY" --pid "$SERVICE_PID" \
      --variant one-commit-per-request --warmup "$WARMUP" --duration "$DURATION" >>"$RUNS"
    stop_service
  fi
  if [[ "$backend" == postgres ]]; then
    # Other writer counts (DATABASE_WRITERS), to see whether the default is the right one.
    local writers
    for writers in $WRITERS_SWEEP; do
      log "$backend: read-one and upsert with DATABASE_WRITERS=$writers"
      start_service "$url" "$WORK/$backend-writers-$writers.log" DATABASE_WRITERS="$writers" \
        DATABASE_MAX_CONNECTIONS="$((writers + 2))"
      "$BENCH_BIN" load --addr "127.0.0.1:$PORT" --merchants "$MERCHANTS" --backend "$backend" \
        --scenarios read-one,upsert --concurrency 16,64 --pid "$SERVICE_PID" \
        --variant "writers-$writers" --warmup "$WARMUP" --duration "$DURATION" >>"$RUNS"
      stop_service
    done
  fi
}

# One pgbench run of script $1 with $2 clients for $3 seconds. Transactions that deadlock
# (batches locking the same rows in another order) are retried, as the service does.
pgbench_run() {
  local script=$1 clients=$2 seconds=$3 out
  out=$(pgbench -n -M prepared --max-tries=10 -c "$clients" -j "$((clients < 2 ? clients : 2))" -T "$seconds" \
    -D merchants="$MERCHANTS" -f "$script" "$PG/$PG_DB" 2>&1) || {
    log "pgbench failed:"
    echo "$out" >&2
    exit 1
  }
  echo "$out"
}

pgbench_record() {
  local out=$1 clients=$2 batch=$3 tps latency processed failed
  tps=$(grep -oP '^tps = \K[0-9.]+' <<<"$out")
  latency=$(grep -oP '^latency average = \K[0-9.]+' <<<"$out")
  processed=$(grep -oP 'actually processed: \K[0-9]+' <<<"$out")
  failed=$(grep -oP 'number of failed transactions: \K[0-9]+' <<<"$out" || echo 0)
  jq -nc --argjson c "$clients" --argjson b "$batch" --argjson tps "$tps" \
    --argjson lat "$latency" --argjson n "$processed" --argjson f "$failed" --argjson d "$DURATION" \
    '{kind: "ceiling", backend: "postgres", scenario: "read-one", concurrency: $c, mode: "closed",
      batch: $b, requests: ($n * $b), errors: $f, seconds: $d, rps: ($tps * $b), mean_ms: $lat}'
}

# The read transaction of one token, as pgbench SQL; $1 reads per transaction.
pgbench_script() {
  local batch=$1 i
  for ((i = 1; i <= batch; i++)); do echo "\\set m$i random(0, :merchants - 1)"; done
  echo "BEGIN;"
  for ((i = 1; i <= batch; i++)); do
    cat <<SQL
SELECT id AS r${i}_id, platform_name, platform_shop_id, domain, encrypted_token, token_type, expires_at, scopes FROM platform_tokens WHERE merchant_id = 'bench-m' || :m${i}::text AND platform_name = 'shopify' \\gset
UPDATE platform_tokens SET access_count = access_count + 1, last_accessed_by = 'platform-connector', last_accessed_at = now() WHERE id = :r${i}_id;
INSERT INTO token_access_logs (id, token_id, merchant_id, platform_name, accessed_by, access_type, success, error_code, correlation_id, ip_address, accessed_at) VALUES (gen_random_uuid(), :r${i}_id, 'bench-m' || :m${i}::text, 'shopify', 'platform-connector', 'read', true, NULL, 'corr_pgbench', '127.0.0.1', now());
SQL
  done
  echo "COMMIT;"
}

ceiling_postgres() {
  pgbench_script 1 >"$WORK/read_one.sql"
  log "postgres: pgbench warm-up"
  pgbench_run "$WORK/read_one.sql" 16 "$((WARMUP > 0 ? WARMUP : 1))" >/dev/null
  for c in ${CONCURRENCY//,/ }; do
    log "postgres: pgbench ceiling, one commit per read, $c clients"
    pgbench_record "$(pgbench_run "$WORK/read_one.sql" "$c" "$DURATION")" "$c" 1 >>"$RUNS"
  done
  if [[ "$CEILING_BATCH" -gt 1 ]]; then
    # One session: several would lock random rows in different orders and deadlock (each
    # deadlock costs deadlock_timeout, 1 s), which says nothing about the engine's speed.
    pgbench_script "$CEILING_BATCH" >"$WORK/read_batch.sql"
    log "postgres: pgbench, $CEILING_BATCH reads per commit, 1 client"
    pgbench_record "$(pgbench_run "$WORK/read_batch.sql" 1 "$DURATION")" 1 "$CEILING_BATCH" >>"$RUNS"
  fi
}

ceiling_sqlite() {
  local db=$1
  log "sqlite: in-process ceiling, one commit per read"
  "$BENCH_BIN" sqlite-ceiling --db "$db" --merchants "$MERCHANTS" --concurrency "$CONCURRENCY" \
    --warmup "$WARMUP" --duration "$DURATION" >>"$RUNS"
  if [[ "$CEILING_BATCH" -gt 1 ]]; then
    log "sqlite: in-process, $CEILING_BATCH reads per commit"
    "$BENCH_BIN" sqlite-ceiling --db "$db" --merchants "$MERCHANTS" --concurrency 1 \
      --batch "$CEILING_BATCH" --warmup "$WARMUP" --duration "$DURATION" >>"$RUNS"
  fi
}

# The disk's commit latency changes with what else the machine writes: 200 synchronous
# 4 KiB writes (what an fsync'd commit costs at least), milliseconds per write.
disk_probe() {
  local seconds
  seconds=$(dd if=/dev/zero of="$WORK/probe" bs=4k count=200 oflag=dsync 2>&1 | grep -oP 'copied, \K[0-9.]+')
  rm -f "$WORK/probe"
  awk -v s="$seconds" 'BEGIN { printf "%.2f", s * 1000 / 200 }'
}
DISK_PROBES=""
probe() {
  local ms
  ms=$(disk_probe)
  log "disk: $ms ms per synchronous 4 KiB write ($1)"
  DISK_PROBES="${DISK_PROBES:+$DISK_PROBES, }$1 $ms"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
log "load average before: $LOAD_BEFORE"
for backend in $BACKENDS; do
  probe "before $backend"
  case "$backend" in
    sqlite)
      mkdir -p "$WORK/sqlite"
      run_service sqlite "sqlite://$WORK/sqlite/tokens.db"
      ceiling_sqlite "$WORK/sqlite/tokens.db"
      ;;
    postgres)
      PG_DB="bench_$(date +%s)_$$"
      psql "$PG/postgres" -qtAc "CREATE DATABASE $PG_DB" >/dev/null
      run_service postgres "$PG/$PG_DB"
      ceiling_postgres
      psql "$PG/postgres" -qtAc "DROP DATABASE IF EXISTS $PG_DB" >/dev/null
      PG_DB=""
      ;;
    *) log "unknown backend $backend"; exit 2 ;;
  esac
done
probe "at the end"
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average after: $LOAD_AFTER"

mkdir -p "$OUT"
NAME=$(date -u +%Y-%m-%d)
[[ -e "$OUT/$NAME.json" ]] && NAME=$(date -u +%Y-%m-%dT%H%M)
PG_SETTINGS=$(psql "$PG/postgres" -qtAc "SELECT string_agg(name || '=' || setting, ', ' ORDER BY name) FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'wal_sync_method', 'commit_delay', 'shared_buffers')" 2>/dev/null || echo unknown)
jq -n --arg date "$STARTED" --arg commit "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src bench Cargo.toml || echo '+changes')" \
  --arg cores "$(nproc)" --arg cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" \
  --arg before "$LOAD_BEFORE" --arg after "$LOAD_AFTER" --arg merchants "$MERCHANTS" \
  --arg rows "$(( MERCHANTS / 6 * 21 + (MERCHANTS % 6) * (MERCHANTS % 6 + 1) / 2 ))" \
  --arg warmup "$WARMUP" --arg duration "$DURATION" --arg pg "$PG_SETTINGS" \
  --arg writers "${DATABASE_WRITERS:-4 (default)}" --arg maxconn "${DATABASE_MAX_CONNECTIONS:-10 (default)}" \
  --arg note "${BENCH_NOTE:-}" --arg disk "$DISK_PROBES" \
  '{date: $date, git_commit: $commit, cores: $cores, cpu: $cpu, load_before: $before,
    load_after: $after, merchants: $merchants, token_rows: $rows, warmup_s: $warmup,
    duration_s: $duration, postgres_settings: $pg, database_writers: $writers,
    database_max_connections: $maxconn, disk_sync_write_ms: $disk}
    + (if $note == "" then {} else {note: $note} end)' \
  >"$WORK/meta.json"
"$BENCH_BIN" report --runs "$RUNS" --meta "$WORK/meta.json" \
  --json-out "$OUT/$NAME.json" --markdown-out "$OUT/$NAME.md"
log "wrote $OUT/$NAME.json and $OUT/$NAME.md"

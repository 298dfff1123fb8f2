#!/usr/bin/env bash
# Throughput of `token-service rewrap` and `token-service import-legacy` on ROWS rows
# (default 100,000) per backend, with the release binary.
#
#   bash bench/key_lifecycle.sh            # SQLite and PostgreSQL
#   ROWS=10000 bash bench/key_lifecycle.sh
#
# Needs psql and sqlite3, and a PostgreSQL server at BENCH_POSTGRES_URL (default
# postgres://postgres@127.0.0.1:5432/postgres) that allows CREATE DATABASE. Every row holds
# a ciphertext exactly as the original service wrote it (the shared test vectors), so both
# commands do their real work per row: verify and decrypt Fernet, then envelope-encrypt.
# The databases it creates are dropped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

ROWS="${ROWS:-100000}"
BATCH="${BATCH:-500}"
ADMIN_URL="${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
SERVER_URL="${ADMIN_URL%/*}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/token-service-target}"

cargo build --release --quiet
BIN="$CARGO_TARGET_DIR/release/token-service"

VECTORS=tests/fixtures/legacy_fernet_vectors.json
json_field() { sed -n "s/.*\"$1\": \"\\([^\"]*\\)\".*/\\1/p" "$VECTORS" | head -n1; }
LEGACY_SECRET="$(json_field encryption_key)"
CIPHERTEXT="$(json_field encrypted_token)"

# key_v2 is the new primary; key_v1 is the original service's secret, kept for reading.
export TOKEN_ENCRYPTION_KEY_ID=key_v2
export TOKEN_ENCRYPTION_KEY="bench-primary-secret-0123456789abcdefghijkl"
export TOKEN_ENCRYPTION_OLD_KEYS="key_v1:$LEGACY_SECRET"
export LOG_FORMAT=json LOGGING_LEVEL=warn

RUN_ID="$(date +%s)_$$"
TMP="$(mktemp -d)"
cleanup() {
  for db in $(psql -At "$ADMIN_URL" -c "SELECT datname FROM pg_database WHERE datname LIKE 'ts_bench_%_$RUN_ID'"); do
    psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
  done
  rm -rf "$TMP"
}
trap cleanup EXIT

# Creates a database named after this run (so that cleanup finds it) and prints its URL.
new_pg_database() {
  local name="ts_bench_${1}_${RUN_ID}"
  psql -q "$ADMIN_URL" -c "CREATE DATABASE \"$name\"" >/dev/null
  echo "$SERVER_URL/$name"
}

# Seconds (with decimals) that "$@" takes; its output goes to $TMP/last.out.
timed() {
  local start end
  start=$(date +%s.%N)
  "$@" >"$TMP/last.out" 2>&1 || { cat "$TMP/last.out" >&2; return 1; }
  end=$(date +%s.%N)
  awk -v s="$start" -v e="$end" 'BEGIN { printf "%.3f", e - s }'
}

rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }

# Rows as the original wrote them, in this service's schema (what rewrap converts).
seed_target_sqlite() {
  sqlite3 "$1" >/dev/null <<SQL
PRAGMA journal_mode = WAL;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $ROWS)
INSERT INTO platform_tokens (id, merchant_id, platform_name, platform_shop_id, domain,
  encrypted_token, encryption_key_id, token_type, access_count, created_at, updated_at)
SELECT randomblob(16), 'm-' || i, 'shopify', 'shop-' || i, 'shop-' || i || '.myshopify.com',
  '$CIPHERTEXT', 'key_v1', 'oauth', 0, strftime('%Y-%m-%dT%H:%M:%fZ'), strftime('%Y-%m-%dT%H:%M:%fZ')
FROM n;
SQL
}

seed_target_postgres() {
  psql -q "$1" <<SQL
INSERT INTO platform_tokens (id, merchant_id, platform_name, platform_shop_id, domain,
  encrypted_token, encryption_key_id, token_type, access_count, created_at, updated_at)
SELECT gen_random_uuid(), 'm-' || i, 'shopify', 'shop-' || i, 'shop-' || i || '.myshopify.com',
  '$CIPHERTEXT', 'key_v1', 'oauth', 0, now(), now()
FROM generate_series(1, $ROWS) AS i;
SQL
}

# The original service's database: ROWS tokens and one access log per token.
seed_legacy() {
  psql -q "$1" -f tests/fixtures/legacy_schema.sql
  psql -q "$1" <<SQL
INSERT INTO platform_tokens (id, merchant_id, platform_name, platform_shop_id, domain,
  encrypted_token, encryption_key_id, token_type, access_count, created_at, updated_at)
SELECT gen_random_uuid()::text, 'm-' || i, 'shopify', 'shop-' || i, 'Shop-' || i || '.myshopify.com',
  '$CIPHERTEXT', 'key_v1', 'oauth', i % 50, now(), now()
FROM generate_series(1, $ROWS) AS i;
INSERT INTO token_access_logs (id, token_id, accessed_by, access_type, success, accessed_at)
SELECT gen_random_uuid()::text, id, 'platform-connector', 'read', true, now() FROM platform_tokens;
SQL
}

echo "rows: $ROWS, batch size: $BATCH, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
echo "legacy source:"
LEGACY_URL="$(new_pg_database legacy)"
seed_legacy "$LEGACY_URL"

for backend in sqlite postgres; do
  if [ "$backend" = sqlite ]; then
    file="$TMP/rewrap.db"
    export DATABASE_URL="sqlite://$file"
    "$BIN" migrate >/dev/null
    seed_target_sqlite "$file"
  else
    export DATABASE_URL="$(new_pg_database rewrap)"
    "$BIN" migrate >/dev/null
    seed_target_postgres "$DATABASE_URL"
  fi
  secs=$(timed "$BIN" rewrap --batch-size "$BATCH")
  grep -q "re-check: 0 row(s)" "$TMP/last.out"
  echo "$backend rewrap: $ROWS rows in $secs s = $(rate "$ROWS" "$secs") rows/s"

  if [ "$backend" = sqlite ]; then
    export DATABASE_URL="sqlite://$TMP/import.db"
  else
    export DATABASE_URL="$(new_pg_database import)"
  fi
  secs=$(timed "$BIN" import-legacy --from "$LEGACY_URL" --batch-size "$BATCH")
  grep -q "tokens: imported $ROWS," "$TMP/last.out"
  grep -q "access logs: imported $ROWS," "$TMP/last.out"
  echo "$backend import-legacy: $ROWS tokens + $ROWS logs in $secs s" \
    "= $(rate "$ROWS" "$secs") tokens/s ($(rate "$((2 * ROWS))" "$secs") rows/s)"
done

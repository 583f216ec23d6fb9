#!/usr/bin/env bash
# Backfill rate on a 1M-row table: `tandem backfill` into an empty HASH-partitioned target,
# at several batch sizes, on a throwaway cluster (fsync off unless DURABLE=1).
#
#   bash bench/backfill.sh            ROWS=1000000 BATCHES="1000 5000 20000" JOBS="1"
#   JOBS="1 2 4"     also run with --jobs 2 and 4 (parallel key ranges) at each batch size
#   PARITY=0         skip the parity runs at the end
#
# Prints rows/s per batch size (wall clock of the whole command, including the final
# re-check wait) and checks that legacy and target hold the same rows afterwards.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
ROWS=${ROWS:-1000000}
BATCHES=${BATCHES:-"1000 5000 20000"}
JOBS=${JOBS:-"1"}
PARITY=${PARITY:-1}
DURABLE=${DURABLE:-0}
PGBIN=$(dirname "$(readlink -f "$(command -v initdb 2>/dev/null || echo /usr/lib/postgresql/15/bin/initdb)")")
log() { printf '[backfill-bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

[[ $(id -u) -eq 0 ]] || { log "run as root (the cluster runs as postgres)"; exit 1; }
# The binary cargo builds: under CARGO_TARGET_DIR when set (TANDEM_BIN names another).
TANDEM_BIN=${TANDEM_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/tandem}
((${SKIP_BUILD:-0})) || (cd "$REPO" && cargo build --release -p tandem -q)
WORK=$(mktemp -d /tmp/tandem-backfill.XXXXXX)
chown postgres: "$WORK"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() { runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$WORK"; }
trap cleanup EXIT
runuser -u postgres -- "$PGBIN/initdb" -D "$WORK/data" -U postgres -A trust -E UTF8 >/dev/null
opts="-p $PORT -k $WORK -c listen_addresses=127.0.0.1 -c shared_buffers=1GB -c max_wal_size=4GB"
((DURABLE)) || opts+=" -c fsync=off -c synchronous_commit=off"
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/data" -l "$WORK/pg.log" -w start -o "$opts" >/dev/null
psql() { "$PGBIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -X -qAt -v ON_ERROR_STOP=1 "$@" postgres; }
log "loading $ROWS rows"
{
    echo "CREATE TABLE orders (id bigint PRIMARY KEY, tenant text NOT NULL, amount numeric(12,2) NOT NULL,"
    echo "                     note text, created_at timestamptz NOT NULL DEFAULT now());"
    echo "INSERT INTO orders SELECT g, (ARRAY['acme','globex','initech'])[1 + g % 3], g % 1000, 'row ' || g, now()"
    echo "  FROM generate_series(1, $ROWS) g;"
    echo "CREATE TABLE orders_v2 (LIKE orders INCLUDING ALL) PARTITION BY HASH (id);"
    for i in 0 1 2 3 4 5 6 7; do
        echo "CREATE TABLE orders_v2_p$i PARTITION OF orders_v2 FOR VALUES WITH (MODULUS 8, REMAINDER $i);"
    done
    echo "VACUUM ANALYZE;"
} >"$WORK/schema.sql"
psql -f "$WORK/schema.sql"
cat >"$WORK/tandem.toml" <<TOML
upstream = "postgres://postgres@127.0.0.1:$PORT/postgres"
[[rule]]
table = "public.orders"
mode = "dual_write"
# The guard would follow the bench's legacy-only column onto the target (see the last run).
guard = "off"
TOML
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
# seconds: the whole command; copy: without the final ANALYZE of the target (which a
# finished run does, and which the rates before 2026-11-28 did not include).
echo "| batch size | jobs | rows | seconds | rows/s | of which ANALYZE, s | copy rows/s | legacy = target |"
echo "|---|---|---|---|---|---|---|---|"
for b in $BATCHES; do
  for j in $JOBS; do
    psql -c "TRUNCATE orders_v2" -c "CHECKPOINT"
    start=$(date +%s.%N)
    "$TANDEM_BIN" backfill --config "$WORK/tandem.toml" --table public.orders \
        --batch-size "$b" --jobs "$j" --restart >"$WORK/out.txt" 2>&1 || { cat "$WORK/out.txt" >&2; exit 1; }
    end=$(date +%s.%N)
    same=$(psql -c "SELECT (SELECT count(*) FROM (TABLE orders EXCEPT TABLE orders_v2) a) = 0
                        AND (SELECT count(*) FROM orders_v2) = $ROWS")
    analyze=$(sed -n 's/.*(ANALYZE, \([0-9.]*\) s).*/\1/p' "$WORK/out.txt" | tail -1)
    awk -v b="$b" -v j="$j" -v r="$ROWS" -v s="$start" -v e="$end" -v ok="$same" -v a="${analyze:-0}" \
        'BEGIN { d = e - s; printf "| %d | %d | %d | %.1f | %.0f | %.1f | %.0f | %s |\n", b, j, r, d, r / d, a, r / (d - a), (ok == "t" ? "yes" : "NO") }'
  done
done
((PARITY)) || exit 0

# Parity diff rate: the whole-table comparison in one snapshot (both tables summarised,
# then the mismatching buckets compared row by row). Clean first, then with 1000 rows of
# injected divergence in the target.
echo
echo "| parity run | rows compared (legacy + target) | seconds | rows/s | verdict |"
echo "|---|---|---|---|---|"
summary() { python3 -c 'import json,sys,glob; d=json.load(open(sorted(glob.glob(sys.argv[1]+"/*/summary.json"))[-1])); t=d["tables"][0]; print("%.3f %.3f" % (t["schema"]["seconds"], t["seconds"]))' "$WORK/parity"; }
schema_rows=()
for label in clean "1000 rows diverge" "a legacy-only column"; do
    if [[ $label == "1000 rows diverge" ]]; then
        psql -c "UPDATE orders_v2 SET note = 'drift' WHERE id % 1000 = 0"
    elif [[ $label == "a legacy-only column" ]]; then
        # Schema parity counts the values a missing column would lose: one scan of legacy.
        psql -c "UPDATE orders_v2 SET note = o.note FROM orders o WHERE o.id = orders_v2.id AND orders_v2.note = 'drift'" \
             -c "ALTER TABLE orders ADD COLUMN legacy_only text DEFAULT 'kept only here'"
    fi
    start=$(date +%s.%N)
    "$TANDEM_BIN" parity --config "$WORK/tandem.toml" --min-samples 0 \
        --out "$WORK/parity" >"$WORK/parity.txt" 2>&1 || true
    end=$(date +%s.%N)
    verdict=$(grep -E "^public.orders" "$WORK/parity.txt" | sed 's/.*: //')
    awk -v r="$((2 * ROWS))" -v s="$start" -v e="$end" -v v="$verdict" -v l="$label" \
        'BEGIN { d = e - s; printf "| %s | %d | %.1f | %.0f | %s |\n", l, r, d, r / d, v }'
    read -r schema_s table_s < <(summary)
    schema_rows+=("| $label | $schema_s | $table_s |")
done

# The schema checks' share (columns, data rules, triggers, access rules, foreign keys): catalog
# queries, plus a count of a lost column's values (a scan of legacy).
echo
echo "| parity run | schema checks, seconds | whole table report, seconds |"
echo "|---|---|---|"
printf '%s\n' "${schema_rows[@]}"

#!/usr/bin/env bash
# COPY FROM STDIN through Tandem: a 1M-row `\copy items (sku, qty) FROM file` into a table
# with no rule, the same into a table with a dual_write rule (guard on, as by default), and
# the same straight into Postgres, in text and binary format, on a throwaway cluster (fsync
# off unless DURABLE=1).
#
#   bash bench/copy.sh            ROWS=1000000 ROUNDS=3 FORMATS="text binary"
#
# Runs are paired: each round runs every target back to back per format, the order rotating
# from round to round. Prints, per format and target, the median wall time and the median
# CPU of the cluster (backends, reaped or live, and Postgres's own background processes:
# the machine is shared, and CPU is what a busy neighbour disturbs least), Tandem's CPU,
# and the dual / plain ratio (median of per-round ratios). The mirror is checked after
# each dual_write run: both tables hold the same rows. The load average is printed too.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
ROWS=${ROWS:-1000000}
ROUNDS=${ROUNDS:-3}
FORMATS=${FORMATS:-"text binary"}
TARGETS=${TARGETS:-"direct plain dual"}
DURABLE=${DURABLE:-0}
SKIP_BUILD=${SKIP_BUILD:-0}   # also skipped when TANDEM_BIN names a binary
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
PGBIN=$(dirname "$(readlink -f "$(command -v initdb 2>/dev/null || echo /usr/lib/postgresql/15/bin/initdb)")")
log() { printf '[copy-bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

[[ $(id -u) -eq 0 ]] || { log "run as root (the cluster runs as postgres)"; exit 1; }
((SKIP_BUILD)) || [[ -n ${TANDEM_BIN:-} ]] || (cd "$REPO" && cargo build --release -p tandem -q)
TANDEM=${TANDEM_BIN:-$TARGET_DIR/release/tandem}
WORK=$(mktemp -d /tmp/tandem-copy.XXXXXX)
chown postgres: "$WORK"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
TPORT=$(free_port)
TANDEM_PID=""
cleanup() {
    [[ -n $TANDEM_PID ]] && kill "$TANDEM_PID" 2>/dev/null && wait "$TANDEM_PID" 2>/dev/null
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
runuser -u postgres -- "$PGBIN/initdb" -D "$WORK/data" -U postgres -A trust -E UTF8 >/dev/null
opts="-p $PORT -k $WORK -c listen_addresses=127.0.0.1 -c shared_buffers=1GB -c max_wal_size=8GB"
((DURABLE)) || opts+=" -c fsync=off -c synchronous_commit=off"
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/data" -l "$WORK/pg.log" -w start -o "$opts" >/dev/null
PG_PID=$(head -1 "$WORK/data/postmaster.pid")
psql_at() { local port=$1; shift; "$PGBIN/psql" -h 127.0.0.1 -p "$port" -U postgres -X -qAt -v ON_ERROR_STOP=1 "$@" postgres; }

log "loading $ROWS rows into a staging table and writing the files"
psql_at "$PORT" <<SQL
CREATE TABLE items (id bigserial PRIMARY KEY, sku text NOT NULL, qty integer NOT NULL,
                    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE items_v2 (id bigint PRIMARY KEY, sku text NOT NULL, qty integer NOT NULL,
                       created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE plain_items (id bigserial PRIMARY KEY, sku text NOT NULL, qty integer NOT NULL,
                          created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE staging AS SELECT 'sku-' || g AS sku, (g % 1000)::int AS qty
  FROM generate_series(1, $ROWS) g;
SQL
psql_at "$PORT" -c "\\copy staging TO '$WORK/rows.text'" \
    -c "\\copy staging TO '$WORK/rows.binary' WITH (FORMAT binary)"
psql_at "$PORT" -c "DROP TABLE staging"

cat >"$WORK/tandem.toml" <<TOML
listen = "127.0.0.1:$TPORT"
upstream = "postgres://postgres@127.0.0.1:$PORT/postgres"
log_level = "warn"
[[rule]]
table = "public.items"
target = "public.items_v2"
mode = "dual_write"
TOML
"$TANDEM" serve --config "$WORK/tandem.toml" >"$WORK/tandem.log" 2>&1 &
TANDEM_PID=$!
for _ in $(seq 100); do psql_at "$TPORT" -c "SELECT 1" >/dev/null 2>&1 && break; sleep 0.1; done
psql_at "$TPORT" -c "SELECT 1" >/dev/null || { cat "$WORK/tandem.log" >&2; exit 1; }
guard=$(psql_at "$PORT" -c "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'items'::regclass AND tgname LIKE 'tandem_guard_%'")
log "tandem $("$TANDEM" --version 2>/dev/null || echo '?') on $TPORT, guard triggers on items: $guard"

# CPU ticks of the cluster: the postmaster with its reaped children, and its live children.
cluster_ticks() {
    local total=0 pid
    total=$(awk '{ print $14 + $15 + $16 + $17 }' "/proc/$PG_PID/stat")
    for pid in $(pgrep -P "$PG_PID"); do
        [[ -r /proc/$pid/stat ]] || continue
        total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)))
    done
    echo "$total"
}
proc_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

# One run: empty the table(s), checkpoint, then time the \copy. Prints "wall cluster_cpu tandem_cpu".
run_one() {
    local target=$1 fmt=$2 port table with=""
    case $target in
        direct) port=$PORT table=plain_items ;;
        plain) port=$TPORT table=plain_items ;;
        dual) port=$TPORT table=items ;;
    esac
    [[ $fmt == binary ]] && with=" WITH (FORMAT binary)"
    psql_at "$PORT" -c "TRUNCATE items, items_v2, plain_items" -c "CHECKPOINT"
    local c0 t0 s0 s1 c1 t1 out
    c0=$(cluster_ticks) t0=$(proc_ticks "$TANDEM_PID") s0=$(date +%s.%N)
    out=$(psql_at "$port" -c "\\copy $table (sku, qty) FROM '$WORK/rows.$fmt'$with" 2>&1)
    s1=$(date +%s.%N)
    # The backend exits with the session: wait until the postmaster has reaped it.
    sleep 0.3
    c1=$(cluster_ticks) t1=$(proc_ticks "$TANDEM_PID")
    [[ $out == "COPY $ROWS" || $out == "" ]] || { log "$target $fmt: $out"; exit 1; }
    if [[ $target == dual ]]; then
        local check
        check=$(psql_at "$PORT" -c "SELECT (SELECT count(*) FROM items) || ' ' || (SELECT count(*) FROM items_v2)
            || ' ' || (SELECT count(*) FROM (TABLE items EXCEPT TABLE items_v2) d)")
        [[ $check == "$ROWS $ROWS 0" ]] || { log "MIRROR CHECK FAILED ($fmt): legacy, target, differing: $check"; exit 1; }
    fi
    awk -v a="$s0" -v b="$s1" -v c="$c0" -v d="$c1" -v e="$t0" -v f="$t1" -v hz="$HZ" \
        'BEGIN { printf "%.3f %.2f %.2f\n", b - a, (d - c) / hz, (f - e) / hz }'
}

read -r -a TLIST <<<"$TARGETS"
: >"$WORK/runs.tsv"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for ((round = 1; round <= ROUNDS; round++)); do
    for fmt in $FORMATS; do
        n=${#TLIST[@]}
        for ((i = 0; i < n; i++)); do
            target=${TLIST[$(((i + round - 1) % n))]}
            read -r wall cpu tcpu < <(run_one "$target" "$fmt")
            printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$fmt" "$target" "$wall" "$cpu" "$tcpu" >>"$WORK/runs.tsv"
            log "round $round $fmt $target: ${wall}s wall, ${cpu}s cluster CPU, ${tcpu}s tandem CPU (load $(cut -d' ' -f1 /proc/loadavg))"
        done
    done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$WORK/runs.tsv" "$load_before" "$load_after" "$ROWS" "$ROUNDS" <<'PY'
import statistics, sys
path, before, after, rows, rounds = sys.argv[1:]
runs = [l.split("\t") for l in open(path).read().split("\n") if l]
by = {}
for r, fmt, target, wall, cpu, tcpu in runs:
    by.setdefault((fmt, target), {})[int(r)] = (float(wall), float(cpu), float(tcpu))
fmts = list(dict.fromkeys(r[1] for r in runs))
targets = list(dict.fromkeys(r[2] for r in runs))
print(f"{rows} rows, {rounds} paired rounds; load average before {before}, after {after}\n")
print("| format | target | wall s (median, min-max) | cluster CPU s | tandem CPU s |")
print("|---|---|---|---|---|")
for f in fmts:
    for t in targets:
        v = by.get((f, t), {})
        if not v:
            continue
        w = [x[0] for x in v.values()]
        c = [x[1] for x in v.values()]
        tc = [x[2] for x in v.values()]
        print(f"| {f} | {t} | {statistics.median(w):.2f} ({min(w):.2f}-{max(w):.2f}) "
              f"| {statistics.median(c):.2f} | {statistics.median(tc):.2f} |")
print()
print("| format | dual / plain wall (median of per-round ratios) | dual / plain cluster CPU | plain / direct wall |")
print("|---|---|---|---|")
for f in fmts:
    d, p, di = by.get((f, "dual"), {}), by.get((f, "plain"), {}), by.get((f, "direct"), {})
    rw = [d[r][0] / p[r][0] for r in d if r in p]
    rc = [d[r][1] / p[r][1] for r in d if r in p and p[r][1] > 0]
    pd = [p[r][0] / di[r][0] for r in p if r in di]
    fmt = lambda xs: f"{statistics.median(xs):.2f}x ({min(xs):.2f}-{max(xs):.2f})" if xs else "-"
    print(f"| {f} | {fmt(rw)} | {fmt(rc)} | {fmt(pd)} |")
PY

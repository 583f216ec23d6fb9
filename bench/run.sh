#!/usr/bin/env bash
# Tandem vs direct Postgres vs PgBouncer, in one run, on one throwaway cluster.
#
#   bash bench/run.sh              the proxy-overhead comparison (mode "main")
#   bash bench/run.sh dual-write   TPC-B with dual-write rules vs a trigger-based baseline
#   bash bench/run.sh union-read   primary-key lookups (pgbench -S) through a union_read rule
#                                  on pgbench_accounts vs Tandem without rules vs direct
#   bash bench/run.sh shadow       what shadow reads cost the client: pgbench -S through a
#                                  dual_write rule on pgbench_accounts with sample_rate 0
#                                  (shadow_off), 0.000001 plus coverage (shadow_count: each
#                                  read's shape counted, the shape compared 5 times) and
#                                  0.01 plus coverage (shadow_on)
#   bash bench/run.sh guard        what the guard (statement triggers Tandem installs in the
#                                  database) costs: dual-write through Tandem with guard =
#                                  "mirror" vs "off", and writes around the proxy mirrored by
#                                  the guard vs by row triggers vs not mirrored
#
# Knobs (environment): SCALE=10 CLIENTS=8 THREADS=2 DURATION=10 ROUNDS=3
#   PROFILE_DURATION=5  length of each strace run (0 skips the syscall profile; default 0 in
#                       dual-write mode)
#   DURABLE=0           1 keeps fsync/synchronous_commit on (the Postgres defaults)
#   SHARED_BUFFERS      256MB (main), 1GB (dual-write: three databases, two with _v2 copies)
#   TARGETS             order of the first round; later rounds rotate it. Main:
#                       "direct tandem tandem_1w pgbouncer"; dual-write: "direct plain dual triggers";
#                       guard: "direct dual dual_noguard guard_direct triggers" (optional extra
#                       target: dual_noop)
#   WORKLOAD_MATCH      keep only the workloads whose name matches this regex (bash =~)
#   GUARD_PROFILE_DURATION=5  guard mode: length of each profiling run after the measured
#                       ones (Postgres restarted with pg_stat_statements; 0 skips it)
#   SKIP_BUILD=1        use the existing release binary (CARGO_TARGET_DIR is honoured)
#   PERF=1              also record a perf profile of each proxy (select-only prepared) into
#                       bench/results/perf-<target>.txt
#   KEEP_RAW=1          keep every pgbench log under bench/results/raw-<stamp>/
#   MAX_FOREIGN_PCT=5   rerun a workload's set of runs when other processes used more than
#                       this share of the machine's CPU during one of them (RETRIES=2 times)
#   QUIET_BUSY_PCT=10   before each set, wait up to QUIET_MAX_WAIT=120 s for the machine to
#                       be less busy than this
#
# Every pgbench run of a round is paired: for each workload, all targets run back to back,
# with the order rotated per round so slow drift (autovacuum, cache warmth, a noisy
# neighbour) lands on each target equally. Medians are taken over rounds.
#
# Dual-write mode uses three databases of one cluster, each loaded with the same pgbench data:
#   A ($DB_A)  plain pgbench tables: targets direct (Postgres) and plain (Tandem, no rules)
#   B ($DB_B)  plus pgbench_{accounts,tellers,branches}_v2, backfilled: target dual (Tandem
#              with a dual_write rule per table)
#   C ($DB_C)  the same _v2 tables, mirrored by AFTER ROW triggers: target triggers (Postgres)
# After the runs, every legacy/_v2 pair of B and C is compared (EXCEPT both ways); a
# difference fails the script (after the report is written).
#
# Guard mode (the guard's cost) uses A, B and C as above plus D, a copy of B:
#   dual          Tandem on B with the dual_write rules and the default guard = "mirror": the
#                 proxy mirrors each statement, the guard's statement triggers check it
#   dual_noguard  the same on D with guard = "off" in every rule (no guard triggers at all)
#   guard_direct  pgbench straight to Postgres on B once the dual proxy has installed the
#                 guard: every statement is mirrored by the guard ("mirror" around the proxy)
#   triggers      Postgres on C (AFTER ROW triggers), direct  Postgres on A (no mirror)
#   dual_noop     (optional) Tandem on E, a copy of B with guard = "off" and, instead of the
#                 guard, statement triggers with the same transition tables on the same tables
#                 calling a no-op function: the guard's firing cost without its check query
# Before the runs the script checks that B has the guard in place on every legacy table and
# D none; after every run in a mirrored database it compares, for the keys of that run's
# pgbench_history rows, each legacy table with its _v2 (EXCEPT both ways) and stops at the
# first difference. Then a profile: Postgres restarted with pg_stat_statements (track = all)
# and track_functions = pl, one short TPC-B run per target, the top statements and trigger
# functions per transaction.
#
# Adding a target: write start_<name> (sets PORT_<name>; DB_<name> when it does not use $DB_A;
# PID_<name> when there is a proxy process whose CPU and syscalls should be measured) and add
# <name> to TARGETS. Adding a workload: append "name|pgbench args|clients|threads" to WORKLOADS.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)

MODE=${1:-main}
case $MODE in
    main | dual-write | union-read | guard | shadow) ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "usage: bash bench/run.sh [main|dual-write|union-read|guard|shadow]" >&2
        exit 2
        ;;
esac

SCALE=${SCALE:-10}
CLIENTS=${CLIENTS:-8}
THREADS=${THREADS:-2}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
DURABLE=${DURABLE:-0}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_RAW=${KEEP_RAW:-0}
PERF=${PERF:-0}
MAX_FOREIGN_PCT=${MAX_FOREIGN_PCT:-5}
RETRIES=${RETRIES:-2}
QUIET_BUSY_PCT=${QUIET_BUSY_PCT:-10}
QUIET_MAX_WAIT=${QUIET_MAX_WAIT:-120}
WORKLOAD_MATCH=${WORKLOAD_MATCH:-}
GUARD_PROFILE_DURATION=${GUARD_PROFILE_DURATION:-5}
# The release binary cargo builds (CARGO_TARGET_DIR, when set, relative to the repository).
TARGET_DIR=${CARGO_TARGET_DIR:-target}
[[ $TARGET_DIR == /* ]] || TARGET_DIR=$REPO/$TARGET_DIR
TANDEM_BIN=$TARGET_DIR/release/tandem

# Databases. The main mode uses only A.
DB_A=postgres
DB_B=bench_dual
DB_C=bench_triggers
DB_D=bench_noguard
DB_E=bench_noop
# Mirrored tables: "legacy|key|other columns|balance column" (pgbench's schema).
MIRRORS=(
    "pgbench_accounts|aid|bid abalance filler|abalance"
    "pgbench_tellers|tid|bid tbalance filler|tbalance"
    "pgbench_branches|bid|bbalance filler|bbalance"
)
ACCOUNTS_V2_PARTITIONS=8

if [[ $MODE == main ]]; then
    TARGETS=${TARGETS:-"direct tandem tandem_1w pgbouncer"}
    PROFILE_DURATION=${PROFILE_DURATION:-5}
    SHARED_BUFFERS=${SHARED_BUFFERS:-256MB}
    # Paired ratios the report shows per round, besides each target / direct.
    RATIOS="tandem/pgbouncer tandem_1w/pgbouncer tandem_1w/tandem"
    # name | pgbench arguments | clients | threads
    WORKLOADS=(
        "select-only simple|-S -M simple|$CLIENTS|$THREADS"
        "select-only prepared|-S -M prepared|$CLIENTS|$THREADS"
        "tpc-b simple|-M simple|$CLIENTS|$THREADS"
        "tpc-b prepared|-M prepared|$CLIENTS|$THREADS"
        "select-only prepared, 1 client|-S -M prepared|1|1"
        "select-only prepared, 64 clients|-S -M prepared|64|$THREADS"
    )
    WARMUP_ARGS="-S -M prepared"
    OUT=latest
elif [[ $MODE == union-read ]]; then
    TARGETS=${TARGETS:-"direct plain union union_watermark union_running"}
    PROFILE_DURATION=${PROFILE_DURATION:-0}
    SHARED_BUFFERS=${SHARED_BUFFERS:-1GB}
    RATIOS="union/plain union_watermark/plain union_running/plain union/direct plain/direct"
    # latest 10: the ten newest accounts at or below a random one (an ORDER BY ... LIMIT
    # range read; @WORK@ is the run's work directory, where the script is written).
    WORKLOADS=(
        "pk lookup simple|-S -M simple|$CLIENTS|$THREADS"
        "pk lookup prepared|-S -M prepared|$CLIENTS|$THREADS"
        "pk lookup prepared, 1 client|-S -M prepared|1|1"
        "latest 10 prepared|-f @WORK@/latest10.sql -M prepared|$CLIENTS|$THREADS"
    )
    WARMUP_ARGS="-S -M prepared"
    OUT=union-read
elif [[ $MODE == shadow ]]; then
    TARGETS=${TARGETS:-"shadow_off shadow_count shadow_on"}
    PROFILE_DURATION=${PROFILE_DURATION:-0}
    SHARED_BUFFERS=${SHARED_BUFFERS:-1GB}
    RATIOS="shadow_count/shadow_off shadow_on/shadow_off"
    WORKLOADS=(
        "pk lookup simple|-S -M simple|$CLIENTS|$THREADS"
        "pk lookup prepared|-S -M prepared|$CLIENTS|$THREADS"
    )
    WARMUP_ARGS="-S -M prepared"
    OUT=shadow
elif [[ $MODE == guard ]]; then
    # dual and dual_noguard next to each other: the rotation keeps them adjacent in most rounds.
    TARGETS=${TARGETS:-"direct dual dual_noguard guard_direct triggers"}
    PROFILE_DURATION=${PROFILE_DURATION:-0}
    SHARED_BUFFERS=${SHARED_BUFFERS:-1GB}
    RATIOS="dual/dual_noguard>=0.97 dual_noop/dual_noguard dual/dual_noop guard_direct/triggers guard_direct/direct triggers/direct"
    WORKLOADS=(
        "tpc-b simple|-M simple|$CLIENTS|$THREADS"
        "tpc-b prepared|-M prepared|$CLIENTS|$THREADS"
        "tpc-b simple, 1 client|-M simple|1|1"
        "tpc-b prepared, 1 client|-M prepared|1|1"
    )
    WARMUP_ARGS="-M prepared"
    OUT=guard
else
    TARGETS=${TARGETS:-"direct plain dual triggers"}
    PROFILE_DURATION=${PROFILE_DURATION:-0}
    SHARED_BUFFERS=${SHARED_BUFFERS:-1GB}
    # ">=x" marks the issue's targets; the report says whether the median meets them.
    RATIOS="dual/plain>=0.90 dual/triggers>=1.0 triggers/direct plain/direct"
    WORKLOADS=(
        "tpc-b simple|-M simple|$CLIENTS|$THREADS"
        "tpc-b prepared|-M prepared|$CLIENTS|$THREADS"
    )
    # TPC-B, so the warm-up also goes through the mirrors (and Tandem's plan cache).
    WARMUP_ARGS="-M prepared"
    OUT=dual-write
fi
if [[ -n $WORKLOAD_MATCH ]]; then
    kept=()
    for spec in "${WORKLOADS[@]}"; do
        [[ ${spec%%|*} =~ $WORKLOAD_MATCH ]] && kept+=("$spec")
    done
    ((${#kept[@]} > 0)) || { echo "WORKLOAD_MATCH=$WORKLOAD_MATCH keeps no workload" >&2; exit 2; }
    WORKLOADS=("${kept[@]}")
    unset kept spec
fi
# Databases whose legacy tables have _v2 copies (and so are verified after the runs).
case $MODE in
    dual-write) MIRROR_DBS="$DB_B $DB_C" ;;
    guard) MIRROR_DBS="$DB_B $DB_C $DB_D" ;;
    *) MIRROR_DBS="" ;;
esac

COMMAND="SCALE=$SCALE CLIENTS=$CLIENTS THREADS=$THREADS DURATION=$DURATION ROUNDS=$ROUNDS PROFILE_DURATION=$PROFILE_DURATION DURABLE=$DURABLE SHARED_BUFFERS=$SHARED_BUFFERS TARGETS=\"$TARGETS\" MAX_FOREIGN_PCT=$MAX_FOREIGN_PCT RETRIES=$RETRIES QUIET_MAX_WAIT=$QUIET_MAX_WAIT${WORKLOAD_MATCH:+ WORKLOAD_MATCH=\"$WORKLOAD_MATCH\"}$([[ $MODE == guard ]] && echo " GUARD_PROFILE_DURATION=$GUARD_PROFILE_DURATION") bash bench/run.sh$([[ $MODE == main ]] || echo " $MODE")"

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------

apt_install() {
    # Install quietly; refresh the package lists only when the first attempt fails.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 || {
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
    }
}

find_tools() {
    PGBIN=""
    if command -v initdb >/dev/null && command -v pg_ctl >/dev/null && command -v postgres >/dev/null; then
        PGBIN=$(dirname "$(readlink -f "$(command -v initdb)")")
    elif [[ -x /usr/lib/postgresql/15/bin/initdb ]]; then
        PGBIN=/usr/lib/postgresql/15/bin
    else
        log "installing postgresql-15"
        apt_install postgresql-15
        PGBIN=/usr/lib/postgresql/15/bin
    fi
    PGBENCH=$PGBIN/pgbench
    [[ -x $PGBENCH ]] || PGBENCH=$(command -v pgbench) || die "pgbench not found"
    PSQL=$PGBIN/psql
    [[ -x $PSQL ]] || PSQL=$(command -v psql) || die "psql not found"

    if ! PGBOUNCER=$(command -v pgbouncer || ls /usr/sbin/pgbouncer 2>/dev/null); then
        log "installing pgbouncer"
        apt_install pgbouncer
        PGBOUNCER=/usr/sbin/pgbouncer
    fi
    if ((PROFILE_DURATION > 0)) && ! command -v strace >/dev/null; then
        log "installing strace"
        apt_install strace || log "strace could not be installed; the syscall profile is skipped"
    fi
    id postgres >/dev/null 2>&1 || die "no postgres user (it comes with the postgresql packages)"
}

as_postgres() { runuser -u postgres -- "$@"; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() { # port, what; fails after 10 s
    local i
    for i in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    log "$2 did not listen on port $1"
    return 1
}

# ---------------------------------------------------------------------------------------
# Lifecycle
# ---------------------------------------------------------------------------------------

WORK=""
PGDATA=""
PIDS_TO_STOP=()

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local pid
    for pid in "${PIDS_TO_STOP[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS_TO_STOP[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n $PGDATA && -f $PGDATA/postmaster.pid ]]; then
        as_postgres "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    [[ -n $WORK ]] && rm -rf "$WORK"
    exit "$rc"
}

start_postgres() {
    WORK=$(mktemp -d /tmp/tandem-bench.XXXXXX)
    chown postgres: "$WORK"
    PGDATA=$WORK/data
    PG_PORT=$(free_port)
    log "initdb in $WORK, postgres on port $PG_PORT"
    as_postgres "$PGBIN/initdb" -D "$PGDATA" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >/dev/null
    PG_SETTINGS="listen_addresses=127.0.0.1 max_connections=200 shared_buffers=$SHARED_BUFFERS"
    # Not durable by default: with fsync on, TPC-B measures this machine's disk flushes,
    # which drown the proxy's share. DURABLE=1 keeps Postgres's defaults.
    ((DURABLE)) || PG_SETTINGS+=" fsync=off synchronous_commit=off"
    local kv
    PG_OPTS="-p $PG_PORT -k $WORK"
    for kv in $PG_SETTINGS; do PG_OPTS+=" -c $kv"; done
    as_postgres "$PGBIN/pg_ctl" -D "$PGDATA" -l "$WORK/postgres.log" -w -t 60 start -o "$PG_OPTS" \
        >/dev/null
}

# psql on the benchmark's cluster: psql_db DB ARGS...
psql_db() { "$PSQL" -h 127.0.0.1 -p "$PG_PORT" -U postgres -X -qAt -v ON_ERROR_STOP=1 -d "$@"; }

# PORT_<target> and DB_<target> are read through indirection (${!var}).
# shellcheck disable=SC2034
start_direct() { PORT_direct=$PG_PORT; }

# start_tandem_as NAME TANDEM-SERVE-ARGS...: a Tandem process measured as target NAME.
start_tandem_as() {
    local name=$1 port pid
    shift
    port=$(free_port)
    RUST_LOG=warn "$TANDEM_BIN" serve --listen "127.0.0.1:$port" "$@" \
        >"$WORK/$name.log" 2>&1 &
    pid=$!
    PIDS_TO_STOP+=("$pid")
    printf -v "PORT_$name" %s "$port"
    printf -v "PID_$name" %s "$pid"
    wait_port "$port" "$name" || { cat "$WORK/$name.log" >&2; die "$name did not start"; }
}

# Tandem with no rules (passthrough), default workers: a pool of single-threaded runtimes,
# one per CPU.
start_tandem() { start_tandem_as tandem --upstream "postgres://postgres@127.0.0.1:$PG_PORT/$DB_A"; }

# The same binary with one event loop for everything (--workers 1).
start_tandem_1w() {
    start_tandem_as tandem_1w --workers 1 --upstream "postgres://postgres@127.0.0.1:$PG_PORT/$DB_A"
}

# Dual-write mode: Tandem passthrough on A (the reference for "dual").
start_plain() { start_tandem_as plain --upstream "postgres://postgres@127.0.0.1:$PG_PORT/$DB_A"; }

# start_dual_as NAME DATABASE [GUARD]: Tandem with a dual_write rule per mirrored table, to
# DATABASE; GUARD, when given, is written as each rule's `guard` (else the default, mirror).
start_dual_as() {
    local name=$1 db=$2 guard=${3:-} conf=$WORK/$1.toml spec table
    {
        echo "listen = \"127.0.0.1:0\""
        echo "upstream = \"postgres://postgres@127.0.0.1:$PG_PORT/$db\""
        for spec in "${MIRRORS[@]}"; do
            table=${spec%%|*}
            printf '\n[[rule]]\ntable = "public.%s"\ntarget = "public.%s_v2"\nmode = "dual_write"\n' \
                "$table" "$table"
            [[ -z $guard ]] || printf 'guard = "%s"\n' "$guard"
        done
    } >"$conf"
    printf -v "DB_$name" %s "$db"
    start_tandem_as "$name" --config "$conf"
}

# Dual-write and guard modes: Tandem with a dual_write rule per mirrored table, on B, with
# the default guard (mirror).
# Started once, even when start_guard_direct needed it first.
start_dual() { [[ -n ${PORT_dual:-} ]] || start_dual_as dual "$DB_B"; }

# Guard mode: the same rules with guard = "off", on D (a copy of B).
start_dual_noguard() { start_dual_as dual_noguard "$DB_D" off; }

# Guard mode: the same rules with guard = "off" on E, where no-op statement triggers with the
# guard's transition tables stand in for the guard (see noop_trigger_sql).
start_dual_noop() { start_dual_as dual_noop "$DB_E" off; }

# Guard mode: Postgres itself on B, where the dual proxy's start installed the guard, so every
# statement of pgbench is mirrored by the guard's triggers. Starts the dual proxy first when
# it is not a target started before this one, and waits until the guard is in place.
# shellcheck disable=SC2034 # PORT_guard_direct, DB_guard_direct: read through ${!var}
start_guard_direct() {
    [[ -n ${PORT_dual:-} ]] || start_dual
    PORT_guard_direct=$PG_PORT
    DB_guard_direct=$DB_B
    wait_guard "$DB_B" || die "the guard is not in place in $DB_B (see $WORK/dual.log)"
}

# Union-read mode: Tandem with a union_read rule on pgbench_accounts, on B (backfilled _v2).
# shellcheck disable=SC2034 # DB_union: read through ${!var}
# start_union_as NAME STORE: a union_read rule kept in its own rule store (so each target's
# rule has its own backfilled flag); read-only runs, so no guard.
start_union_as() {
    local name=$1 store=$2 conf=$WORK/$1.toml
    cat >"$conf" <<EOF
listen = "127.0.0.1:0"
upstream = "postgres://postgres@127.0.0.1:$PG_PORT/$DB_B"

[store]
schema = "$store"

[[rule]]
table = "public.pgbench_accounts"
target = "public.pgbench_accounts_v2"
mode = "union_read"
guard = "off"
EOF
    printf -v "DB_$name" %s "$DB_B"
    start_tandem_as "$name" --config "$conf"
}

# union: the rule's backfill finished (tandem backfill ran over the copied _v2, copying
# nothing and recording it), so reads go to the target alone. union_running: no backfill
# recorded, so each read is the target plus the legacy rows it lacks (what a read costs while
# the backfill runs).
start_union() {
    start_union_as union tandem_union
    "$TANDEM_BIN" backfill --config "$WORK/union.toml" --table public.pgbench_accounts \
        >"$WORK/union-backfill.log" 2>&1 || { cat "$WORK/union-backfill.log" >&2; die "backfill for union failed"; }
}
start_union_running() { start_union_as union_running tandem_union_running; }
# union_watermark: a backfill running, 90% done: the watermark a running tandem backfill
# publishes (rules.backfilled_to) set at 90% of the keys, so each read is split there (keys at
# or below it from the target, the rest from legacy).
start_union_watermark() {
    start_union_as union_watermark tandem_union_watermark
    local mark
    mark=$(psql_db "$DB_B" -c "SELECT (max(aid) * 9 / 10)::text FROM pgbench_accounts")
    psql_db "$DB_B" -c "UPDATE tandem_union_watermark.rules SET backfilled_to = ARRAY['$mark']" >/dev/null
    sleep 2 # the instance reloads its rules on the store's NOTIFY
}

# Shadow mode: start_shadow_as NAME RATE: a dual_write rule on pgbench_accounts (target the
# backfilled _v2) sampling RATE of its reads, in its own rule store; coverage is on by
# default ([shadow] top_k 50, min_comparisons 5), so every shape is also compared 5 times.
start_shadow_as() {
    local name=$1 rate=$2 conf=$WORK/$1.toml
    cat >"$conf" <<EOF
listen = "127.0.0.1:0"
upstream = "postgres://postgres@127.0.0.1:$PG_PORT/$DB_B"

[store]
schema = "tandem_$name"

[[rule]]
table = "public.pgbench_accounts"
target = "public.pgbench_accounts_v2"
mode = "dual_write"
guard = "off"
sample_rate = $rate
EOF
    printf -v "DB_$name" %s "$DB_B"
    start_tandem_as "$name" --config "$conf"
}
start_shadow_off() { start_shadow_as shadow_off 0; }
start_shadow_count() { start_shadow_as shadow_count 0.000001; }
start_shadow_on() { start_shadow_as shadow_on 0.01; }

# Dual-write and guard modes: Postgres itself on C, where triggers mirror the same tables.
# shellcheck disable=SC2034 # PORT_triggers, DB_triggers: read through ${!var}
start_triggers() {
    PORT_triggers=$PG_PORT
    DB_triggers=$DB_C
}

start_pgbouncer() {
    PORT_pgbouncer=$(free_port)
    local dir=$WORK/pgbouncer
    mkdir -p "$dir"
    echo '"postgres" ""' >"$dir/userlist.txt"
    cat >"$dir/pgbouncer.ini" <<EOF
[databases]
$DB_A = host=127.0.0.1 port=$PG_PORT dbname=$DB_A

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PORT_pgbouncer
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = session
max_client_conn = 500
default_pool_size = 100
max_db_connections = 0
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
log_connections = 0
log_disconnections = 0
log_stats = 0
EOF
    chown -R postgres: "$dir"
    # PgBouncer refuses to run as root; -d daemonizes and writes the pidfile.
    as_postgres "$PGBOUNCER" -d -q "$dir/pgbouncer.ini"
    wait_port "$PORT_pgbouncer" pgbouncer || die "pgbouncer did not start"
    PID_pgbouncer=$(cat "$dir/pgbouncer.pid")
    PIDS_TO_STOP+=("$PID_pgbouncer")
}

# ---------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------

# utime+stime of a whole process (all threads), in clock ticks.
proc_ticks() { [[ -n ${1:-} ]] && awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" || echo 0; }

# Context switches of all threads of a process.
proc_ctxsw() {
    [[ -n ${1:-} ]] || { echo 0; return; }
    cat /proc/"$1"/task/*/status 2>/dev/null |
        awk '/ctxt_switches/ { n += $2 } END { print n + 0 }'
}

# Machine-wide ticks: "busy total proc", where proc is user+nice+system (the part that is
# charged to processes; irq/softirq time is busy but charged to no one).
machine_ticks() {
    awk '/^cpu / { t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, t, $2 + $3 + $4 }' /proc/stat
}

# CPU charged to the benchmark's own cluster: the postmaster, its reaped children
# (cutime/cstime) and its live children (backends, including PgBouncer's pooled ones).
pg_tree_ticks() {
    local pm c
    pm=$(head -1 "$PGDATA/postmaster.pid")
    {
        for c in $(pgrep -P "$pm"); do
            awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$c/stat" 2>/dev/null || true
        done
        awk '{ sub(/^.*\) /, ""); print $12 + $13 + $14 + $15 }' "/proc/$pm/stat"
    } | awk '{ s += $1 } END { print s + 0 }'
}

# Ticks of every proxy process of every target.
proxies_ticks() {
    local t v s=0
    for t in "${TARGET_LIST[@]}"; do
        v=PID_$t
        [[ -n ${!v:-} ]] && s=$((s + $(proc_ticks "${!v}")))
    done
    echo "$s"
}

# Waits (up to QUIET_MAX_WAIT s) until the machine is idle: other people's builds and tests
# on a 2-core box swing results by tens of percent.
wait_quiet() {
    local waited=0 b0 t0 b1 t1
    while ((waited < QUIET_MAX_WAIT)); do
        read -r b0 t0 _ < <(machine_ticks)
        sleep 1
        read -r b1 t1 _ < <(machine_ticks)
        if ((100 * (b1 - b0) <= QUIET_BUSY_PCT * (t1 - t0))); then
            ((waited > 0)) && log "machine quiet after ${waited} s"
            return 0
        fi
        ((waited == 0)) && log "machine busy ($((100 * (b1 - b0) / (t1 - t0)))%), waiting for it to settle"
        waited=$((waited + 1))
    done
    log "machine still busy after ${QUIET_MAX_WAIT} s; measuring anyway"
}

# The database a target's sessions use.
target_db() { local v=DB_$1; echo "${!v:-$DB_A}"; }

reset_tables() { # database
    # What pgbench does before each run unless -n (VACUUM branches and tellers, TRUNCATE
    # history), done directly so it stays out of the measured window (and out of the proxy's
    # CPU count). In the mirrored databases (B, C) the _v2 copies of branches and tellers get
    # the same VACUUM, so both mirrors are treated alike. Nothing here changes the rows of a
    # mirrored table, so the _v2 tables need no re-sync between runs.
    local db=$1 args=(-c "VACUUM pgbench_branches" -c "VACUUM pgbench_tellers")
    if [[ $db == "$DB_B" || $db == "$DB_C" || " $MIRROR_DBS " == *" $db "* ]]; then
        args+=(-c "VACUUM pgbench_branches_v2" -c "VACUUM pgbench_tellers_v2")
    fi
    psql_db "$db" "${args[@]}" -c "TRUNCATE pgbench_history" >/dev/null
}

# One pgbench run: appends a row to $WORK/triple.tsv.
run_one() { # round, workload-spec, target
    local round=$1 spec=$2 target=$3
    local name args clients threads
    IFS='|' read -r name args clients threads <<<"$spec"
    args=${args//@WORK@/$WORK}
    local port_var=PORT_$target pid_var=PID_$target
    local port=${!port_var} pid=${!pid_var:-} db
    local out=$WORK/raw/r${round}-${name//[^a-z0-9]/_}-$target.txt
    db=$(target_db "$target")

    reset_tables "$db"
    sleep 0.3 # let the psql backend exit, so the CPU snapshots below do not race with it
    local t0 c0 m0 mt0 mp0 g0 x0 t1 c1 m1 mt1 mp1 g1 x1
    t0=$(proc_ticks "$pid")
    c0=$(proc_ctxsw "$pid")
    g0=$(pg_tree_ticks)
    x0=$(proxies_ticks)
    read -r m0 mt0 mp0 < <(machine_ticks)
    local TIMEFORMAT='%3U %3S'
    # shellcheck disable=SC2086 # args is a word list on purpose
    { time "$PGBENCH" -h 127.0.0.1 -p "$port" -U postgres -n -T "$DURATION" -c "$clients" -j "$threads" \
        $args "$db" >"$out" 2>&1; } 2>"$out.cpu" || { cat "$out" >&2; die "pgbench failed: $name via $target"; }
    sleep 0.3 # let the backends of a closing session exit and be reaped
    t1=$(proc_ticks "$pid")
    c1=$(proc_ctxsw "$pid")
    g1=$(pg_tree_ticks)
    x1=$(proxies_ticks)
    read -r m1 mt1 mp1 < <(machine_ticks)
    local clk bench_ticks ours foreign
    clk=$(getconf CLK_TCK)
    bench_ticks=$(awk -v k="$clk" '{ printf "%d", ($1 + $2) * k + 0.5 }' "$out.cpu")
    ours=$(((g1 - g0) + (x1 - x0) + bench_ticks))
    foreign=$(((mp1 - mp0) - ours))
    ((foreign < 0)) && foreign=0

    local tps lat txns failed
    tps=$(awk '/^tps = / { print $3; exit }' "$out")
    lat=$(awk '/^latency average = / { print $4; exit }' "$out")
    txns=$(awk '/^number of transactions actually processed:/ { print $6; exit }' "$out")
    failed=$(awk '/^number of failed transactions:/ { print $5; exit }' "$out")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$name" "$target" \
        "$tps" "$lat" "$txns" "${failed:-0}" "$clients" $((t1 - t0)) $((c1 - c0)) \
        $((m1 - m0)) $((mt1 - mt0)) "$foreign" >>"$WORK/triple.tsv"
    log "round $round  $(printf '%-32s %-10s' "$name" "$target") tps $tps  latency ${lat} ms  foreign CPU $((100 * foreign / (mt1 - mt0)))%"
    if [[ $MODE == guard && " $MIRROR_DBS " == *" $db "* ]]; then
        check_run_mirror "$db" "$round" "$name" "$target"
    fi
}

# All targets of one workload back to back. If processes outside the benchmark took more than
# MAX_FOREIGN_PCT of the machine during any run of it, the whole set is run again (up to
# RETRIES times), so that pairs stay pairs; the rejected rows are kept in rejected.tsv.
run_set() { # round, workload-spec
    local round=$1 spec=$2 attempt i n=${#TARGET_LIST[@]}
    for ((attempt = 0; attempt <= RETRIES; attempt++)); do
        wait_quiet
        : >"$WORK/triple.tsv"
        for ((i = 0; i < n; i++)); do
            run_one "$round" "$spec" "${TARGET_LIST[$(((i + round - 1) % n))]}"
        done
        if awk -F'\t' -v m="$MAX_FOREIGN_PCT" '100 * $13 > m * $12 { bad = 1 } END { exit !bad }' \
            "$WORK/triple.tsv" && ((attempt < RETRIES)); then
            log "foreign CPU above ${MAX_FOREIGN_PCT}% of the machine during this set; running it again"
            cat "$WORK/triple.tsv" >>"$WORK/rejected.tsv"
            continue
        fi
        cat "$WORK/triple.tsv" >>"$WORK/results.tsv"
        return 0
    done
}

# strace -c on a proxy during a short select-only prepared run: syscalls per transaction.
profile_syscalls() { # target
    local target=$1 pid_var=PID_$1 port_var=PORT_$1
    local pid=${!pid_var:-} port=${!port_var}
    [[ -n $pid ]] || return 0
    wait_quiet
    local st=$WORK/strace-$target.txt out=$WORK/raw/strace-$target-pgbench.txt db
    db=$(target_db "$target")
    reset_tables "$db"
    strace -c -f -U name,calls,errors -o "$st" -p "$pid" 2>"$WORK/strace-$target.err" &
    local spid=$!
    sleep 1
    if ! kill -0 "$spid" 2>/dev/null; then
        log "strace could not attach to $target: $(head -1 "$WORK/strace-$target.err")"
        echo "$target	ATTACH_FAILED	$(head -1 "$WORK/strace-$target.err" | tr '\t' ' ')" >>"$WORK/strace.tsv"
        return 0
    fi
    "$PGBENCH" -h 127.0.0.1 -p "$port" -U postgres -n -S -M prepared -T "$PROFILE_DURATION" \
        -c "$CLIENTS" -j "$THREADS" "$db" >"$out" 2>&1 || die "pgbench failed under strace ($target)"
    kill -INT "$spid"
    wait "$spid" || true
    local txns
    txns=$(awk '/^number of transactions actually processed:/ { print $6; exit }' "$out")
    # Connection setup and teardown (8 sessions) are inside the window; at tens of
    # thousands of transactions they do not move the per-transaction figures.
    awk -v t="$target" -v n="$txns" 'NR > 2 && $1 !~ /^-/ { print t "\t" $1 "\t" $2 "\t" ($3 == "" ? 0 : $3) "\t" n }' \
        "$st" >>"$WORK/strace.tsv"
    log "strace $target: $txns transactions under strace"
}

# perf record on a proxy during a select-only prepared run; the report goes to results/.
profile_perf() { # target
    local target=$1 pid_var=PID_$1 port_var=PORT_$1
    local pid=${!pid_var:-} port=${!port_var}
    [[ -n $pid ]] || return 0
    wait_quiet
    local db
    db=$(target_db "$target")
    reset_tables "$db"
    perf record -q -F 1999 -g -p "$pid" -o "$WORK/perf-$target.data" -- sleep "$PROFILE_DURATION" \
        >/dev/null 2>&1 &
    local ppid=$!
    "$PGBENCH" -h 127.0.0.1 -p "$port" -U postgres -n -S -M prepared -T "$PROFILE_DURATION" \
        -c "$CLIENTS" -j "$THREADS" "$db" >/dev/null 2>&1 || die "pgbench failed under perf ($target)"
    wait "$ppid" || { log "perf record failed for $target"; return 0; }
    mkdir -p "$BENCH_DIR/results"
    {
        perf report -i "$WORK/perf-$target.data" --stdio --no-children --sort dso -g none 2>/dev/null
        perf report -i "$WORK/perf-$target.data" --stdio --no-children --sort dso,symbol \
            --percent-limit 0.5 -g none 2>/dev/null
        # Who calls the hottest kernel symbol (on a VM, usually the wake-up of another thread).
        perf report -i "$WORK/perf-$target.data" --stdio --no-children --sort symbol \
            --symbols _raw_spin_unlock_irqrestore -g caller,0.5,callee,function,percent \
            --percent-limit 2 2>/dev/null | head -80
    } | grep -v '^#' | sed 's/ *$//' | grep -v '^$' >"$BENCH_DIR/results/perf-$target.txt" || true
    log "perf profile of $target in bench/results/perf-$target.txt"
}

# ---------------------------------------------------------------------------------------
# Databases
# ---------------------------------------------------------------------------------------

# Guard mode: how many of the mirrored legacy tables of DATABASE have the guard in place: a
# tandem.guards row that guards that table with policy mirror, and its four statement
# triggers enabled.
guard_in_place() { # database
    local db=$1 spec tables=""
    for spec in "${MIRRORS[@]}"; do tables+="${tables:+, }'public.${spec%%|*}'"; done
    if [[ $(psql_db "$db" -c "SELECT to_regclass('tandem.guards') IS NOT NULL") != t ]]; then
        echo 0
        return
    fi
    psql_db "$db" -c "SELECT count(*) FROM unnest(ARRAY[$tables]::regclass[]) AS l(rel)
        WHERE EXISTS (SELECT 1 FROM tandem.guards g WHERE g.guarded = l.rel AND g.policy = 'mirror')
          AND (SELECT count(*) FROM pg_trigger t WHERE t.tgrelid = l.rel AND t.tgenabled <> 'D'
                 AND t.tgname IN ('tandem_guard_insert', 'tandem_guard_update',
                                  'tandem_guard_delete', 'tandem_guard_truncate')) = 4"
}

# The guard's triggers in DATABASE, on any table.
guard_triggers() { psql_db "$1" -c "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'tandem\_guard\_%'"; }

# Waits (up to 30 s: the proxy listens before it has synced the guard) for the guard to be in
# place on every mirrored table of DATABASE.
wait_guard() { # database
    local i
    for i in $(seq 1 300); do
        (($(guard_in_place "$1") == ${#MIRRORS[@]})) && return 0
        sleep 0.1
    done
    return 1
}

# Guard mode, after the warm-up (so every proxy has finished starting): B has the guard in
# place on every mirrored table, and D, C and E none of the guard's triggers; otherwise the
# comparison would not be what it says.
check_guards() {
    local n
    n=$(guard_in_place "$DB_B")
    ((n == ${#MIRRORS[@]})) || die "guard in place on $n of ${#MIRRORS[@]} tables in $DB_B"
    log "$DB_B: guard (mirror) in place on $n tables, $(guard_triggers "$DB_B") guard triggers in all (legacy and _v2 trees)"
    local db
    for db in "$DB_C" "$DB_D" $([[ " $TARGETS " == *" dual_noop "* ]] && echo "$DB_E"); do
        n=$(guard_triggers "$db")
        ((n == 0)) || die "$db has $n guard triggers; it must have none"
    done
    if [[ " $TARGETS " == *" dual_noguard "* ]]; then
        n=$(psql_db "$DB_D" -c "SELECT count(*) FROM tandem.rules WHERE guard = 'off'")
        ((n == ${#MIRRORS[@]})) || die "$DB_D: $n rules with guard = off, expected ${#MIRRORS[@]}"
    fi
    log "no guard triggers in $DB_C, $DB_D$([[ " $TARGETS " == *" dual_noop "* ]] && echo ", $DB_E")"
}

# Guard mode, after each run in a mirrored database: for the keys of the rows this run wrote
# to pgbench_history (truncated before every run), each legacy table must hold exactly the
# rows of its _v2 (EXCEPT both ways). Stops the benchmark at the first difference: a guard
# (or proxy, or trigger) that did not mirror must not produce numbers.
check_run_mirror() { # database, round, workload, target
    local db=$1 round=$2 name=$3 target=$4 spec table key cols bal keys l_t t_l bad=""
    for spec in "${MIRRORS[@]}"; do
        IFS='|' read -r table key cols bal <<<"$spec"
        IFS=$'\t' read -r keys l_t t_l < <(psql_db "$db" -F $'\t' -c "
            CREATE TEMP TABLE k AS SELECT DISTINCT $key FROM pgbench_history;
            SELECT (SELECT count(*) FROM k),
                (SELECT count(*) FROM (SELECT * FROM $table WHERE $key IN (TABLE k)
                    EXCEPT SELECT * FROM ${table}_v2 WHERE $key IN (TABLE k)) d),
                (SELECT count(*) FROM (SELECT * FROM ${table}_v2 WHERE $key IN (TABLE k)
                    EXCEPT SELECT * FROM $table WHERE $key IN (TABLE k)) d)")
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$name" "$target" "$db" "$table" \
            "$keys" "$l_t" "$t_l" >>"$WORK/runcheck.tsv"
        ((keys > 0 && l_t == 0 && t_l == 0)) ||
            bad+=" $table: $keys keys written, legacy EXCEPT _v2 $l_t, _v2 EXCEPT legacy $t_l;"
    done
    [[ -z $bad ]] || die "MIRROR CHECK FAILED after round $round, $name via $target ($db):$bad"
}

# Guard mode, after the measured runs: where the time of a TPC-B transaction goes in Postgres,
# per target. Postgres is restarted with pg_stat_statements (track = all, so the guard's and
# the triggers' own statements are counted too) and track_functions = pl, everything is
# prewarmed again, and each target runs GUARD_PROFILE_DURATION s of TPC-B -M prepared with the
# counters reset before. Rows in profile.tsv: target, transactions, kind (statement or
# function), calls, total ms, self ms (functions), top level (statements), text.
profile_guard() {
    log "profile: restarting Postgres with pg_stat_statements and track_functions"
    as_postgres "$PGBIN/pg_ctl" -D "$PGDATA" -l "$WORK/postgres.log" -w -t 60 restart -m fast \
        -o "$PG_OPTS -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all -c pg_stat_statements.max=1000 -c track_functions=pl" \
        >/dev/null || { log "profile: Postgres did not restart with pg_stat_statements; skipped"; return 0; }
    prewarm_all
    psql_db "$DB_A" -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null
    local target port_var db out txns
    for target in "${TARGET_LIST[@]}"; do
        port_var=PORT_$target
        db=$(target_db "$target")
        out=$WORK/raw/profile-$target.txt
        reset_tables "$db"
        psql_db "$db" -c "SELECT pg_stat_reset()" >/dev/null
        psql_db "$DB_A" -c "SELECT pg_stat_statements_reset()" >/dev/null
        if ! "$PGBENCH" -h 127.0.0.1 -p "${!port_var}" -U postgres -n -M prepared -T "$GUARD_PROFILE_DURATION" \
            -c "$CLIENTS" -j "$THREADS" "$db" >"$out" 2>&1; then
            log "profile: pgbench via $target failed after the restart; skipped ($(tail -1 "$out"))"
            continue
        fi
        sleep 2 # the sessions' function counters are sent when their backends exit or go idle
        txns=$(awk '/^number of transactions actually processed:/ { print $6; exit }' "$out")
        psql_db "$DB_A" -F $'\t' -c "SELECT '$target', $txns, 'statement', s.calls,
                round(s.total_exec_time::numeric, 3), '', s.toplevel,
                left(regexp_replace(s.query, '\s+', ' ', 'g'), 160)
              FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
             WHERE d.datname = '$db' AND s.query NOT LIKE '%pg_stat%'
             ORDER BY s.total_exec_time DESC LIMIT 12" >>"$WORK/profile.tsv"
        psql_db "$db" -F $'\t' -c "SELECT '$target', $txns, 'function', f.calls,
                round(f.total_time::numeric, 3), round(f.self_time::numeric, 3), '',
                CASE WHEN f.schemaname = 'tandem' AND f.funcname LIKE 'guard %'
                     THEN 'tandem guard function of ' || substr(f.funcname, 7)::oid::regclass::text
                     ELSE f.schemaname || '.' || f.funcname END
              FROM pg_stat_user_functions f ORDER BY f.total_time DESC LIMIT 12" >>"$WORK/profile.tsv"
        log "profile $target: $txns transactions"
    done
}

# The _v2 tables of B and C: accounts hash-partitioned by its key, the others plain copies of
# the legacy definition (columns, defaults, primary key), then backfilled.
v2_sql() {
    local spec table key cols bal i
    for spec in "${MIRRORS[@]}"; do
        IFS='|' read -r table key cols bal <<<"$spec"
        if [[ $table == pgbench_accounts ]]; then
            echo "CREATE TABLE ${table}_v2 (LIKE $table INCLUDING ALL) PARTITION BY HASH ($key);"
            for ((i = 0; i < ACCOUNTS_V2_PARTITIONS; i++)); do
                echo "CREATE TABLE ${table}_v2_p$i PARTITION OF ${table}_v2"
                echo "    FOR VALUES WITH (MODULUS $ACCOUNTS_V2_PARTITIONS, REMAINDER $i);"
            done
        else
            echo "CREATE TABLE ${table}_v2 (LIKE $table INCLUDING ALL);"
        fi
        echo "INSERT INTO ${table}_v2 SELECT * FROM $table;"
    done
}

# C's baseline: what a database-side dual-write looks like. One PL/pgSQL AFTER ROW trigger per
# legacy table; inserts and updates upsert the new row into _v2 on its key (every other column
# overwritten, as Tandem's mirror does), deletes delete by the old key, and an update that
# changes the key first deletes the old one (Tandem refuses such updates; pgbench sends none).
trigger_sql() {
    local spec table key cols bal c sets
    for spec in "${MIRRORS[@]}"; do
        IFS='|' read -r table key cols bal <<<"$spec"
        sets=""
        for c in $cols; do sets+="${sets:+, }$c = EXCLUDED.$c"; done
        cat <<SQL
CREATE FUNCTION ${table}_mirror() RETURNS trigger LANGUAGE plpgsql AS \$\$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM ${table}_v2 WHERE $key = OLD.$key;
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.$key <> NEW.$key THEN
        DELETE FROM ${table}_v2 WHERE $key = OLD.$key;
    END IF;
    INSERT INTO ${table}_v2 VALUES (NEW.*) ON CONFLICT ($key) DO UPDATE SET $sets;
    RETURN NULL;
END
\$\$;
CREATE TRIGGER ${table}_mirror AFTER INSERT OR UPDATE OR DELETE ON $table
    FOR EACH ROW EXECUTE FUNCTION ${table}_mirror();
SQL
    done
}

# E's stand-in for the guard (target dual_noop): the guard's statement triggers, with the same
# events and transition tables, on the same tables (each legacy table, its _v2 and every table
# under them), calling one no-op PL/pgSQL function declared like the guard's (SECURITY
# DEFINER, its own search_path). dual_noop vs dual_noguard is what firing the guard costs;
# dual vs dual_noop is what its check costs.
noop_trigger_sql() {
    local spec roots=""
    for spec in "${MIRRORS[@]}"; do roots+="${roots:+, }'public.${spec%%|*}', 'public.${spec%%|*}_v2'"; done
    cat <<SQL
CREATE FUNCTION bench_noop() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS \$\$ BEGIN RETURN NULL; END \$\$;
DO \$\$
DECLARE
    rel regclass;
    ev  text;
BEGIN
    FOR rel IN WITH RECURSIVE tree(rel) AS (
                   SELECT unnest(ARRAY[$roots]::regclass[])::oid
                   UNION
                   SELECT i.inhrelid FROM pg_inherits i JOIN tree ON i.inhparent = tree.rel)
               SELECT tree.rel::regclass FROM tree LOOP
        FOREACH ev IN ARRAY ARRAY['insert', 'update', 'delete', 'truncate'] LOOP
            EXECUTE format('CREATE TRIGGER %I AFTER %s ON %s %s FOR EACH STATEMENT EXECUTE FUNCTION bench_noop()',
                'bench_noop_' || ev, upper(ev), rel,
                CASE ev WHEN 'insert' THEN 'REFERENCING NEW TABLE AS tandem_new'
                        WHEN 'update' THEN 'REFERENCING NEW TABLE AS tandem_new OLD TABLE AS tandem_old'
                        WHEN 'delete' THEN 'REFERENCING OLD TABLE AS tandem_old'
                        ELSE '' END);
        END LOOP;
    END LOOP;
END
\$\$;
SQL
}

# pg_prewarm every table and index of the benchmark's databases into shared_buffers.
prewarm_all() {
    local db
    for db in $BENCH_DBS; do
        psql_db "$db" -c "CREATE EXTENSION IF NOT EXISTS pg_prewarm" \
            -c "SELECT sum(pg_prewarm(c.oid)) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i')" >/dev/null 2>&1 ||
            log "pg_prewarm failed in $db; its pages warm up during the runs"
    done
}

# pgbench -i on A. In dual-write mode B and C are copies of A (CREATE DATABASE ... TEMPLATE:
# the same pgbench data, page for page); B gets the backfilled _v2 tables, C is a copy of B
# plus the triggers. Then VACUUM ANALYZE and pg_prewarm everything into shared_buffers, so no
# target's first runs pay for cold pages.
setup_databases() {
    log "pgbench -i -s $SCALE ($DB_A)"
    "$PGBENCH" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" -U postgres "$DB_A" >"$WORK/raw/init.txt" 2>&1 ||
        { cat "$WORK/raw/init.txt" >&2; die "pgbench -i failed"; }
    local dbs=("$DB_A") db
    if [[ $MODE == guard ]]; then
        log "$DB_B: copy of $DB_A, with _v2 tables backfilled"
        psql_db template1 -c "CREATE DATABASE $DB_B TEMPLATE $DB_A" >/dev/null
        v2_sql >"$WORK/v2.sql"
        psql_db "$DB_B" -f "$WORK/v2.sql" >/dev/null
        log "$DB_D: copy of $DB_B (its proxy's rules have guard = off)"
        psql_db template1 -c "CREATE DATABASE $DB_D TEMPLATE $DB_B" >/dev/null
        dbs+=("$DB_B" "$DB_D")
        if [[ " $TARGETS " == *" dual_noop "* ]]; then
            log "$DB_E: copy of $DB_B, with no-op statement triggers in place of the guard"
            psql_db template1 -c "CREATE DATABASE $DB_E TEMPLATE $DB_B" >/dev/null
            noop_trigger_sql >"$WORK/noop.sql"
            psql_db "$DB_E" -f "$WORK/noop.sql" >/dev/null
            dbs+=("$DB_E")
            MIRROR_DBS+=" $DB_E"
        fi
        log "$DB_C: copy of $DB_B, with mirror triggers"
        psql_db template1 -c "CREATE DATABASE $DB_C TEMPLATE $DB_B" >/dev/null
        trigger_sql >"$WORK/triggers.sql"
        psql_db "$DB_C" -f "$WORK/triggers.sql" >/dev/null
        dbs+=("$DB_C")
    elif [[ $MODE == dual-write ]]; then
        log "$DB_B: copy of $DB_A, with _v2 tables backfilled"
        psql_db template1 -c "CREATE DATABASE $DB_B TEMPLATE $DB_A" >/dev/null
        v2_sql >"$WORK/v2.sql"
        psql_db "$DB_B" -f "$WORK/v2.sql" >/dev/null
        log "$DB_C: copy of $DB_B, with mirror triggers"
        psql_db template1 -c "CREATE DATABASE $DB_C TEMPLATE $DB_B" >/dev/null
        trigger_sql >"$WORK/triggers.sql"
        psql_db "$DB_C" -f "$WORK/triggers.sql" >/dev/null
        dbs+=("$DB_B" "$DB_C")
    elif [[ $MODE == union-read || $MODE == shadow ]]; then
        printf '%s\n' "\\set aid random(1, $((100000 * SCALE)))" \
            'SELECT aid, abalance FROM pgbench_accounts WHERE aid <= :aid ORDER BY aid DESC LIMIT 10;' \
            >"$WORK/latest10.sql"
        log "$DB_B: copy of $DB_A, with _v2 tables backfilled"
        psql_db template1 -c "CREATE DATABASE $DB_B TEMPLATE $DB_A" >/dev/null
        v2_sql >"$WORK/v2.sql"
        psql_db "$DB_B" -f "$WORK/v2.sql" >/dev/null
        dbs+=("$DB_B")
    fi
    for db in "${dbs[@]}"; do
        psql_db "$db" -c "VACUUM ANALYZE" >/dev/null
    done
    BENCH_DBS="${dbs[*]}"
    prewarm_all
    log "database sizes: $(psql_db template1 -c "SELECT string_agg(datname || ' ' ||
        pg_size_pretty(pg_database_size(datname)), ', ' ORDER BY datname) FROM pg_database
        WHERE datname IN ('$DB_A', '$DB_B', '$DB_C', '$DB_D', '$DB_E')"), shared_buffers $SHARED_BUFFERS"
}

# After the runs: in every database of MIRROR_DBS that a target uses (B and C; in guard mode
# also D, and E when dual_noop runs), every legacy table must hold exactly the rows of its _v2.
# One verify.tsv row per table: database, table, rows in legacy, rows in _v2, rows of
# (legacy EXCEPT _v2), rows of (_v2 EXCEPT legacy), rows with a non-zero balance in legacy and
# in _v2 (zero after pgbench -i: the rows the runs changed, so the check is not vacuous).
verify_mirrors() {
    local db spec table key cols bal bad=0 row
    for db in $MIRROR_DBS; do
        for spec in "${MIRRORS[@]}"; do
            IFS='|' read -r table key cols bal <<<"$spec"
            row=$(psql_db "$db" -F $'\t' -c "SELECT '$db', '$table',
                (SELECT count(*) FROM $table), (SELECT count(*) FROM ${table}_v2),
                (SELECT count(*) FROM (TABLE $table EXCEPT TABLE ${table}_v2) d),
                (SELECT count(*) FROM (TABLE ${table}_v2 EXCEPT TABLE $table) d),
                (SELECT count(*) FROM $table WHERE $bal <> 0),
                (SELECT count(*) FROM ${table}_v2 WHERE $bal <> 0)")
            echo "$row" >>"$WORK/verify.tsv"
            IFS=$'\t' read -r _ _ n_l n_t l_t t_l c_l c_t <<<"$row"
            log "verify $db $table: $n_l / $n_t rows, legacy EXCEPT _v2 $l_t, _v2 EXCEPT legacy $t_l, changed rows $c_l / $c_t"
            ((l_t == 0 && t_l == 0 && c_l > 0)) || bad=1
        done
    done
    ((bad == 0)) || { MIRROR_CHECK_FAILED=1; log "MIRROR CHECK FAILED: see the verification table in the report"; }
}

# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------

main() {
    [[ $(id -u) -eq 0 ]] || die "run as root (the cluster runs as the postgres user via runuser)"
    find_tools
    trap cleanup EXIT INT TERM

    # Which code is measured: the commit at build time (others may commit during a long run).
    local head_rev dirty="" built
    head_rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
    [[ -n $(git -C "$REPO" status --porcelain -- . ':!bench' ':!docs' 2>/dev/null) ]] &&
        dirty=" plus uncommitted changes outside bench/ and docs/"
    if ((SKIP_BUILD == 0)); then
        log "cargo build --release -p tandem (git $head_rev$dirty)"
        (cd "$REPO" && cargo build --release -p tandem -q)
        built="built from git $head_rev$dirty"
    fi
    [[ -x $TANDEM_BIN ]] || die "no release binary at $TANDEM_BIN"
    ((SKIP_BUILD == 0)) || built="existing binary from $(date -u -r "$TANDEM_BIN" '+%Y-%m-%d %H:%M UTC') (SKIP_BUILD=1; HEAD was git $head_rev$dirty)"

    start_postgres
    mkdir -p "$WORK/raw"
    : >"$WORK/results.tsv"
    : >"$WORK/strace.tsv"
    : >"$WORK/rejected.tsv"
    : >"$WORK/verify.tsv"
    : >"$WORK/runcheck.tsv"
    : >"$WORK/profile.tsv"
    MIRROR_CHECK_FAILED=0
    setup_databases

    local target
    read -r -a TARGET_LIST <<<"$TARGETS"
    for target in "${TARGET_LIST[@]}"; do
        declare -F "start_$target" >/dev/null || die "unknown target $target (no start_$target)"
        "start_$target"
    done
    # Only the mirrored databases some target writes to are checked after the runs.
    local used=" " db
    for target in "${TARGET_LIST[@]}"; do used+="$(target_db "$target") "; done
    local mirror_dbs=""
    for db in $MIRROR_DBS; do [[ $used == *" $db "* ]] && mirror_dbs+="${mirror_dbs:+ }$db"; done
    MIRROR_DBS=$mirror_dbs

    # Warm-up: one short run per target, not recorded, so every target's first measured run
    # sees the same cache state and an already-started proxy.
    local n=${#TARGET_LIST[@]} round i spec
    for target in "${TARGET_LIST[@]}"; do
        local port_var=PORT_$target
        # shellcheck disable=SC2086 # WARMUP_ARGS is a word list on purpose
        "$PGBENCH" -h 127.0.0.1 -p "${!port_var}" -U postgres -n $WARMUP_ARGS -T 2 \
            -c "$CLIENTS" -j "$THREADS" "$(target_db "$target")" >"$WORK/raw/warmup-$target.txt" 2>&1 ||
            { cat "$WORK/raw/warmup-$target.txt" >&2; die "warm-up failed via $target"; }
    done
    if [[ $MODE == guard ]]; then check_guards; fi

    local started=$SECONDS
    for ((round = 1; round <= ROUNDS; round++)); do
        for spec in "${WORKLOADS[@]}"; do
            run_set "$round" "$spec"
        done
    done
    log "measured runs took $((SECONDS - started)) s"
    if [[ -n $MIRROR_DBS ]]; then verify_mirrors; fi
    if [[ $MODE == guard ]] && ((GUARD_PROFILE_DURATION > 0)); then profile_guard; fi

    if ((PROFILE_DURATION > 0)) && command -v strace >/dev/null; then
        for target in "${TARGET_LIST[@]}"; do
            profile_syscalls "$target"
        done
    fi
    if ((PERF)) && command -v perf >/dev/null; then
        for target in "${TARGET_LIST[@]}"; do
            profile_perf "$target"
        done
    fi

    local proxies="" target_dbs=""
    for target in "${TARGET_LIST[@]}"; do
        local pid_var=PID_$target
        [[ -n ${!pid_var:-} ]] && proxies+="${proxies:+ }$target"
        target_dbs+="${target_dbs:+, }$target: $(target_db "$target")"
    done
    cat >"$WORK/meta.tsv" <<EOF
mode	$MODE
out	$OUT
command	$COMMAND
date	$(date -u '+%Y-%m-%d %H:%M UTC')
nproc	$(nproc)
cpu	$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
memory	$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
kernel	$(uname -r)
postgres	$("$PGBIN/postgres" --version)
pgbench	$("$PGBENCH" --version)
pgbouncer	$("$PGBOUNCER" --version | head -1)
tandem	$built, $(rustc --version 2>/dev/null || echo rustc unknown), release profile
clk_tck	$(getconf CLK_TCK)
scale	$SCALE
clients	$CLIENTS
threads	$THREADS
duration	$DURATION
rounds	$ROUNDS
guard_profile_duration	$([[ $MODE == guard ]] && echo "$GUARD_PROFILE_DURATION")
profile_duration	$PROFILE_DURATION
targets	$TARGETS
baseline	direct
proxies	$proxies
databases	$target_dbs
ratios	$RATIOS
accounts_v2_partitions	$ACCOUNTS_V2_PARTITIONS
postgres_settings	$PG_SETTINGS
durable	$DURABLE
max_foreign_pct	$MAX_FOREIGN_PCT
retries	$RETRIES
EOF

    mkdir -p "$BENCH_DIR/results"
    local res=$BENCH_DIR/results f
    python3 "$BENCH_DIR/report.py" "$WORK" >"$res/$OUT.md"
    cp "$WORK/results.tsv" "$res/$OUT-runs.tsv"
    for f in strace rejected $([[ -n $MIRROR_DBS ]] && echo verify) $([[ $MODE == guard ]] && echo runcheck profile); do
        cp "$WORK/$f.tsv" "$res/$OUT-$f.tsv"
    done
    cp "$WORK/meta.tsv" "$res/$OUT-meta.tsv"
    if ((KEEP_RAW)); then
        cp -r "$WORK/raw" "$res/raw-$OUT-$(date +%Y%m%d-%H%M%S)"
    fi
    cat "$res/$OUT.md"
    log "written to bench/results/$OUT.md"
    ((MIRROR_CHECK_FAILED == 0)) || die "a legacy table differs from its _v2 after the runs (see the mirror check above)"
}

main "$@"

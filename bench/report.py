#!/usr/bin/env python3
"""Turns the raw files of one bench/run.sh run into the markdown report.

Usage: report.py WORKDIR   (reads results.tsv, strace.tsv, rejected.tsv, verify.tsv,
runcheck.tsv, profile.tsv and meta.tsv; prints markdown)

Every figure is derived from what run.sh recorded; nothing is estimated. Ratios are paired:
each round's target TPS is divided by the other target's TPS in the same round and workload,
and the median of those ratios is shown, so drift between rounds cancels.
"""

import collections
import statistics
import sys
from pathlib import Path

ONE_CLIENT_SUFFIX = ", 1 client"

# What each target is, for the setup section.
TARGET_DESCRIPTIONS = {
    "direct": "`direct`: Postgres itself over TCP on 127.0.0.1",
    "tandem": "`tandem`: `tandem serve`, no rules, default workers (one single-threaded "
              "runtime per CPU, each session pinned to one)",
    "tandem_1w": "`tandem_1w`: `tandem serve --workers 1`, no rules, one event loop for everything",
    "pgbouncer": "`pgbouncer`: PgBouncer, session pooling, trust auth, one process",
    "plain": "`plain`: `tandem serve`, no rules (passthrough), default workers, to database A",
    "dual": "`dual`: `tandem serve --config` with a `dual_write` rule on each of "
            "pgbench_accounts, pgbench_tellers, pgbench_branches (targets `*_v2`), to database B; "
            "the rules have the default `guard = \"mirror\"`, so the guard's statement triggers "
            "check every statement in B",
    "dual_noguard": "`dual_noguard`: the same rules with `guard = \"off\"`, to database D "
                    "(a copy of B): no guard triggers",
    "dual_noop": "`dual_noop`: the same rules with `guard = \"off\"`, to database E (a copy of "
                 "B) where statement triggers with the guard's events and transition tables, on "
                 "the same tables, call a no-op PL/pgSQL function: the guard's firing without "
                 "its check",
    "guard_direct": "`guard_direct`: Postgres itself, database B, with the guard the `dual` "
                    "proxy installed: every statement is mirrored by the guard (`mirror`)",
    "union": "`union`: `tandem serve --config` with a `union_read` rule on pgbench_accounts "
             "(target pgbench_accounts_v2, backfilled), to database B; its backfill is recorded "
             "as finished, so reads go to the target alone",
    "union_watermark": "`union_watermark`: the same rule in its own store, with no finished "
                       "backfill but a running one's watermark at 90% of the keys "
                       "(`backfilled_to`): reads split at it, keys at or below from the "
                       "target, the rest from legacy",
    "union_running": "`union_running`: the same rule in its own store, with no backfill "
                     "recorded: every read is the target plus the legacy rows it lacks "
                     "(the anti-join union)",
    "shadow_off": "`shadow_off`: `tandem serve --config` with a `dual_write` rule on "
                  "pgbench_accounts (target pgbench_accounts_v2, backfilled, guard off) and "
                  "`sample_rate = 0`, to database B",
    "shadow_count": "`shadow_count`: the same rule with `sample_rate = 0.000001` and per-shape "
                    "coverage on: every read's shape is counted (the hot-path cost), and the one "
                    "shape is compared 5 times, then almost never",
    "shadow_on": "`shadow_on`: the same rule with `sample_rate = 0.01` and per-shape coverage "
                 "on (the defaults: top 50 shapes, 5 comparisons each): each read's shape is "
                 "counted, and sampled reads are re-run on both tables off the client's path",
    "triggers": "`triggers`: Postgres itself, database C, where AFTER INSERT/UPDATE/DELETE FOR EACH "
                "ROW PL/pgSQL triggers on the same three tables upsert into / delete from `*_v2`",
}

RUNCHECK_FIELDS = "round workload target db table keys legacy_minus_target " \
    "target_minus_legacy".split()

PROFILE_FIELDS = "target txns kind calls total_ms self_ms toplevel text".split()

VERIFY_FIELDS = "db table legacy_rows target_rows legacy_minus_target target_minus_legacy " \
    "legacy_changed target_changed".split()

RUN_FIELDS = (
    "round workload target tps lat_ms txns failed clients "
    "proxy_ticks ctxsw machine_busy machine_total foreign"
).split()


def read_tsv(path):
    if not path.exists():
        return []
    return [line.rstrip("\n").split("\t") for line in path.read_text().splitlines() if line.strip()]


def load_runs(work, name="results.tsv"):
    runs = []
    for row in read_tsv(work / name):
        r = dict(zip(RUN_FIELDS, row))
        for k in ("tps", "lat_ms"):
            r[k] = float(r[k])
        for k in ("round", "txns", "failed", "clients", "proxy_ticks", "ctxsw",
                  "machine_busy", "machine_total", "foreign"):
            r[k] = int(r[k])
        runs.append(r)
    return runs


def ordered(items):
    """Unique items in first-seen order."""
    return list(dict.fromkeys(items))


def spread(values):
    """Half the range as a percentage of the median: a plain 'how noisy was this'."""
    med = statistics.median(values)
    return 100 * (max(values) - min(values)) / 2 / med if med else 0.0


def parse_ratios(spec):
    """'a/b>=0.9 c/d' -> [('a', 'b', 0.9), ('c', 'd', None)]"""
    out = []
    for item in spec.split():
        pair, _, goal = item.partition(">=")
        num, _, den = pair.partition("/")
        out.append((num, den, float(goal) if goal else None))
    return out


def main():
    work = Path(sys.argv[1])
    meta = dict((row + [""])[:2] for row in read_tsv(work / "meta.tsv"))
    runs = load_runs(work)
    clk = int(meta.get("clk_tck", "100"))
    mode = meta.get("mode", "main")
    out_prefix = meta.get("out", "latest")
    BASELINE = meta.get("baseline", "direct")
    workloads = ordered(r["workload"] for r in runs)
    targets = meta.get("targets", "").split() or ordered(r["target"] for r in runs)
    others = [t for t in targets if t != BASELINE]
    proxies = set(meta["proxies"].split()) if "proxies" in meta else set(others)
    by = collections.defaultdict(list)  # (workload, target) -> runs, in round order
    for r in runs:
        by[(r["workload"], r["target"])].append(r)
    tps_of = {(r["workload"], r["target"], r["round"]): r["tps"] for r in runs}

    def med(workload, target, key):
        return statistics.median(r[key] for r in by[(workload, target)])

    def round_ratios(workload, target, base):
        """{round: target TPS / base TPS} over the rounds both ran."""
        return {
            r["round"]: r["tps"] / tps_of[(workload, base, r["round"])]
            for r in by[(workload, target)]
            if (workload, base, r["round"]) in tps_of
        }

    def paired_ratio(workload, target, base=BASELINE):
        ratios = list(round_ratios(workload, target, base).values())
        return statistics.median(ratios) if ratios else None

    out = []
    w = out.append
    title = {"dual-write": "Tandem dual-write benchmark",
             "union-read": "Tandem union-read benchmark",
             "guard": "Tandem guard benchmark",
             "shadow": "Tandem shadow-read benchmark"}.get(mode, "Tandem benchmark")
    w(f"# {title}, {meta.get('date', '')}\n")
    w("## Setup\n")
    w(f"- Machine: {meta.get('nproc')} CPUs ({meta.get('cpu')}), {meta.get('memory')} RAM, "
      f"Linux {meta.get('kernel')}")
    w(f"- {meta.get('postgres')}; {meta.get('pgbench')}; {meta.get('pgbouncer')}")
    w(f"- Tandem: {meta.get('tandem')}")
    w(f"- Postgres settings: `{meta.get('postgres_settings')}`"
      + ("" if meta.get("durable") == "1" else
         " (fsync and synchronous_commit off: not durable, so disk flushes do not mask the proxies)"))
    w("- Targets (all over TCP on 127.0.0.1 to the same server; Tandem with RUST_LOG=warn):")
    for t in targets:
        w(f"  - {TARGET_DESCRIPTIONS.get(t, f'`{t}`')}")
    if mode == "union-read":
        w(f"- Databases: {meta.get('databases')}. B is a `CREATE DATABASE ... TEMPLATE` copy "
          f"of A after `pgbench -i`, with `pgbench_accounts_v2` (`LIKE ... INCLUDING ALL`, "
          f"hash-partitioned by aid into {meta.get('accounts_v2_partitions')} partitions) "
          f"backfilled; `union` reads `pgbench_accounts` through a `union_read` rule, so every "
          f"`SELECT abalance FROM pgbench_accounts WHERE aid = $1` reads the target plus the "
          f"legacy rows missing from it.")
    if mode == "guard":
        w(f"- Databases: {meta.get('databases')}. B, C and D (and E) are `CREATE DATABASE ... "
          f"TEMPLATE` copies of A after `pgbench -i`, with `*_v2` tables `LIKE ... INCLUDING ALL` "
          f"(pgbench_accounts_v2 hash-partitioned by aid into "
          f"{meta.get('accounts_v2_partitions')} partitions) backfilled before the runs. B serves "
          f"two targets (`dual` and `guard_direct`), so its tables take twice the updates of "
          f"the others'.")
    if mode == "dual-write":
        w(f"- Databases: {meta.get('databases')}. B and C are `CREATE DATABASE ... TEMPLATE` "
          f"copies of A after `pgbench -i`; their `*_v2` tables are `LIKE ... INCLUDING ALL` "
          f"(pgbench_accounts_v2 hash-partitioned by aid into "
          f"{meta.get('accounts_v2_partitions')} partitions), backfilled with "
          f"`INSERT ... SELECT *` before the runs.")
    w(f"- pgbench scale {meta.get('scale')}, {meta.get('duration')} s per run, "
      f"{meta.get('rounds')} rounds; each round runs every target back to back per workload, "
      f"order rotated per round. Medians over rounds.")
    w(f"- Command: `{meta.get('command')}`\n")

    w("## Throughput and latency\n")
    w("TPS is the median over rounds; the ratio is the median of per-round ratios to direct; "
      "± is half the range over rounds. Latency is pgbench's mean latency (ms), median over rounds.\n")
    head = ["workload", f"{BASELINE} TPS"] + [f"{t} TPS (ratio)" for t in others]
    head.append("mean latency ms: " + " / ".join(targets))
    w("| " + " | ".join(head) + " |")
    w("|" + "---|" * len(head))
    for wl in workloads:
        cells = [f"{wl} (-c {by[(wl, targets[0])][0]['clients']})"]
        for t in targets:
            if not by[(wl, t)]:
                cells.append("n/a")
                continue
            tps = med(wl, t, "tps")
            sp = spread([r["tps"] for r in by[(wl, t)]])
            cell = f"{tps:,.0f} ±{sp:.1f}%"
            if t != BASELINE:
                ratio = paired_ratio(wl, t)
                cell += f" ({ratio:.3f})" if ratio is not None else ""
            cells.append(cell)
        cells.append(" / ".join(f"{med(wl, t, 'lat_ms'):.3f}" for t in targets if by[(wl, t)]))
        w("| " + " | ".join(cells) + " |")
    failed = sum(r["failed"] for r in runs)
    w(f"\nFailed transactions over all runs: {failed}.\n")
    rejected = load_runs(work, "rejected.tsv")
    foreign = [100 * r["foreign"] / r["machine_total"] for r in runs]
    n_sets = len(rejected) // max(1, len(targets))
    w(f"CPU used by processes outside the benchmark (other work on the machine), as a share of "
      f"the machine's CPU during each kept run: median {statistics.median(foreign):.1f}%, "
      f"max {max(foreign):.1f}%. Sets of runs rejected and rerun because one run exceeded "
      f"{meta.get('max_foreign_pct')}%: {n_sets} (rows in {out_prefix}-rejected.tsv).\n")

    pairs = [p for p in parse_ratios(meta.get("ratios", ""))
             if p[0] in targets and p[1] in targets]
    if pairs:
        rounds_all = sorted({r["round"] for r in runs})
        w("## Paired ratios\n")
        w("TPS of one target divided by another's in the same round and workload; the median "
          "is over rounds. Where the issue sets a target, *meets* compares the median with it.\n")
        w("| ratio | workload | " + " | ".join(f"round {n}" for n in rounds_all)
          + " | median | target |")
        w("|---|---|" + "---|" * len(rounds_all) + "---|---|")
        for num, den, goal in pairs:
            for wl in workloads:
                rr = round_ratios(wl, num, den)
                if not rr:
                    continue
                m = statistics.median(rr.values())
                verdict = "–" if goal is None else (
                    f"≥ {goal:.2f}: {'meets' if m >= goal else '**misses**'}"
                    f" ({sum(v >= goal for v in rr.values())}/{len(rr)} rounds)")
                w(f"| {num} / {den} | {wl} | "
                  + " | ".join(f"{rr[n]:.3f}" if n in rr else "–" for n in rounds_all)
                  + f" | **{m:.3f}** | {verdict} |")
        w("")

    verify = [dict(zip(VERIFY_FIELDS, row)) for row in read_tsv(work / "verify.tsv")]
    if mode in ("dual-write", "guard"):
        w("## Mirror check (after all runs)\n")
        if not verify:
            w("**Not run** (no verify.tsv).\n")
        else:
            w("For each mirrored table: rows of `legacy EXCEPT target` and of `target EXCEPT "
              "legacy` (both must be 0), and rows whose balance is no longer 0, i.e. were "
              "updated by the runs (so the check is not vacuous).\n")
            w("| database | legacy table | rows legacy / _v2 | legacy EXCEPT _v2 "
              "| _v2 EXCEPT legacy | updated rows legacy / _v2 | result |")
            w("|---|---|---|---|---|---|---|")
            for v in verify:
                ok = (v["legacy_minus_target"] == "0" and v["target_minus_legacy"] == "0"
                      and int(v["legacy_changed"]) > 0)
                w(f"| {v['db']} | {v['table']} | {int(v['legacy_rows']):,} / "
                  f"{int(v['target_rows']):,} | {v['legacy_minus_target']} "
                  f"| {v['target_minus_legacy']} | {int(v['legacy_changed']):,} / "
                  f"{int(v['target_changed']):,} | {'identical' if ok else '**MISMATCH**'} |")
            w("")

    runcheck = [dict(zip(RUNCHECK_FIELDS, row)) for row in read_tsv(work / "runcheck.tsv")]
    if runcheck:
        bad = [c for c in runcheck
               if c["legacy_minus_target"] != "0" or c["target_minus_legacy"] != "0"
               or c["keys"] == "0"]
        w("### After every run\n")
        w("After each measured run in a mirrored database, the keys that run wrote to "
          "`pgbench_history` (truncated before each run) were compared in each legacy table "
          "and its `_v2` (`EXCEPT` both ways); the first difference stops the benchmark.\n")
        w("| target | database | runs checked | keys checked per run (median) "
          "| legacy EXCEPT _v2 | _v2 EXCEPT legacy |")
        w("|---|---|---|---|---|---|")
        for t in ordered(c["target"] for c in runcheck):
            cs = [c for c in runcheck if c["target"] == t]
            per_run = collections.Counter((c["round"], c["workload"]) for c in cs)
            keys = collections.defaultdict(int)
            for c in cs:
                keys[(c["round"], c["workload"])] += int(c["keys"])
            w(f"| {t} | {cs[0]['db']} | {len(per_run)} | "
              f"{statistics.median(keys.values()):,.0f} "
              f"| {sum(int(c['legacy_minus_target']) for c in cs)} "
              f"| {sum(int(c['target_minus_legacy']) for c in cs)} |")
        w(f"\n{'**' + str(len(bad)) + ' table checks failed.**' if bad else 'Every check found the tables identical.'}\n")

    if mode == "guard":
        pairs = [p for p in parse_ratios(meta.get("ratios", ""))
                 if p[0] in targets and p[1] in targets]
        w("## Paired differences per transaction\n")
        w("For each pair, per round: time per transaction from TPS (1e6 × clients / TPS: with one "
          "client, the added latency) and machine CPU per transaction (all busy time in "
          "/proc/stat / transactions), first minus second; medians over rounds.\n")
        w("| pair | workload | time µs/tx, per round | median | machine CPU µs/tx, per round "
          "| median |")
        w("|---|---|---|---|---|---|")
        cpu_of = {(r["workload"], r["target"], r["round"]):
                  r["machine_busy"] / clk * 1e6 / r["txns"] for r in runs}
        for num, den, _ in pairs:
            for wl in workloads:
                rs = [r for r in by[(wl, num)] if (wl, den, r["round"]) in tps_of]
                if not rs:
                    continue
                dt = [r["clients"] * (1e6 / r["tps"] - 1e6 / tps_of[(wl, den, r["round"])])
                      for r in rs]
                dc = [cpu_of[(wl, num, r["round"])] - cpu_of[(wl, den, r["round"])] for r in rs]
                w(f"| {num} − {den} | {wl} | {', '.join(f'{d:+.0f}' for d in dt)} "
                  f"| **{statistics.median(dt):+.0f}** | {', '.join(f'{d:+.0f}' for d in dc)} "
                  f"| **{statistics.median(dc):+.0f}** |")
        w("")

    one = [wl for wl in workloads if wl.endswith(ONE_CLIENT_SUFFIX)]
    for wl in one if mode == "guard" else one[:1]:
        if not by[(wl, BASELINE)]:
            continue
        if mode == "main":
            w("## Added latency per round trip (1 client, select-only prepared)\n")
            w("Mean time per transaction from TPS (1e6 / TPS, one client, so one query round "
              "trip each); added = median over rounds of (target - direct) in the same round.\n")
        else:
            w(f"## Added latency per transaction ({wl})\n")
            w("Mean time per transaction from TPS (1e6 / TPS, one client); added = median over "
              "rounds of (target - direct) in the same round.\n")
        w("| target | µs per transaction | added vs direct, µs |")
        w("|---|---|---|")
        for t in targets:
            if not by[(wl, t)]:
                continue
            us = statistics.median(1e6 / r["tps"] for r in by[(wl, t)])
            if t == BASELINE:
                w(f"| {t} | {us:.1f} | – |")
                continue
            added = [
                1e6 / r["tps"] - 1e6 / tps_of[(wl, BASELINE, r["round"])]
                for r in by[(wl, t)]
                if (wl, BASELINE, r["round"]) in tps_of
            ]
            w(f"| {t} | {us:.1f} | {statistics.median(added):+.1f} "
              f"(rounds: {', '.join(f'{a:+.1f}' for a in added)}) |")
        w("")

    w("## Where the time goes\n")
    w("### CPU per transaction\n")
    w("Proxy CPU is utime+stime of the proxy process (all threads) from /proc/<pid>/stat, "
      f"sampled around each pgbench run (tick = {1000 // clk} ms), divided by the transactions "
      "of that run; the window includes connecting 8 sessions. *Cores* is proxy CPU time / wall time. "
      "Context switches are summed over the proxy's threads. Machine CPU is all busy time in "
      "/proc/stat (pgbench + Postgres + proxy + anything else running) per transaction. "
      "Medians over rounds.\n")
    w("| workload | target | proxy CPU µs/tx | proxy cores | proxy ctx switches/tx "
      "| machine CPU µs/tx | machine busy |")
    w("|---|---|---|---|---|---|---|")
    dur = float(meta.get("duration", "0") or 0)
    for wl in workloads:
        for t in targets:
            rs = by[(wl, t)]
            if not rs:
                continue
            is_proxy = t in proxies
            pcpu = statistics.median(r["proxy_ticks"] / clk * 1e6 / r["txns"] for r in rs)
            cores = statistics.median(r["proxy_ticks"] / clk / dur for r in rs) if dur else 0
            cs = statistics.median(r["ctxsw"] / r["txns"] for r in rs)
            mcpu = statistics.median(r["machine_busy"] / clk * 1e6 / r["txns"] for r in rs)
            busy = statistics.median(100 * r["machine_busy"] / r["machine_total"] for r in rs)
            w(f"| {wl} | {t} | {f'{pcpu:.1f}' if is_proxy else '–'} "
              f"| {f'{cores:.2f}' if is_proxy else '–'} | {f'{cs:.2f}' if is_proxy else '–'} "
              f"| {mcpu:.1f} | {busy:.0f}% |")
    w("")

    st = read_tsv(work / "strace.tsv")
    if st or mode == "main":
        w("### Syscalls per transaction (strace -c -f, select-only prepared)\n")
    if not st:
        if mode == "main":
            w("Not measured (PROFILE_DURATION=0 or strace unavailable).\n")
    else:
        failed_attach = [row for row in st if len(row) > 1 and row[1] == "ATTACH_FAILED"]
        for row in failed_attach:
            w(f"- strace could not attach to {row[0]}: {row[2] if len(row) > 2 else ''}")
        calls = collections.defaultdict(dict)  # syscall -> target -> (calls, errors)
        txns = {}
        for row in st:
            if len(row) < 5 or row[1] == "ATTACH_FAILED":
                continue
            t, name, c, e, n = row
            calls[name][t] = (int(c), int(e))
            txns[t] = int(n)
        if txns:
            st_targets = [t for t in targets if t in txns]
            w(f"{meta.get('profile_duration')} s of `pgbench -S -M prepared -c {meta.get('clients')} "
              f"-j {meta.get('threads')}` per proxy with strace attached (strace slows the proxy a lot, "
              "so only the per-transaction counts mean anything). Transactions under strace: "
              + ", ".join(f"{t} {txns[t]:,}" for t in st_targets) + ". Errors are mostly EAGAIN.\n")
            w("| syscall | " + " | ".join(f"{t} calls/tx (errors/tx)" for t in st_targets) + " |")
            w("|---|" + "---|" * len(st_targets))
            names = sorted((n for n in calls if n != "total"),
                           key=lambda n: -max(calls[n].get(t, (0, 0))[0] / txns[t] for t in st_targets))
            for name in names + (["total"] if "total" in calls else []):
                cells = []
                for t in st_targets:
                    c, e = calls[name].get(t, (0, 0))
                    cells.append(f"{c / txns[t]:.2f} ({e / txns[t]:.2f})" if c else "–")
                if name != "total" and all(
                        calls[name].get(t, (0, 0))[0] / txns[t] < 0.01 for t in st_targets):
                    continue
                label = f"**{name}**" if name == "total" else name
                w(f"| {label} | " + " | ".join(cells) + " |")
            w("")

    prof = [dict(zip(PROFILE_FIELDS, row)) for row in read_tsv(work / "profile.tsv")]
    if prof:
        w("## Where Postgres spends a transaction's time (profile)\n")
        w(f"After the measured runs Postgres was restarted with `pg_stat_statements` "
          f"(`track = all`: statements run inside triggers and functions are counted too) and "
          f"`track_functions = pl`, everything was prewarmed again, and each target ran "
          f"{meta.get('guard_profile_duration')} s of `pgbench -M prepared -c "
          f"{meta.get('clients')}` with the counters reset before. Execution time of a "
          f"statement includes the AFTER triggers it fires (and their statements, which are "
          f"listed again on their own); a function's total includes the statements it runs, "
          f"its self time does not. µs and calls are per pgbench transaction; the top "
          f"entries by total time.\n")
        for t in ordered(p["target"] for p in prof):
            ps = [p for p in prof if p["target"] == t]
            n = int(ps[0]["txns"])
            w(f"**{t}** ({n:,} transactions)\n")
            w("| kind | calls/tx | total µs/tx | self µs/tx | µs/call | statement or function |")
            w("|---|---|---|---|---|---|")
            for p in ps:
                calls = int(p["calls"])
                total = float(p["total_ms"]) * 1000
                self_us = f"{float(p['self_ms']) * 1000 / n:.1f}" if p["self_ms"] else "–"
                kind = p["kind"] + (" (nested)" if p["toplevel"] == "f" else "")
                text = p["text"].replace("|", "\\|")
                w(f"| {kind} | {calls / n:.2f} | {total / n:.1f} | {self_us} "
                  f"| {total / calls if calls else 0:.1f} | `{text}` |")
            w("")

    w("## Per-round TPS\n")
    w("In parentheses: CPU used by processes outside the benchmark during that run.\n")
    rounds = sorted({r["round"] for r in runs})
    w("| workload | target | " + " | ".join(f"round {n}" for n in rounds) + " |")
    w("|---|---|" + "---|" * len(rounds))
    for wl in workloads:
        for t in targets:
            vals = {r["round"]: r for r in by[(wl, t)]}
            w(f"| {wl} | {t} | " + " | ".join(
                f"{vals[n]['tps']:,.0f} ({100 * vals[n]['foreign'] / vals[n]['machine_total']:.0f}%)"
                if n in vals else "–" for n in rounds) + " |")
    print("\n".join(out))


if __name__ == "__main__":
    main()

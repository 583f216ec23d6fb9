//! The admin console's SHOW commands: rules, sessions, stats, version, parity estimates,
//! read shapes and partitions, each a result set built from the proxy's state or a side connection.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::console::{error, on_off, Output};
use crate::control::watch::RulesWatch;
use crate::ops::parity::GATE_MIN_SAMPLES;
use crate::shared::Shared;
use crate::wire::protocol::backend::ErrorFields;

/// A side connection to the rule store's database.
pub(super) async fn side(shared: &Arc<Shared>) -> Result<tokio_postgres::Client, ErrorFields> {
    crate::control::catalog::side_connection(&shared.config, &shared.connector)
        .await
        .map_err(|e| error("08000", format!("tandem: cannot reach the rule store: {e}")))
}

/// `SHOW RULES`: each stored rule, what this instance applies, and its guard.
pub(super) async fn show_rules(
    shared: &Arc<Shared>,
    watch: &RulesWatch,
) -> Result<Output, ErrorFields> {
    let client = side(shared).await?;
    let snapshot = crate::control::store::load(&client, watch.store())
        .await
        .map_err(|e| error("XX000", format!("tandem: {e}")))?;
    let guards = crate::control::guard::states(&client, watch.store())
        .await
        .map_err(|e| {
            error(
                "XX000",
                format!(
                    "tandem: guard state: {}",
                    crate::control::catalog::describe(&e)
                ),
            )
        })?;
    let active = watch.current();
    let rows = snapshot
        .rules
        .iter()
        .map(|r| {
            let live = active
                .set
                .rules
                .iter()
                .find(|a| a.rule.table == r.rule.table);
            // An empty stored key means "primary key (+ partition key)", which the
            // instance resolved: compare everything else, show the resolved key.
            let applied = match live {
                Some(a) => {
                    let mut stored = r.rule.clone();
                    if stored.key.is_empty() {
                        stored.key = a.rule.key.clone();
                    }
                    a.rule == stored
                }
                None => r.rule.mode == tandem_rules::Mode::Off,
            };
            let key = match (r.rule.key.is_empty(), live) {
                (true, Some(a)) => a.rule.key.join(", "),
                _ => r.rule.key.join(", "),
            };
            vec![
                Some(r.rule.table.to_string()),
                Some(r.rule.target.to_string()),
                Some(key),
                Some(r.rule.mode.to_string()),
                Some(r.rule.sample_rate.to_string()),
                Some(r.rule.on_mirror_error.as_str().to_string()),
                Some(r.rule.guard.as_str().to_string()),
                guards.get(&r.rule.table.to_string()).map(|g| g.describe()),
                Some(crate::control::store::set_json(&r.rule.set)),
                Some(on_off(r.rule.auto_partition).to_string()),
                Some(r.rule.drop_columns.join(", ")),
                Some(r.rule.drop_triggers.join(", ")),
                Some(r.rule.backfilled.to_string()),
                r.rule.backfilled_to.as_ref().map(|k| k.join(", ")),
                Some(r.version.to_string()),
                Some(r.updated_at.clone()),
                Some(r.updated_by.clone()),
                Some(applied.to_string()),
            ]
        })
        .collect::<Vec<_>>();
    let n = rows.len();
    Ok(Output {
        columns: vec![
            "table",
            "target",
            "key",
            "mode",
            "sample_rate",
            "on_mirror_error",
            "guard",
            "guard_state",
            "set",
            "auto_partition",
            "drop_columns",
            "drop_triggers",
            "backfilled",
            "backfilled_to",
            "version",
            "updated_at",
            "updated_by",
            "applied",
        ],
        rows,
        tag: format!("SHOW {n}"),
    })
}

/// `SHOW SESSIONS`: each client session and what it is doing.
pub(super) async fn show_sessions(shared: &Arc<Shared>) -> Result<Output, ErrorFields> {
    let rows: Vec<_> = shared
        .sessions
        .list()
        .iter()
        .map(|s| {
            let started: chrono_free::Rfc3339 = s.started_at.into();
            vec![
                Some(s.id.to_string()),
                Some(s.user.clone()),
                Some(s.database.clone()),
                Some(s.client_addr.to_string()),
                Some(s.tls.to_string()),
                Some(s.state_name().to_string()),
                s.active_for()
                    .map(|d| format!("{}.{:03}", d.as_secs(), d.subsec_millis())),
                Some(started.0),
                Some(s.rules_version.load(Relaxed).to_string()),
                Some(s.queries.load(Relaxed).to_string()),
            ]
        })
        .collect();
    let n = rows.len();
    Ok(Output {
        columns: vec![
            "id",
            "user",
            "database",
            "client_addr",
            "tls",
            "state",
            "active_for_s",
            "started_at",
            "rules_version",
            "queries",
        ],
        rows,
        tag: format!("SHOW {n}"),
    })
}

/// `SHOW STATS`: the proxy's counters.
pub(super) async fn show_stats(shared: &Arc<Shared>) -> Result<Output, ErrorFields> {
    let s = shared.stats.snapshot();
    let mut stats = vec![
        ("sessions_total", s.sessions_total),
        ("sessions_active", s.sessions_active),
        ("sessions_refused", s.sessions_refused),
        ("bytes_from_clients", s.bytes_from_clients),
        ("bytes_to_clients", s.bytes_to_clients),
        ("queries", s.queries),
        ("errors", s.errors),
        ("cancels", s.cancels),
    ];
    if let Some(sampler) = &shared.sampler {
        stats.extend([
            ("shadow_samples_queued", sampler.queued.load(Relaxed)),
            ("shadow_samples_dropped", sampler.dropped.load(Relaxed)),
            ("shadow_samples_recorded", sampler.recorded.load(Relaxed)),
            ("shadow_samples_failed", sampler.failed.load(Relaxed)),
            ("shadow_samples_coverage", sampler.coverage.load(Relaxed)),
        ]);
        if let Some(shapes) = &sampler.shapes {
            stats.extend([
                ("shadow_shapes_tracked", shapes.tracked() as u64),
                ("shadow_shapes_untracked", shapes.untracked.load(Relaxed)),
                (
                    "shadow_shapes_flush_failures",
                    shapes.flush_failures.load(Relaxed),
                ),
            ]);
        }
    }
    let n = stats.len();
    let rows = stats
        .iter()
        .map(|(k, v)| vec![Some(k.to_string()), Some(v.to_string())])
        .collect::<Vec<_>>();
    Ok(Output {
        columns: vec!["stat", "value"],
        rows,
        tag: format!("SHOW {n}"),
    })
}

/// `SHOW VERSION`: the build and the rules version in force.
pub(super) async fn show_version(watch: &RulesWatch) -> Result<Output, ErrorFields> {
    let status = watch.status();
    Ok(Output {
        columns: vec![
            "tandem",
            "store_schema",
            "store_version",
            "listening",
            "last_error",
        ],
        rows: vec![vec![
            Some(env!("CARGO_PKG_VERSION").to_string()),
            Some(watch.store().schema.clone()),
            Some(status.applied_version.to_string()),
            Some(status.listening.to_string()),
            status.last_error,
        ]],
        tag: "SHOW 1".into(),
    })
}

/// `SHOW PARITY`: the cheap figures per rule (estimates, backfill, drift, samples, schema).
pub(super) async fn show_parity(
    shared: &Arc<Shared>,
    watch: &RulesWatch,
) -> Result<Output, ErrorFields> {
    let mut client = side(shared).await?;
    let rows = client
            .query(
                &format!(
                    "SELECT r.table_name, r.target, r.mode, {}, {}, \
                       coalesce(b.status, 'none'), coalesce(b.rows_copied, 0)::text, \
                       (SELECT count(*) FROM tandem.drift d WHERE d.rule_table = r.table_name AND NOT d.resolved)::text, \
                       s.samples::text, greatest({GATE_MIN_SAMPLES} - s.samples, 0)::text, \
                       round(s.mean::numeric, 3)::text, round(s.low::numeric, 3)::text, s.last::text \
                     FROM {} r \
                     LEFT JOIN {} b ON b.table_name = r.table_name AND b.predicate = '' AND b.direction = 'forward' \
                     LEFT JOIN LATERAL (SELECT count(*) AS samples, avg(overlap) AS mean, min(overlap) AS low, \
                       max(at) AS last FROM {} x WHERE x.rule_table = r.table_name) s ON true \
                     ORDER BY 1",
                    rows_estimate("r.table_name"),
                    rows_estimate("r.target"),
                    watch.store().rules(),
                    watch.store().backfill_state(),
                    watch.store().qualified("shadow_samples"),
                ),
                &[],
            )
            .await
            .map_err(|e| error("XX000", format!("tandem: {}", crate::control::catalog::describe(&e))))?;
    let mut rows: Vec<Vec<Option<String>>> = rows
        .iter()
        .map(|r| {
            (0..r.len())
                .map(|i| r.get::<_, Option<String>>(i))
                .collect()
        })
        .collect();
    // Schema parity, from the catalog (no scans): the report's schema checks.
    let snapshot = crate::control::store::load(&client, watch.store())
        .await
        .map_err(|e| error("XX000", format!("tandem: {e}")))?;
    for row in &mut rows {
        let table = row.first().cloned().flatten().unwrap_or_default();
        let stored = snapshot
            .rules
            .iter()
            .find(|r| r.rule.table.to_string() == table);
        let cell = match stored {
            Some(stored) => {
                match crate::ops::parity::schema::of_rule(&mut client, &stored.rule).await {
                    Ok(schema) => schema.summary(),
                    Err(e) => format!("unknown: {e}"),
                }
            }
            None => "unknown: no rule".into(),
        };
        row.push(Some(cell));
    }
    let n = rows.len();
    Ok(Output {
        columns: vec![
            "table",
            "target",
            "mode",
            "legacy_rows_est",
            "target_rows_est",
            "backfill",
            "backfill_rows",
            "unresolved_drift",
            "shadow_samples",
            "samples_needed",
            "mean_overlap",
            "min_overlap",
            "last_sample",
            "schema",
        ],
        rows,
        tag: format!("SHOW {n}"),
    })
}

/// Shapes `SHOW SHAPES` lists per table.
const SHAPES_SHOWN: i64 = 100;

/// `SHOW SHAPES [<table>]`: each read shape the fleet counted, most run first, with its
/// comparisons, whether the target gave the same rows, and the median times on each side
/// (the figures of `tandem parity`'s per-shape section, without a diff).
pub(super) async fn show_shapes(
    shared: &Arc<Shared>,
    watch: &RulesWatch,
    table: Option<tandem_rules::TableName>,
) -> Result<Output, ErrorFields> {
    let client = side(shared).await?;
    let shadow = &shared.config.shadow;
    let table = table.map(|t| t.to_string());
    let shapes = crate::ops::parity::shapes::load(
        &client,
        watch.store(),
        table.as_deref(),
        shadow.top_k,
        SHAPES_SHOWN,
        crate::ops::parity::GATE_MAX_SLOWDOWN,
        crate::ops::parity::GATE_SLOWDOWN_FLOOR_MS,
    )
    .await
    .map_err(|e| {
        error(
            "XX000",
            format!("tandem: {}", crate::control::catalog::describe(&e)),
        )
    })?;
    let ms = |v: Option<f64>| v.map(|x| format!("{x:.3}"));
    let rows: Vec<Vec<Option<String>>> = shapes
        .iter()
        .map(|s| {
            vec![
                Some(s.table.clone()),
                Some(s.rank.to_string()),
                Some(s.top.to_string()),
                Some(s.fingerprint.clone()),
                Some(s.executions.to_string()),
                Some(s.comparisons.to_string()),
                Some(s.rows_verdict()),
                s.mean_overlap.map(|x| format!("{x:.3}")),
                s.min_overlap.map(|x| format!("{x:.3}")),
                ms(s.legacy_ms_p50),
                ms(s.target_ms_p50),
                Some(s.speed_verdict()),
                s.plan_hint.clone(),
                Some(s.shape.clone()),
            ]
        })
        .collect();
    let n = rows.len();
    Ok(Output {
        columns: vec![
            "table",
            "rank",
            "top_k",
            "fingerprint",
            "executions",
            "comparisons",
            "same_rows",
            "mean_overlap",
            "min_overlap",
            "legacy_p50_ms",
            "target_p50_ms",
            "target_vs_legacy",
            "plan_hint",
            "shape",
        ],
        rows,
        tag: format!("SHOW {n}"),
    })
}

/// `SHOW PARTITIONS <table>`: the target's partitions and their skew.
pub(super) async fn show_partitions(
    shared: &Arc<Shared>,
    table: tandem_rules::TableName,
) -> Result<Output, ErrorFields> {
    let (_, skew) = crate::ops::partitions::skew(&shared.config, &table, 2.0, 5.0)
        .await
        .map_err(|e| error("55000", format!("tandem: {e}")))?;
    let mut rows: Vec<Vec<Option<String>>> = skew
        .partitions
        .iter()
        .map(|p| {
            vec![
                Some(p.name.clone()),
                Some(p.bound.clone()),
                Some(p.rows.to_string()),
                Some(p.bytes.to_string()),
                Some(
                    if skew.hot.contains(&p.name) {
                        "hot"
                    } else if skew.droppable.iter().any(|d| d.name == p.name) {
                        "empty, can drop"
                    } else if p.rows == 0 {
                        "empty"
                    } else {
                        ""
                    }
                    .to_string(),
                ),
            ]
        })
        .collect();
    rows.push(vec![
        Some("(all)".into()),
        Some(format!("skew {:.2}, mean {:.0}", skew.ratio, skew.mean)),
        Some(
            skew.partitions
                .iter()
                .map(|p| p.rows)
                .sum::<i64>()
                .to_string(),
        ),
        Some(
            skew.partitions
                .iter()
                .map(|p| p.bytes)
                .sum::<i64>()
                .to_string(),
        ),
        Some(skew.verdict.to_string()),
    ]);
    let n = rows.len();
    Ok(Output {
        columns: vec!["partition", "bound", "rows", "bytes", "note"],
        rows,
        tag: format!("SHOW {n}"),
    })
}

/// SQL for the planner's row estimate of the table named by text expression `name`: the
/// sum over its leaf partitions (itself, when not partitioned; a partitioned parent's own
/// figure would count its rows twice), or `unknown (never analysed)` while one has none.
/// PostgreSQL 13 has no -1 for "never analysed" (it shows 0), so there a leaf with no
/// pages counted and no ANALYZE on record counts as never analysed.
fn rows_estimate(name: &str) -> String {
    format!(
        "(SELECT CASE WHEN bool_or(c.reltuples < 0 \
                      OR (current_setting('server_version_num')::int < 140000 \
                          AND c.reltuples = 0 AND c.relpages = 0 \
                          AND s.last_analyze IS NULL AND s.last_autoanalyze IS NULL)) \
                 THEN 'unknown (never analysed)' \
                 ELSE sum(c.reltuples)::int8::text END \
            FROM pg_class c LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid \
           WHERE (c.oid = to_regclass({name}) AND c.relkind <> 'p') \
              OR c.oid IN (SELECT relid FROM pg_partition_tree(to_regclass({name})) WHERE isleaf))"
    )
}

/// RFC 3339 UTC timestamps without a date crate.
mod chrono_free {
    use std::time::{SystemTime, UNIX_EPOCH};

    pub struct Rfc3339(pub String);

    impl From<SystemTime> for Rfc3339 {
        fn from(t: SystemTime) -> Self {
            let secs = t
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0) as i64;
            let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
            // Civil from days (Howard Hinnant's algorithm).
            let z = days + 719_468;
            let era = z.div_euclid(146_097);
            let doe = z - era * 146_097;
            let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
            let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
            let mp = (5 * doy + 2) / 153;
            let d = doy - (153 * mp + 2) / 5 + 1;
            let m = if mp < 10 { mp + 3 } else { mp - 9 };
            let y = yoe + era * 400 + i64::from(m <= 2);
            Rfc3339(format!(
                "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}+00",
                rem / 3600,
                rem % 3600 / 60,
                rem % 60
            ))
        }
    }
}

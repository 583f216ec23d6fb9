//! The read shapes of one table: same rows on the target, and faster or slower there.
//!
//! From `<store>.shadow_shapes` (executions counted by every instance, comparisons and
//! their outcome, the plans of a shape slower on the target) and the samples each shape
//! keeps in `<store>.shadow_samples` (overlap, rows, the two statements' times). The gate
//! looks at the top `shadow.top_k` shapes by executions: `shape_coverage` wants the share
//! of them whose newest `shadow.min_comparisons` comparisons (at least) were all at full
//! overlap to reach `--min-coverage` (so a shape that differed before the backfill
//! finished counts again once it agrees), and `shape_slowdown` wants none of them slower on the target than
//! `--max-slowdown` (median times, differences under `--slowdown-floor-ms` ignored).

use serde::Serialize;
use tokio_postgres::GenericClient;

use super::{Check, Options, ParityError};
use crate::control::store::Store;

/// Shapes listed per table at most (the gate reads only the top K of them).
pub const SHAPES_LISTED: i64 = 500;

/// One read shape.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ShapeReport {
    /// The legacy table it reads.
    pub table: String,
    /// 16 hex digits.
    pub fingerprint: String,
    /// The normalised statement.
    pub shape: String,
    /// Its place by executions in its table (1 = most run).
    pub rank: i64,
    /// Among the top K (gated).
    pub top: bool,
    /// Executions through Tandem, every instance together.
    pub executions: i64,
    /// Comparisons recorded.
    pub comparisons: i64,
    /// Of them, at full overlap (the same rows).
    pub full_overlap: i64,
    /// Of them, with rows that differ.
    pub differing: i64,
    /// Comparisons at full overlap since the last one whose rows differed.
    pub clean_streak: i64,
    /// Comparisons that failed, and the last error.
    pub failures: i64,
    /// The last failure's error.
    pub last_error: Option<String>,
    /// Whether the newest comparison gave the same rows (`None`: never compared).
    pub same_rows: Option<bool>,
    /// Mean overlap of the kept samples.
    pub mean_overlap: Option<f64>,
    /// Lowest overlap of the kept samples.
    pub min_overlap: Option<f64>,
    /// Mean rows per read, legacy.
    pub legacy_rows: Option<f64>,
    /// Mean rows per read, target.
    pub target_rows: Option<f64>,
    /// Legacy statement time, median, ms.
    pub legacy_ms_p50: Option<f64>,
    /// Legacy statement time, 95th percentile, ms.
    pub legacy_ms_p95: Option<f64>,
    /// Target statement time, median, ms.
    pub target_ms_p50: Option<f64>,
    /// Target statement time, 95th percentile, ms.
    pub target_ms_p95: Option<f64>,
    /// target p50 / legacy p50 (above 1: slower on the target).
    pub ratio: Option<f64>,
    /// Slower on the target beyond the gate's factor and floor.
    pub slower: bool,
    /// `EXPLAIN` on legacy, kept when a comparison found the target slower.
    pub legacy_plan: Option<String>,
    /// `EXPLAIN` on the target, likewise.
    pub target_plan: Option<String>,
    /// What the plans suggest (a sequential scan the legacy plan does not have...).
    pub plan_hint: Option<String>,
}

impl ShapeReport {
    /// `same rows: yes` / `no (3 of 5 comparisons differ)` / `not compared yet`.
    pub fn rows_verdict(&self) -> String {
        match self.same_rows {
            Some(true) if self.differing > 0 => format!(
                "yes (the newest {}; {} of {} comparisons differed before)",
                self.clean_streak, self.differing, self.comparisons
            ),
            Some(true) => "yes".into(),
            Some(false) => format!(
                "no ({} of {} comparisons differ)",
                self.differing, self.comparisons
            ),
            None if self.failures > 0 => format!(
                "not compared: {} failed ({})",
                self.failures,
                self.last_error.as_deref().unwrap_or("")
            ),
            None => "not compared yet".into(),
        }
    }

    /// `2.4x slower` / `1.3x faster` / `same` / `unknown`.
    pub fn speed_verdict(&self) -> String {
        match self.ratio {
            Some(r) if r >= 1.05 => format!("{r:.1}x slower"),
            Some(r) if r > 0.0 && r <= 0.95 => format!("{:.1}x faster", 1.0 / r),
            Some(_) => "same".into(),
            None => "unknown".into(),
        }
    }
}

/// The read shapes of one table, with the gate's parameters.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReadShapes {
    /// `shadow.top_k`.
    pub top_k: i64,
    /// `shadow.min_comparisons`.
    pub min_comparisons: i64,
    /// Top-K shapes compared `min_comparisons` times at full overlap, over the top-K
    /// shapes (`None`: no shape recorded).
    pub coverage: Option<f64>,
    /// Shapes recorded for the table (more than listed when beyond `SHAPES_LISTED`).
    pub recorded: i64,
    /// The shapes, most run first.
    pub shapes: Vec<ShapeReport>,
}

/// The shapes of `table` (every table when `None`), most run first, at most `limit` per
/// table; `top_k` marks the gated ones; `factor` and `floor_ms` decide `slower`.
pub async fn load(
    client: &impl GenericClient,
    store: &Store,
    table: Option<&str>,
    top_k: i64,
    limit: i64,
    factor: f64,
    floor_ms: f64,
) -> Result<Vec<ShapeReport>, tokio_postgres::Error> {
    let shapes = store.qualified("shadow_shapes");
    let samples = store.qualified("shadow_samples");
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&shapes])
        .await?
        .get(0);
    if !exists {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            &format!(
                "SELECT * FROM (SELECT s.rule_table, s.fingerprint, s.shape, s.executions, \
                   s.comparisons, s.full_overlap, s.differing, s.failures, s.last_error, \
                   s.legacy_plan, s.target_plan, row_number() OVER (PARTITION BY s.rule_table \
                     ORDER BY s.executions DESC, s.fingerprint) AS rank, \
                   x.mean, x.low, x.lrows, x.trows, x.l50, x.l95, x.t50, x.t95, s.clean_streak \
                 FROM {shapes} s LEFT JOIN LATERAL (SELECT avg(overlap)::float8 AS mean, \
                   min(overlap)::float8 AS low, avg(legacy_rows)::float8 AS lrows, \
                   avg(target_rows)::float8 AS trows, \
                   (percentile_cont(0.5) WITHIN GROUP (ORDER BY legacy_ms))::float8 AS l50, \
                   (percentile_cont(0.95) WITHIN GROUP (ORDER BY legacy_ms))::float8 AS l95, \
                   (percentile_cont(0.5) WITHIN GROUP (ORDER BY target_ms))::float8 AS t50, \
                   (percentile_cont(0.95) WITHIN GROUP (ORDER BY target_ms))::float8 AS t95 \
                   FROM {samples} x WHERE x.rule_table = s.rule_table \
                     AND x.fingerprint = s.fingerprint) x ON true \
                 WHERE $1::text IS NULL OR s.rule_table = $1) r \
                 WHERE rank <= $2 ORDER BY rule_table, rank"
            ),
            &[&table, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let rank: i64 = r.get(11);
            let comparisons: i64 = r.get(4);
            let differing: i64 = r.get(6);
            let clean_streak: i64 = r.get(20);
            let legacy_ms_p50: Option<f64> = r.get(16);
            let target_ms_p50: Option<f64> = r.get(18);
            let ratio = match (legacy_ms_p50, target_ms_p50) {
                (Some(l), Some(t)) if l > 0.0 => Some(t / l),
                _ => None,
            };
            let slower = match (legacy_ms_p50, target_ms_p50) {
                (Some(l), Some(t)) => t > factor * l && t - l >= floor_ms,
                _ => false,
            };
            let legacy_plan: Option<String> = r.get(9);
            let target_plan: Option<String> = r.get(10);
            ShapeReport {
                table: r.get(0),
                fingerprint: r.get(1),
                shape: r.get(2),
                rank,
                top: rank <= top_k,
                executions: r.get(3),
                comparisons,
                full_overlap: r.get(5),
                differing,
                clean_streak,
                failures: r.get(7),
                last_error: r.get(8),
                same_rows: (comparisons > 0).then_some(clean_streak > 0 || differing == 0),
                mean_overlap: r.get(12),
                min_overlap: r.get(13),
                legacy_rows: r.get(14),
                target_rows: r.get(15),
                legacy_ms_p50,
                legacy_ms_p95: r.get(17),
                target_ms_p50,
                target_ms_p95: r.get(19),
                ratio,
                slower,
                plan_hint: match (&legacy_plan, &target_plan) {
                    (Some(l), Some(t)) => plan_hint(l, t),
                    _ => None,
                },
                legacy_plan,
                target_plan,
            }
        })
        .collect())
}

/// What two plans suggest about a slower target: a sequential scan where legacy uses an
/// index, or many partitions scanned (the partition key not used).
pub fn plan_hint(legacy: &str, target: &str) -> Option<String> {
    let count = |plan: &str, what: &str| plan.matches(what).count();
    let legacy_seq = count(legacy, "Seq Scan on");
    let target_seq = count(target, "Seq Scan on");
    let legacy_index = count(legacy, "Index Scan")
        + count(legacy, "Index Only Scan")
        + count(legacy, "Bitmap Index Scan");
    let target_index = count(target, "Index Scan")
        + count(target, "Index Only Scan")
        + count(target, "Bitmap Index Scan");
    let target_scans = target
        .lines()
        .filter(|l| l.contains(" on ") && l.contains("Scan"))
        .count();
    let mut hints = Vec::new();
    if target_seq > legacy_seq {
        let mut h = format!("sequential scan on the target ({target_seq} seq scan node(s))");
        if legacy_index > target_index {
            h.push_str(" where legacy uses an index: the target may lack that index");
        }
        hints.push(h);
    }
    if target.contains("Append") && target_scans > 1 {
        hints.push(format!(
            "{target_scans} relations scanned on the target: the read may not use the partition key"
        ));
    }
    (!hints.is_empty()).then(|| hints.join("; "))
}

/// Summarises `shapes` (one table's) for the report.
pub fn summarise(
    shapes: Vec<ShapeReport>,
    recorded: i64,
    top_k: i64,
    min_comparisons: i64,
) -> ReadShapes {
    let top: Vec<&ShapeReport> = shapes.iter().filter(|s| s.top).collect();
    let covered = top
        .iter()
        .filter(|s| s.clean_streak >= min_comparisons)
        .count();
    ReadShapes {
        top_k,
        min_comparisons,
        coverage: (!top.is_empty()).then(|| covered as f64 / top.len() as f64),
        recorded,
        shapes,
    }
}

/// One shape, short: `3fa2c1d0e9b87a65 "select ... where note = ?"`.
fn named(s: &ShapeReport) -> String {
    let mut text: String = s.shape.chars().take(120).collect();
    if s.shape.chars().count() > 120 {
        text.push('…');
    }
    format!("{} \"{text}\"", s.fingerprint)
}

/// The gate's shape checks: `shape_coverage` (unless `min_coverage` is 0) and
/// `shape_slowdown` (unless `max_slowdown` is 0).
pub fn checks(r: &ReadShapes, min_coverage: f64, max_slowdown: f64, floor_ms: f64) -> Vec<Check> {
    let mut out = Vec::new();
    let top: Vec<&ShapeReport> = r.shapes.iter().filter(|s| s.top).collect();
    if min_coverage > 0.0 {
        let short: Vec<&&ShapeReport> = top
            .iter()
            .filter(|s| s.clean_streak < r.min_comparisons)
            .collect();
        let detail = match r.coverage {
            None => "no read shapes recorded yet: run the application's reads through Tandem with the rule's sample rate on (SET RULE ... SAMPLE)".to_string(),
            Some(c) => {
                let mut d = format!(
                    "{} of {} top shapes compared at least {} times at full overlap ({:.0}%, need {:.0}%)",
                    top.len() - short.len(),
                    top.len(),
                    r.min_comparisons,
                    c * 100.0,
                    min_coverage * 100.0
                );
                let mut differ: Vec<String> = short
                    .iter()
                    .filter(|s| s.same_rows == Some(false))
                    .map(|s| format!("{}: rows differ in {} of {} comparisons", named(s), s.differing, s.comparisons))
                    .collect();
                let waiting: Vec<String> = short
                    .iter()
                    .filter(|s| s.same_rows != Some(false))
                    .map(|s| {
                        if s.failures > 0 && s.clean_streak == 0 {
                            format!("{}: {} comparisons failed ({})", named(s), s.failures, s.last_error.as_deref().unwrap_or(""))
                        } else {
                            format!("{}: {} of {} comparisons at full overlap in a row", named(s), s.clean_streak, r.min_comparisons)
                        }
                    })
                    .collect();
                if !differ.is_empty() {
                    d.push_str("; differ: ");
                    differ.truncate(10);
                    d.push_str(&differ.join("; "));
                }
                if !waiting.is_empty() {
                    d.push_str("; not compared enough yet: ");
                    d.push_str(&waiting.iter().take(10).cloned().collect::<Vec<_>>().join("; "));
                }
                d
            }
        };
        out.push(Check {
            name: "shape_coverage",
            ok: r.coverage.is_some_and(|c| c >= min_coverage),
            detail,
        });
    }
    if max_slowdown > 0.0 {
        let slower: Vec<String> = top
            .iter()
            .filter_map(|s| {
                let (l, t) = (s.legacy_ms_p50?, s.target_ms_p50?);
                (t > max_slowdown * l && t - l >= floor_ms).then(|| {
                    let mut d = format!(
                        "{}: {:.1}x slower on the target (median {:.2} ms vs {:.2} ms on legacy)",
                        named(s),
                        s.ratio.unwrap_or(f64::INFINITY),
                        t,
                        l
                    );
                    if let Some(h) = &s.plan_hint {
                        d.push_str(&format!(" — {h}"));
                    }
                    d
                })
            })
            .collect();
        let timed = top.iter().filter(|s| s.ratio.is_some()).count();
        out.push(Check {
            name: "shape_slowdown",
            ok: slower.is_empty(),
            detail: if slower.is_empty() {
                format!(
                    "no top shape is more than {max_slowdown}x slower on the target ({timed} of {} timed; differences under {floor_ms} ms ignored)",
                    top.len()
                )
            } else {
                format!(
                    "{} top shape(s) more than {max_slowdown}x slower on the target: {}",
                    slower.len(),
                    slower.join("; ")
                )
            },
        });
    }
    out
}

/// The read shapes of `table`, for its report.
pub(super) async fn of_table(
    tx: &tokio_postgres::Transaction<'_>,
    names: &Store,
    table: &tandem_rules::TableName,
    options: &Options,
    config: &crate::config::ShadowConfig,
) -> Result<ReadShapes, ParityError> {
    let table = table.to_string();
    let list = load(
        tx,
        names,
        Some(&table),
        config.top_k,
        SHAPES_LISTED,
        options.max_slowdown.max(1.0),
        options.slowdown_floor_ms,
    )
    .await?;
    let recorded: i64 = if list.is_empty() {
        0
    } else {
        tx.query_one(
            &format!(
                "SELECT count(*)::int8 FROM {} WHERE rule_table = $1",
                names.qualified("shadow_shapes")
            ),
            &[&table],
        )
        .await?
        .get(0)
    };
    Ok(summarise(
        list,
        recorded,
        config.top_k,
        config.min_comparisons,
    ))
}

fn ms(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into())
}

/// The shapes as text lines for the terminal report.
pub fn text(r: &ReadShapes) -> String {
    if r.shapes.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "  read shapes ({} recorded; top {} gated, {} comparisons each):\n    {:<4} {:<16} {:>10} {:>6} {:<10} {:>13} {:>6} {:>19} {:>19}  {}\n",
        r.recorded, r.top_k, r.min_comparisons, "rank", "fingerprint", "executions", "compared", "same rows", "overlap mean/min", "rows", "legacy ms p50/p95", "target ms p50/p95", "target vs legacy, shape"
    );
    for s in &r.shapes {
        let text: String = s.shape.chars().take(80).collect();
        out.push_str(&format!(
            "    {:<4} {:<16} {:>10} {:>8} {:<10} {:>13} {:>6} {:>19} {:>19}  {}: {}\n",
            format!("{}{}", s.rank, if s.top { "" } else { "*" }),
            s.fingerprint,
            s.executions,
            s.comparisons,
            match s.same_rows {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "-",
            },
            match (s.mean_overlap, s.min_overlap) {
                (Some(a), Some(b)) => format!("{a:.3}/{b:.3}"),
                _ => "-".into(),
            },
            s.legacy_rows
                .map(|x| format!("{x:.0}"))
                .unwrap_or_else(|| "-".into()),
            format!("{}/{}", ms(s.legacy_ms_p50), ms(s.legacy_ms_p95)),
            format!("{}/{}", ms(s.target_ms_p50), ms(s.target_ms_p95)),
            s.speed_verdict(),
            text
        ));
    }
    for s in r.shapes.iter().filter(|s| s.slower) {
        out.push_str(&format!(
            "    {} is {} on the target",
            s.fingerprint,
            s.speed_verdict()
        ));
        if let Some(h) = &s.plan_hint {
            out.push_str(&format!(": {h}"));
        }
        out.push('\n');
        for (side, plan) in [("legacy", &s.legacy_plan), ("target", &s.target_plan)] {
            if let Some(p) = plan {
                out.push_str(&format!("      {side} plan:\n"));
                for line in p.lines() {
                    out.push_str(&format!("        {line}\n"));
                }
            }
        }
    }
    out
}

/// The shapes as an HTML section.
pub fn html(r: &ReadShapes, esc: impl Fn(&str) -> String) -> String {
    if r.shapes.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "<h3>read shapes</h3><p>{} recorded; the top {} by executions are gated, each wanting {} comparisons at full overlap; coverage {}</p>\
         <table><tr><th>rank</th><th>shape</th><th>executions</th><th>comparisons</th><th>same rows</th><th>overlap mean / min</th><th>rows legacy / target</th><th>legacy ms p50 / p95</th><th>target ms p50 / p95</th><th>target vs legacy</th></tr>",
        r.recorded,
        r.top_k,
        r.min_comparisons,
        r.coverage.map(|c| format!("{:.0}%", c * 100.0)).unwrap_or_else(|| "-".into())
    );
    for s in &r.shapes {
        out.push_str(&format!(
            "<tr><td>{}{}</td><td><code>{}</code><br><small>{}</small></td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{} / {}</td><td>{} / {}</td><td>{} / {}</td><td class=\"{}\">{}</td></tr>",
            s.rank,
            if s.top { "" } else { " (not gated)" },
            esc(&s.shape),
            esc(&s.fingerprint),
            s.executions,
            s.comparisons,
            match s.same_rows {
                Some(true) => "ok",
                Some(false) => "fail",
                None => "",
            },
            esc(&s.rows_verdict()),
            match (s.mean_overlap, s.min_overlap) {
                (Some(a), Some(b)) => format!("{a:.3} / {b:.3}"),
                _ => "-".into(),
            },
            s.legacy_rows.map(|x| format!("{x:.0}")).unwrap_or_else(|| "-".into()),
            s.target_rows.map(|x| format!("{x:.0}")).unwrap_or_else(|| "-".into()),
            ms(s.legacy_ms_p50),
            ms(s.legacy_ms_p95),
            ms(s.target_ms_p50),
            ms(s.target_ms_p95),
            if s.slower { "fail" } else { "" },
            esc(&s.speed_verdict()),
        ));
    }
    out.push_str("</table>");
    for s in r
        .shapes
        .iter()
        .filter(|s| s.slower || (s.legacy_plan.is_some() && s.top))
    {
        out.push_str(&format!(
            "<h4>{} on the target: <code>{}</code></h4>",
            esc(&s.speed_verdict()),
            esc(&s.shape)
        ));
        if let Some(h) = &s.plan_hint {
            out.push_str(&format!("<p class=\"fail\">{}</p>", esc(h)));
        }
        for (side, plan) in [("legacy", &s.legacy_plan), ("target", &s.target_plan)] {
            if let Some(p) = plan {
                out.push_str(&format!("<p>{side} plan</p><pre>{}</pre>", esc(p)));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seq_scan_where_legacy_used_an_index_is_named() {
        let legacy = "Index Scan using t_pkey on t  (cost=0.29..8.30 rows=1 width=40)\n  Index Cond: (note = 'x'::text)";
        let target = "Append  (cost=0.00..200.00 rows=4 width=40)\n  ->  Seq Scan on t_v2_h0 t_1\n        Filter: (note = 'x'::text)\n  ->  Seq Scan on t_v2_h1 t_2\n        Filter: (note = 'x'::text)";
        let hint = plan_hint(legacy, target).unwrap();
        assert!(hint.contains("sequential scan on the target"), "{hint}");
        assert!(hint.contains("lack that index"), "{hint}");
        assert!(hint.contains("2 relations scanned"), "{hint}");
        assert_eq!(plan_hint(legacy, legacy), None);
    }

    #[test]
    fn coverage_counts_top_shapes_at_full_overlap_and_names_the_rest() {
        let shape = |fp: &str, rank, full, differing, comparisons| ShapeReport {
            fingerprint: fp.into(),
            shape: format!("select {fp}"),
            rank,
            top: rank <= 2,
            full_overlap: full,
            clean_streak: full,
            differing,
            comparisons,
            same_rows: (comparisons > 0).then_some(full > 0 || differing == 0),
            ..ShapeReport::default()
        };
        let r = summarise(
            vec![
                shape("a", 1, 5, 0, 5),
                shape("b", 2, 0, 3, 3),
                shape("c", 3, 0, 0, 0),
            ],
            3,
            2,
            5,
        );
        assert_eq!(r.coverage, Some(0.5));
        let c = checks(&r, 1.0, 0.0, 1.0);
        assert_eq!(c.len(), 1);
        assert!(!c[0].ok);
        assert!(
            c[0].detail
                .contains("b \"select b\": rows differ in 3 of 3"),
            "{}",
            c[0].detail
        );
        assert!(
            !c[0].detail.contains("select c"),
            "not gated: {}",
            c[0].detail
        );
        assert!(checks(&r, 0.5, 0.0, 1.0)[0].ok);
    }
}

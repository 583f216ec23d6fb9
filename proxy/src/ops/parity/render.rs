//! The parity report for people: a text table for the terminal, a self-contained HTML page,
//! and the folder with `summary.json` and `report.html` each run writes.

use super::{ColumnDifferences, GuardDriftRow, Report, TableReport};

/// The report as a readable table.
pub fn text(report: &Report) -> String {
    let mut out = String::new();
    for t in &report.tables {
        out.push_str(&format!(
            "{} -> {} [{}]: {}\n",
            t.table,
            t.target,
            t.mode,
            if t.ready { "READY" } else { "NOT READY" }
        ));
        out.push_str(&format!(
            "  rows: legacy {} / target {} / delta {}\n  missing {} (not yet backfilled {}), extra {}, different {}; divergence {}; unresolved drift {}\n",
            t.legacy_rows,
            t.target_rows,
            t.delta,
            t.missing.count,
            t.not_yet_backfilled,
            t.extra.count,
            t.different.count,
            t.divergence,
            t.unresolved_drift
        ));
        for (kind, m) in [
            ("missing", &t.missing),
            ("extra", &t.extra),
            ("different", &t.different),
        ] {
            if !m.sample_keys.is_empty() {
                out.push_str(&format!("  {kind} keys: {}\n", m.sample_keys.join(" ")));
            }
        }
        if t.guard_drift.unresolved > 0 {
            out.push_str(&format!(
                "  guard drift: {} unresolved (changes made around the proxy), latest:\n",
                t.guard_drift.unresolved
            ));
            for d in &t.guard_drift.latest {
                out.push_str(&format!("    {}\n", guard_drift_line(d)));
            }
        }
        if !t.columns.missing_in_target.is_empty() {
            out.push_str(&format!(
                "  columns missing from the target (not mirrored): {}\n",
                t.columns.missing_in_target.join(", ")
            ));
        }
        if !t.columns.type_differs.is_empty() {
            out.push_str(&format!(
                "  column types differ (legacy -> target): {}\n",
                type_differences(&t.columns)
            ));
        }
        out.push_str(&format!(
            "  schema: {}\n",
            if t.schema.holds {
                "holds (columns, data rules, triggers, access rules, foreign keys)".to_string()
            } else {
                format!("differs ({})", t.schema.failed.join(", "))
            }
        ));
        for warning in &t.schema.warnings {
            out.push_str(&format!("  schema warning: {warning}\n"));
        }
        out.push_str(&super::shapes::text(&t.shapes));
        for c in &t.checks {
            out.push_str(&format!(
                "  [{}] {}: {}\n",
                if c.ok { "ok" } else { "FAIL" },
                c.name,
                c.detail
            ));
        }
    }
    out.push_str(&format!(
        "{} table(s), {:.2} s: {}\n",
        report.tables.len(),
        report.seconds,
        if report.ready { "ready" } else { "not ready" }
    ));
    out
}

/// One guard drift row on one line: when, what, how many rows, who, and the statement.
fn guard_drift_line(d: &GuardDriftRow) -> String {
    let rows = d.rows.map(|n| format!(" {n} row(s)")).unwrap_or_default();
    let statement: String = d
        .statement
        .as_deref()
        .unwrap_or("")
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!(
        "{} {}{rows} by {} ({}): {}",
        d.at,
        d.operation,
        d.role.as_deref().unwrap_or("?"),
        d.application_name.as_deref().unwrap_or(""),
        statement
    )
}

/// `col legacy_type -> target_type, ...`.
fn type_differences(c: &ColumnDifferences) -> String {
    c.type_differs
        .iter()
        .map(|d| format!("{} {} -> {}", d.column, d.legacy_type, d.target_type))
        .collect::<Vec<_>>()
        .join(", ")
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The schema section of one table: each legacy column, data rule, index and trigger with
/// its counterpart on the target (or what stands in for it), then access rules and foreign
/// keys.
fn schema_section(t: &TableReport) -> String {
    let c = &t.columns;
    let mut out = format!(
        "<h3>schema: <span class=\"{}\">{}</span></h3>",
        if t.schema.holds { "ok" } else { "fail" },
        if t.schema.holds {
            "holds".to_string()
        } else {
            format!("differs ({})", t.schema.failed.join(", "))
        }
    );
    out.push_str("<table><tr><th>legacy column</th><th>on the target</th></tr>");
    let mut row = |legacy: &str, target: String, ok: bool| {
        out.push_str(&format!(
            "<tr><td><code>{}</code></td><td class=\"{}\">{}</td></tr>",
            esc(legacy),
            if ok { "ok" } else { "fail" },
            esc(&target)
        ));
    };
    for name in &c.compared {
        let (legacy, computed) = match name.split_once(" = ") {
            Some((column, expr)) => (expr.to_string(), Some(column)),
            None => (name.clone(), None),
        };
        let text = match (computed, c.type_differs.iter().find(|d| &d.column == name)) {
            (Some(column), _) => format!("{column}, computed by the rule's set, compared"),
            (None, Some(d)) if c.narrowed.contains(name) => format!(
                "{name} {} (narrowed from {}: not every value fits)",
                d.target_type, d.legacy_type
            ),
            (None, Some(d)) => format!(
                "{name} {} (widened from {}), compared",
                d.target_type, d.legacy_type
            ),
            (None, None) => format!("{name}, same type, compared"),
        };
        row(&legacy, text, !c.narrowed.contains(name));
    }
    let lost: Vec<&String> = c.lost().collect();
    for name in &c.missing_in_target {
        let values = c
            .missing_values
            .iter()
            .find(|m| &m.column == name)
            .map(|m| format!(", {} non-null values would be lost", m.non_null))
            .unwrap_or_default();
        let text = if c.dropped.contains(name) {
            "left behind on purpose (drop_columns)".to_string()
        } else if let Some(carried) = c
            .carried
            .iter()
            .find(|x| x.starts_with(&format!("{name} -> ")))
        {
            format!("carried by the rule's set ({carried})")
        } else {
            format!("missing{values}")
        };
        row(name, text, !lost.contains(&name));
    }
    for s in c.set_columns.iter().filter(|s| s.not_compared.is_some()) {
        row(
            &s.expr,
            format!(
                "{} (set by the rule, not compared: {})",
                s.column,
                s.not_compared.as_deref().unwrap_or("")
            ),
            true,
        );
    }
    out.push_str("</table>");
    out.push_str("<table><tr><th>legacy rule</th><th>on the target</th></tr>");
    let k = &t.constraints;
    for kept in &k.kept {
        out.push_str(&format!(
            "<tr><td>{} <code>{}</code></td><td class=\"ok\"><code>{}</code></td></tr>",
            kept.kind,
            esc(&kept.legacy),
            esc(&kept.target)
        ));
    }
    for (kind, list, fails) in [
        ("NOT NULL", &k.not_null, true),
        ("CHECK", &k.checks, true),
        ("unique", &k.unique, true),
        ("index", &k.indexes, false),
    ] {
        for legacy in list {
            out.push_str(&format!(
                "<tr><td>{kind} <code>{}</code></td><td class=\"{}\">missing{}</td></tr>",
                esc(legacy),
                if fails { "fail" } else { "" },
                if fails {
                    ""
                } else {
                    " (a warning: reads get slower, nothing is lost)"
                }
            ));
        }
    }
    for trigger in &t.triggers {
        out.push_str(&format!(
            "<tr><td>trigger <code>{}</code></td><td class=\"{}\">{}</td></tr>",
            esc(&trigger.name),
            if trigger.lost() || trigger.fires_twice() {
                "fail"
            } else {
                "ok"
            },
            esc(&trigger.describe())
        ));
    }
    out.push_str("</table>");
    for check in t
        .checks
        .iter()
        .filter(|c| c.name == "access" || c.name == "foreign_keys")
    {
        out.push_str(&format!(
            "<p class=\"{}\">{}: {}</p>",
            if check.ok { "ok" } else { "fail" },
            check.name,
            esc(&check.detail)
        ));
    }
    out
}

/// The report as a self-contained HTML page: a summary table per table and, when there are
/// shadow samples, a chart of overlap over time (inline SVG, no scripts, no network).
pub fn html(report: &Report) -> String {
    let mut body = String::new();
    for t in &report.tables {
        body.push_str(&format!(
            "<section><h2>{} &rarr; {} <span class=\"{}\">{}</span></h2>",
            esc(&t.table),
            esc(&t.target),
            if t.ready { "ok" } else { "fail" },
            if t.ready { "ready" } else { "not ready" }
        ));
        body.push_str(&format!(
            "<table><tr><th>mode</th><th>legacy rows</th><th>target rows</th><th>delta</th><th>missing</th><th>not yet backfilled</th><th>extra</th><th>different</th><th>divergence</th><th>drift</th></tr>\
             <tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
            esc(&t.mode), t.legacy_rows, t.target_rows, t.delta, t.missing.count,
            t.not_yet_backfilled, t.extra.count, t.different.count, t.divergence, t.unresolved_drift
        ));
        body.push_str(&format!(
            "<p>guard: {} ({}{})</p>",
            esc(&t.guard.policy),
            esc(&t.guard.state),
            if t.guard.follows_ddl || t.guard.state != "in place" {
                ""
            } else {
                ", column changes not followed"
            }
        ));
        body.push_str("<ul>");
        for c in &t.checks {
            body.push_str(&format!(
                "<li class=\"{}\">{}: {}</li>",
                if c.ok { "ok" } else { "fail" },
                c.name,
                esc(&c.detail)
            ));
        }
        body.push_str("</ul>");
        if t.guard_drift.unresolved > 0 {
            body.push_str(&format!(
                "<p>guard drift: {} unresolved (changes made around the proxy), latest:</p>\
                 <table><tr><th>at (UTC)</th><th>operation</th><th>rows</th><th>role</th><th>application_name</th><th>statement</th></tr>",
                t.guard_drift.unresolved
            ));
            for d in &t.guard_drift.latest {
                body.push_str(&format!(
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                    esc(&d.at),
                    esc(&d.operation),
                    d.rows.map(|n| n.to_string()).unwrap_or_default(),
                    esc(d.role.as_deref().unwrap_or("")),
                    esc(d.application_name.as_deref().unwrap_or("")),
                    esc(d.statement.as_deref().unwrap_or(""))
                ));
            }
            body.push_str("</table>");
        }
        body.push_str(&schema_section(t));
        if !t.columns.missing_in_target.is_empty() {
            body.push_str(&format!(
                "<p>columns missing from the target (not mirrored): <code>{}</code></p>",
                esc(&t.columns.missing_in_target.join(", "))
            ));
        }
        if !t.columns.type_differs.is_empty() {
            body.push_str(&format!(
                "<p>column types differ (legacy &rarr; target): <code>{}</code></p>",
                esc(&type_differences(&t.columns))
            ));
        }
        for (kind, m) in [
            ("missing", &t.missing),
            ("extra", &t.extra),
            ("different", &t.different),
        ] {
            if !m.sample_keys.is_empty() {
                body.push_str(&format!(
                    "<p>{kind} keys: <code>{}</code></p>",
                    esc(&m.sample_keys.join(" "))
                ));
            }
        }
        body.push_str(&super::shapes::html(&t.shapes, esc));
        if t.shadow.series.len() > 1 {
            let (x0, x1) = (
                t.shadow.series[0].0,
                t.shadow.series[t.shadow.series.len() - 1].0,
            );
            let span = (x1 - x0).max(1e-9);
            let points: Vec<String> = t
                .shadow
                .series
                .iter()
                .map(|(x, y)| {
                    format!(
                        "{:.1},{:.1}",
                        (x - x0) / span * 580.0 + 10.0,
                        (1.0 - y) * 180.0 + 10.0
                    )
                })
                .collect();
            let threshold_y = (1.0 - report.min_overlap) * 180.0 + 10.0;
            body.push_str(&format!(
                "<p>shadow-read overlap over time ({} samples, threshold {:.2})</p>\
                 <svg width=\"600\" height=\"200\" viewBox=\"0 0 600 200\"><rect x=\"0\" y=\"0\" width=\"600\" height=\"200\" fill=\"#fafafa\"/>\
                 <line x1=\"10\" x2=\"590\" y1=\"{threshold_y:.1}\" y2=\"{threshold_y:.1}\" stroke=\"#c00\" stroke-dasharray=\"4\"/>\
                 <polyline fill=\"none\" stroke=\"#06c\" points=\"{}\"/></svg>",
                t.shadow.samples,
                report.min_overlap,
                points.join(" ")
            ));
        }
        body.push_str("</section>");
    }
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Tandem parity {id}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px}}\
         .ok{{color:#070}}.fail{{color:#c00}}code{{word-break:break-all}}</style></head>\
         <body><h1>Tandem parity report {id}: {verdict}</h1><p>{n} table(s), {secs:.2} s, minimum overlap {mo:.2}</p>{body}</body></html>",
        id = esc(&report.run_id),
        verdict = if report.ready { "ready" } else { "not ready" },
        n = report.tables.len(),
        secs = report.seconds,
        mo = report.min_overlap,
    )
}

/// Writes `summary.json` and `report.html` under `<out>/<run_id>/`; returns the folder.
pub fn write(report: &Report, out: &std::path::Path) -> std::io::Result<std::path::PathBuf> {
    let dir = out.join(&report.run_id);
    std::fs::create_dir_all(&dir)?;
    let json = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("summary.json"), json)?;
    std::fs::write(dir.join("report.html"), html(report))?;
    Ok(dir)
}

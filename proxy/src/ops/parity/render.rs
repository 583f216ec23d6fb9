//! The parity report for people: a text table for the terminal, a self-contained HTML page,
//! and the folder with `summary.json` and `report.html` each run writes.

use super::{ColumnDifferences, GuardDriftRow, Report};

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

/// The report as a self-contained HTML page: a summary table per table and, when there are
/// shadow samples, a chart of overlap over time (inline SVG, no scripts, no network).
pub fn html(report: &Report) -> String {
    fn esc(s: &str) -> String {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    }
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

//! The exposition: [`Facts`] as OpenMetrics text, written by `prometheus-client`.
//!
//! The values are read before rendering, so the collector below only walks a plain struct:
//! each family is one descriptor (name, help, type) and one sample per label set.

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType::{self, Counter, Gauge, Histogram};
use prometheus_client::registry::Registry;

use super::Facts;

/// Renders one scrape.
pub fn text(facts: Facts) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Exposition(facts)));
    let mut out = String::new();
    // Writing to a String cannot fail; an encoder error would be a bug in a label, and
    // the scrape then shows what was written before it.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::warn!(error = %e, "metrics: cannot encode a scrape");
    }
    out
}

#[derive(Debug)]
struct Exposition(Facts);

/// A sample's labels.
type Labels<'a> = Vec<(&'static str, &'a str)>;

/// Writes one family: its descriptor, then one sample per label set.
fn family<'a>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (Labels<'a>, f64)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = e.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in samples {
        let encoder = metric.encode_family(&labels)?;
        match kind {
            Counter => ConstCounter::new(value as u64).encode(encoder)?,
            _ => ConstGauge::new(value).encode(encoder)?,
        }
    }
    Ok(())
}

/// A family of one unlabelled sample.
fn single(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    value: u64,
) -> Result<(), std::fmt::Error> {
    family(e, name, help, kind, [(vec![], value as f64)])
}

impl prometheus_client::collector::Collector for Exposition {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let f = &self.0;
        let s = &f.stats;
        let e = &mut e;
        single(
            e,
            "tandem_sessions_accepted",
            "Client connections accepted since start.",
            Counter,
            s.sessions_total,
        )?;
        single(
            e,
            "tandem_sessions_active",
            "Client sessions open now.",
            Gauge,
            s.sessions_active,
        )?;
        single(
            e,
            "tandem_sessions_refused",
            "Connections refused for limits.max_clients (53300).",
            Counter,
            s.sessions_refused,
        )?;
        single(
            e,
            "tandem_client_received_bytes",
            "Bytes relayed from clients to the server.",
            Counter,
            s.bytes_from_clients,
        )?;
        single(
            e,
            "tandem_client_sent_bytes",
            "Bytes relayed from the server to clients.",
            Counter,
            s.bytes_to_clients,
        )?;
        single(
            e,
            "tandem_queries",
            "Simple queries plus extended-protocol Executes from clients.",
            Counter,
            s.queries,
        )?;
        single(
            e,
            "tandem_cancels",
            "Cancel requests forwarded.",
            Counter,
            s.cancels,
        )?;
        family(
            e,
            "tandem_search_path_checks",
            "Times a ruled session's search_path was confirmed before planning, by how: a hidden probe query (one server round trip) or the server's own ParameterStatus report (PostgreSQL 18, no round trip).",
            Counter,
            [
                (vec![("how", "probe")], s.search_path_probes as f64),
                (vec![("how", "report")], s.search_path_reports as f64),
            ],
        )?;
        family(
            e,
            "tandem_errors",
            "ErrorResponses the server sent to clients, by SQLSTATE.",
            Counter,
            f.errors_by_code
                .iter()
                .map(|(code, n)| (vec![("sqlstate", code.as_str())], *n as f64)),
        )?;
        family(
            e,
            "tandem_refusals",
            "Statements Tandem refused (raised as errors), by SQLSTATE and legacy table.",
            Counter,
            f.refusals.iter().map(|((code, table), n)| {
                (
                    vec![("sqlstate", code.as_str()), ("table", table.as_str())],
                    *n as f64,
                )
            }),
        )?;
        family(
            e,
            "tandem_mirrored_statements",
            "Mirrored writes completed, per rule (legacy table).",
            Counter,
            f.mirrored
                .iter()
                .map(|(table, n, _)| (vec![("table", table.as_str())], *n as f64)),
        )?;
        family(
            e,
            "tandem_mirrored_rows",
            "Rows written by mirrored writes, per rule, as their command tags say.",
            Counter,
            f.mirrored
                .iter()
                .map(|(table, _, n)| (vec![("table", table.as_str())], *n as f64)),
        )?;
        if let Some((to_server, to_client)) = &f.added {
            let mut metric = e.encode_descriptor(
                "tandem_added_latency_seconds",
                "Tandem's own time per forwarded batch, from the bytes arriving to their write onward (to_server includes planning, rewriting and search_path probes).",
                None,
                Histogram,
            )?;
            for (direction, h) in [("to_server", to_server), ("to_client", to_client)] {
                metric
                    .encode_family(&vec![("direction", direction)])?
                    .encode_histogram::<NoLabelSet>(h.sum_seconds, h.count, &h.buckets, None)?;
            }
        }
        if let Some(counts) = &f.shadow {
            family(
                e,
                "tandem_shadow_samples",
                "Shadow-read samples by outcome: queued, dropped (queue full), recorded, failed.",
                Counter,
                ["queued", "dropped", "recorded", "failed"]
                    .into_iter()
                    .zip(counts)
                    .map(|(r, n)| (vec![("result", r)], *n as f64)),
            )?;
        }
        if let Some(n) = f.shadow_coverage {
            single(
                e,
                "tandem_shadow_coverage_samples",
                "Shadow-read samples queued because their query shape still wanted comparisons (coverage), not by the random draw.",
                Counter,
                n,
            )?;
        }
        if let Some((tracked, untracked)) = f.shapes {
            single(
                e,
                "tandem_shadow_shapes_tracked",
                "Read shapes this instance counts (at most shadow.max_shapes).",
                Gauge,
                tracked,
            )?;
            single(
                e,
                "tandem_shadow_shapes_untracked",
                "Executions of new read shapes not tracked because shadow.max_shapes was reached.",
                Counter,
                untracked,
            )?;
        }
        if let Some(counts) = &f.drift {
            family(
                e,
                "tandem_drift_records",
                "Drift records of on_mirror_error = record: queued, written to tandem.drift, lost.",
                Counter,
                ["queued", "written", "lost"]
                    .into_iter()
                    .zip(counts)
                    .map(|(r, n)| (vec![("result", r)], *n as f64)),
            )?;
        }
        if let Some((version, listening, failing)) = f.watch {
            single(
                e,
                "tandem_rules_version",
                "Rule store version this instance applies.",
                Gauge,
                version,
            )?;
            single(
                e,
                "tandem_rules_listening",
                "1 while the rule watch LISTENs for changes.",
                Gauge,
                u64::from(listening),
            )?;
            single(
                e,
                "tandem_rules_reload_failing",
                "1 when the last reload of the rules failed (the previous rules stay in force).",
                Gauge,
                u64::from(failing),
            )?;
            family(
                e,
                "tandem_rule_mode",
                "1 for each rule this instance applies, with its mode.",
                Gauge,
                f.rules.iter().map(|(table, target, mode)| {
                    (
                        vec![
                            ("table", table.as_str()),
                            ("target", target.as_str()),
                            ("mode", mode.as_str()),
                        ],
                        1.0,
                    )
                }),
            )?;
        }
        if let Some(store) = &f.store {
            single(
                e,
                "tandem_store_up",
                "1 when this scrape read the database's figures, 0 when it could not.",
                Gauge,
                u64::from(store.is_ok()),
            )?;
            if let Ok(store) = store {
                family(
                    e,
                    "tandem_backfill_rows_copied",
                    "Rows the backfill of the whole table has copied.",
                    Gauge,
                    store
                        .backfill
                        .iter()
                        .map(|(table, _, n)| (vec![("table", table.as_str())], *n as f64)),
                )?;
                family(
                    e,
                    "tandem_backfill_finished",
                    "1 when the backfill of the whole table has finished.",
                    Gauge,
                    store.backfill.iter().map(|(table, status, _)| {
                        (
                            vec![("table", table.as_str())],
                            f64::from(u8::from(status == "finished")),
                        )
                    }),
                )?;
                family(
                    e,
                    "tandem_legacy_rows_estimate",
                    "Planner estimate of each rule's legacy rows (absent until analysed).",
                    Gauge,
                    store
                        .legacy_rows
                        .iter()
                        .map(|(table, n)| (vec![("table", table.as_str())], *n as f64)),
                )?;
                family(e, "tandem_drift_unresolved", "Unresolved rows in tandem.drift, by table and source (mirror: let through unmirrored; guard: recorded by the guard).", Gauge,
                    store.drift.iter().map(|(table, source, n)| (vec![("table", table.as_str()), ("source", source.as_str())], *n as f64)))?;
                family(
                    e,
                    "tandem_shadow_samples_kept",
                    "Shadow samples kept in the store per table.",
                    Gauge,
                    store
                        .shadow
                        .iter()
                        .map(|(table, n, _, _)| (vec![("table", table.as_str())], *n as f64)),
                )?;
                family(
                    e,
                    "tandem_shadow_overlap_mean",
                    "Mean overlap of the kept shadow samples (1 = identical results).",
                    Gauge,
                    store
                        .shadow
                        .iter()
                        .map(|(table, _, m, _)| (vec![("table", table.as_str())], *m)),
                )?;
                family(
                    e,
                    "tandem_shadow_overlap_min",
                    "Lowest overlap among the kept shadow samples.",
                    Gauge,
                    store
                        .shadow
                        .iter()
                        .map(|(table, _, _, m)| (vec![("table", table.as_str())], *m)),
                )?;
                family(
                    e,
                    "tandem_guard_state",
                    "1 for each rule's guard state (in place, idle, off, missing, stale).",
                    Gauge,
                    store.guard.iter().map(|(table, state)| {
                        (
                            vec![("table", table.as_str()), ("state", state.as_str())],
                            1.0,
                        )
                    }),
                )?;
                family(
                    e,
                    "tandem_guard_firings",
                    "Statements whose change to a ruled table had not reached its mirror, caught by the guard in the database (mirrored, failed or recorded as its policy says).",
                    Counter,
                    store.guard_firings.iter().map(|(table, policy, n)| {
                        (
                            vec![("table", table.as_str()), ("policy", policy.as_str())],
                            *n as f64,
                        )
                    }),
                )?;
            }
        }
        family(
            e,
            "tandem_build_info",
            "1, labelled with this build's version.",
            Gauge,
            [(vec![("version", env!("CARGO_PKG_VERSION"))], 1.0)],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_get_total_and_the_text_ends_with_eof() {
        let mut facts = Facts::default();
        facts.stats.queries = 7;
        facts.mirrored = vec![("public.orders".into(), 2, 5)];
        facts.store = Some(Err("down".into()));
        let text = text(facts);
        assert!(text.contains("\ntandem_queries_total 7\n"), "{text}");
        assert!(
            text.contains("tandem_mirrored_rows_total{table=\"public.orders\"} 5\n"),
            "{text}"
        );
        assert!(text.contains("tandem_store_up 0"), "{text}");
        assert!(!text.contains("tandem_backfill_rows_copied"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}

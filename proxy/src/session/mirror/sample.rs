//! Shadow-read sampling from the session: which reads go to the sampler.
//!
//! A read of a ruled table is counted by its shape and offered to the
//! [sampler](crate::control::shadow) while its shape wants comparisons, or with the rule's
//! `sample_rate`; the comparison itself runs off the hot path.

use std::sync::Arc;
use std::sync::OnceLock;

use tandem_rules::{Plan, ResponseFix};

use super::client::ClientSide;
use crate::control::shapes::Description;
use crate::wire::protocol::frontend;

impl ClientSide {
    /// Maybe hands a read of a ruled table to the shadow sampler. While a rule samples,
    /// each read's shape is counted (see [`crate::control::shapes`]: one hash of the
    /// normalised text, once per prepared statement, and a lookup) and taken for
    /// comparison while its shape's coverage budget lasts; otherwise a random draw against
    /// the rule's `sample_rate`. Nothing else is paid unless sampled (then one parse, off
    /// the reply's path).
    pub(super) fn maybe_sample(
        &self,
        sql: &str,
        plan: Option<&Plan>,
        bind: Option<(&[u8], &[u8])>,
        shape: Option<&OnceLock<u64>>,
    ) {
        let Some(sampler) = &self.sampler else { return };
        let read = match plan {
            Some(Plan::Passthrough) => true,
            Some(Plan::Rewritten(s)) => {
                s.len() == 1 && matches!(s[0].response, ResponseFix::Read { .. })
            }
            _ => false,
        };
        if !read {
            return;
        }
        let max = self
            .rules
            .set
            .rules
            .iter()
            .map(|r| r.rule.sample_rate)
            .fold(0.0, f64::max);
        if max <= 0.0 {
            return;
        }
        // A read is compared only under the role and settings it ran with: not while
        // they are unconfirmed (a change in the same extended-protocol batch).
        let comparable = !self.settings_stale && self.session_view.is_some();
        let mut coverage = false;
        if let Some(shapes) = &sampler.shapes {
            let hash = match shape {
                Some(cell) => *cell.get_or_init(|| tandem_rules::query_shape(sql).hash),
                None => tandem_rules::query_shape(sql).hash,
            };
            coverage = shapes.seen(hash, comparable, || Description {
                table: tandem_rules::shadow_pair(sql, &self.rules.set, &self.search_path)
                    .map(|p| p.table),
                text: tandem_rules::query_shape(sql).text,
            });
        }
        let Some(view) = self.session_view.clone().filter(|_| comparable) else {
            return;
        };
        if !coverage && rand::random::<f64>() >= max {
            return;
        }
        let Some(pair) = tandem_rules::shadow_pair(sql, &self.rules.set, &self.search_path) else {
            return;
        };
        let rate = self
            .rules
            .set
            .rules
            .iter()
            .find(|r| r.rule.table == pair.table)
            .map_or(0.0, |r| r.rule.sample_rate);
        // A table whose own rule does not sample is never compared, coverage or not.
        // Otherwise, drawn at `max` so far: keep `rate / max` of those for this table's rate.
        if rate <= 0.0 || (!coverage && rand::random::<f64>() * max >= rate) {
            return;
        }
        // A Bind's values go along byte for byte, with the types its Parse declared.
        let (params, param_types) = match bind {
            Some((bind_body, param_types)) => match frontend::bind_params(bind_body) {
                Ok(values) => (
                    values
                        .into_iter()
                        .map(|(value, binary)| crate::control::shadow::RawParam { value, binary })
                        .collect(),
                    frontend::param_type_oids(param_types),
                ),
                Err(_) => return,
            },
            None => (Vec::new(), Vec::new()),
        };
        // A type left to the server in the middle of declared ones cannot be re-declared.
        if param_types
            .iter()
            .skip_while(|oid| **oid != 0)
            .any(|oid| *oid != 0)
        {
            return;
        }
        sampler.offer(crate::control::shadow::Job {
            pair,
            search_path: Arc::clone(&self.search_path),
            view,
            params,
            param_types,
            coverage,
        });
    }
}

//! `tandem::ops::widening::holds` is a model of PostgreSQL's types; the server checks it:
//! for every pair of types the model says holds, the legacy type's boundary values survive
//! a cast to the target type and back, on the server, unchanged.

use tandem::ops::widening::holds;
use tandem_tests::pg;

/// A type and values at its edges, as SQL literals.
const TYPES: &[(&str, &[&str])] = &[
    ("smallint", &["-32768", "32767"]),
    ("integer", &["-2147483648", "2147483647"]),
    ("bigint", &["-9223372036854775808", "9223372036854775807"]),
    ("real", &["3.4e38", "-1.5e-38", "0.1"]),
    ("double precision", &["1.7976931348623157e308", "0.1"]),
    ("numeric(10,2)", &["99999999.99", "-0.01"]),
    ("numeric(12,2)", &["9999999999.99", "0.01"]),
    ("numeric(12,0)", &["999999999999"]),
    ("numeric(5,0)", &["99999"]),
    ("numeric", &["123456789012345678901234567890.123456789"]),
    ("character varying(10)", &["'xxxxxxxxxx'"]),
    ("character varying(20)", &["'xxxxxxxxxxxxxxxxxxxx'"]),
    ("character varying", &["repeat('y', 300)"]),
    ("text", &["repeat('z', 300)"]),
    ("character(3)", &["'abc'"]),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_model_calls_widening_loses_no_value_on_the_server() {
    let check = pg().direct().await;
    let mut widenings = 0;
    for (legacy, values) in TYPES {
        for (target, _) in TYPES {
            if !holds(legacy, target) {
                continue;
            }
            widenings += 1;
            for value in *values {
                let sql = format!(
                    "SELECT CAST(CAST(CAST({value} AS {legacy}) AS {target}) AS {legacy}) \
                            IS NOT DISTINCT FROM CAST({value} AS {legacy})"
                );
                let same: bool = check
                    .query_one(&sql, &[])
                    .await
                    .unwrap_or_else(|e| panic!("{legacy} -> {target} with {value}: {e}"))
                    .get(0);
                assert!(same, "{legacy} -> {target} changes {value}");
            }
        }
    }
    assert!(widenings > TYPES.len(), "the model allowed only identities");
}

//! Whether a target column's type holds every value the legacy column's type can hold.
//!
//! The parity gate fails on a column the target would narrow (numeric(12,2) -> integer,
//! text -> varchar(10), timestamptz -> timestamp): values that fit today may not tomorrow,
//! and a cast that rounds or truncates loses data silently. Types are compared as
//! `format_type` prints them. Same type, or a known widening (smallint -> integer -> bigint
//! -> numeric, real -> double precision, varchar(n) -> varchar(m >= n) or text, char(n) ->
//! text, numeric(p, s) -> numeric with as many integer and fraction digits, or unbounded
//! numeric), holds; anything else does not — including timestamp <-> timestamptz, whose
//! values are reinterpreted by the session's time zone.

/// Does `target` (a `format_type` string) hold every value of `legacy`?
pub fn holds(legacy: &str, target: &str) -> bool {
    if legacy == target {
        return true;
    }
    let rank = |t: &str| match t {
        "smallint" => Some(1),
        "integer" => Some(2),
        "bigint" => Some(3),
        _ => None,
    };
    match (rank(legacy), rank(target)) {
        (Some(a), Some(b)) => return a <= b,
        (Some(_), None) if target == "numeric" => return true,
        (Some(a), None) => {
            // integer kinds into numeric(p, 0) with enough digits
            if let Some((p, s)) = numeric(target) {
                let digits = [0, 5, 10, 19][a];
                return p - s >= digits;
            }
            return false;
        }
        _ => {}
    }
    if legacy == "real" && target == "double precision" {
        return true;
    }
    if let Some(n) = length(legacy, "character varying") {
        return target == "text"
            || target == "character varying"
            || length(target, "character varying").is_some_and(|m| m >= n);
    }
    if legacy == "character varying" {
        return target == "text";
    }
    if let Some(n) = length(legacy, "character") {
        return target == "text"
            || target == "character varying"
            || length(target, "character varying").is_some_and(|m| m >= n)
            || length(target, "character").is_some_and(|m| m == n);
    }
    if legacy == "text" {
        return target == "character varying";
    }
    if let Some((p, s)) = numeric(legacy) {
        if target == "numeric" {
            return true;
        }
        if let Some((p2, s2)) = numeric(target) {
            return s2 >= s && p2 - s2 >= p - s;
        }
    }
    false
}

/// `n` of `name(n)`.
fn length(t: &str, name: &str) -> Option<u32> {
    t.strip_prefix(name)?
        .strip_prefix('(')?
        .strip_suffix(')')?
        .parse()
        .ok()
}

/// `(precision, scale)` of `numeric(p,s)` / `numeric(p)`.
fn numeric(t: &str) -> Option<(i64, i64)> {
    let inner = t.strip_prefix("numeric(")?.strip_suffix(')')?;
    match inner.split_once(',') {
        Some((p, s)) => Some((p.trim().parse().ok()?, s.trim().parse().ok()?)),
        None => Some((inner.trim().parse().ok()?, 0)),
    }
}

#[cfg(test)]
mod tests {
    use super::holds;

    #[test]
    fn widening_holds_and_narrowing_does_not() {
        for (l, t) in [
            ("integer", "integer"),
            ("integer", "bigint"),
            ("smallint", "numeric"),
            ("integer", "numeric(12,0)"),
            ("real", "double precision"),
            ("character varying(10)", "text"),
            ("character varying(10)", "character varying(20)"),
            ("character varying", "text"),
            ("text", "character varying"),
            ("character(3)", "text"),
            ("numeric(10,2)", "numeric(12,2)"),
            ("numeric(10,2)", "numeric(12,4)"),
            ("numeric(10,2)", "numeric"),
        ] {
            assert!(holds(l, t), "{l} -> {t}");
        }
        for (l, t) in [
            ("bigint", "integer"),
            ("numeric(12,2)", "integer"),
            ("numeric(12,2)", "numeric(10,2)"),
            ("numeric(12,2)", "numeric(12,1)"),
            ("numeric", "numeric(20,2)"),
            ("text", "character varying(10)"),
            ("character varying(20)", "character varying(10)"),
            ("timestamp with time zone", "timestamp without time zone"),
            ("timestamp without time zone", "timestamp with time zone"),
            ("double precision", "real"),
            ("integer", "numeric(5,0)"),
            ("jsonb", "json"),
        ] {
            assert!(!holds(l, t), "{l} -> {t}");
        }
    }
}

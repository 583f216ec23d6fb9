//! Access rules a table carries, compared between a rule's legacy table and its target.
//!
//! Row-level security, its policies, table and column privileges and the owner decide who
//! sees and changes which rows. They belong to a table, not to its data: a target made by
//! hand (or before the legacy table gained a policy) lacks them, and moving reads or writes
//! to it would show every tenant's rows to a role that saw one tenant's (`union_read` reads
//! the target), or let a role write what it could not. So entering `union_read`, `cutover`
//! or `target_only` is refused while they differ, and `tandem parity`'s `access` check fails,
//! each difference named. Compared by what they do, not by name: a policy is its command,
//! roles, permissive/restrictive and both expressions as the server prints them (the tables
//! share column names, so the same policy prints the same on both).

use tandem_rules::TableName;
use tokio_postgres::GenericClient;

/// Each access rule legacy and target do not share, as a sentence naming it and the table
/// that has it. Empty when they agree (or a table does not exist: the rule's own checks say
/// so).
pub async fn differences(
    client: &impl GenericClient,
    legacy: &TableName,
    target: &TableName,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let rows = client
        .query(ACCESS_SQL, &[&legacy.to_string(), &target.to_string()])
        .await?;
    let rules: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let on = |side: &str| -> Vec<&String> {
        rules
            .iter()
            .filter(|(s, _)| s == side)
            .map(|(_, what)| what)
            .collect()
    };
    let (old, new) = (on("legacy"), on("target"));
    if old.is_empty() || new.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for what in &old {
        if !new.contains(what) {
            out.push(format!("{what} is on {legacy} but not on {target}"));
        }
    }
    for what in &new {
        if !old.contains(what) {
            out.push(format!("{what} is on {target} but not on {legacy}"));
        }
    }
    Ok(out)
}

/// `(side, rule)` for both tables: RLS flags, owner, policies, table and column privileges,
/// each as text that is equal on both sides when the rule is the same.
const ACCESS_SQL: &str = "\
WITH t(side, rel) AS (VALUES ('legacy', to_regclass($1)), ('target', to_regclass($2)))
SELECT t.side, 'row level security ' || CASE WHEN c.relrowsecurity THEN 'enabled' ELSE 'disabled' END
  FROM t JOIN pg_class c ON c.oid = t.rel
UNION ALL
SELECT t.side, 'row level security ' || CASE WHEN c.relforcerowsecurity THEN 'forced' ELSE 'not forced' END
  FROM t JOIN pg_class c ON c.oid = t.rel
UNION ALL
SELECT t.side, 'owner ' || pg_get_userbyid(c.relowner)
  FROM t JOIN pg_class c ON c.oid = t.rel
UNION ALL
SELECT t.side, format('policy %s (AS %s FOR %s TO %s USING (%s) WITH CHECK (%s))',
           quote_ident(p.polname),
           CASE WHEN p.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END,
           CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                         WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
           (SELECT string_agg(CASE WHEN r = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r)) END,
                              ', ' ORDER BY 1)
              FROM unnest(p.polroles) AS r),
           coalesce(pg_get_expr(p.polqual, p.polrelid), 'true'),
           coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '-'))
  FROM t JOIN pg_policy p ON p.polrelid = t.rel
UNION ALL
SELECT t.side, format('privilege %s%s to %s', a.privilege_type,
           CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END,
           CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END)
  FROM t JOIN pg_class c ON c.oid = t.rel,
       aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) AS a
UNION ALL
SELECT t.side, format('privilege %s (%s)%s to %s', a.privilege_type, quote_ident(att.attname),
           CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END,
           CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END)
  FROM t JOIN pg_attribute att ON att.attrelid = t.rel AND att.attnum > 0 AND NOT att.attisdropped
         AND att.attacl IS NOT NULL,
       aclexplode(att.attacl) AS a
ORDER BY 1, 2";

//! The statement forms: every write (and some reads) on the ruled table, valid or not,
//! runnable or refused, with the values and spellings they are drawn from.

use tandem_tests::mirror::Kind;

use super::step::{Expect, Stmt};
use super::workload::Workload;

/// The spellings of the legacy table's name the server reads as that table.
pub(super) const SPELLINGS: &[&str] = &[
    "{legacy}",
    "{legacy}",
    "{legacy}",
    "public . {legacy}",
    "public/**/.\"{legacy}\"",
    "{legacy_unicode}",
    "{LEGACY}",
    "\"{legacy}\"",
    "public.{legacy}",
    "\"public\".\"{legacy}\"",
    "PUBLIC.{LEGACY}",
    "public.\"{legacy}\"",
];

pub(super) const TENANTS: &[&str] = &["acme", "globex", "initech", "umbrella"];

/// What may replace a space between two tokens (`--` comments end at `\r` too).
const GAPS: &[&str] = &[
    "\n",
    "\t",
    " --c\r",
    " --c;x\n",
    " /* c; /* n */ */ ",
    "\r\n",
];

/// A write joined to `{src}` (UPDATE ... FROM, DELETE ... USING) with RETURNING `ret`:
/// `RETURNING *` (which would include `{src}`'s columns) and subqueries are refused with
/// 0A000 (Tandem returns only the ruled table's own columns there; not in the docs' table).
fn joined(form: &'static str, ret: &str, sql: String) -> Stmt {
    if ret.starts_with(" RETURNING *") {
        Stmt::refused("RETURNING * of a write with FROM/USING", "0A000", sql)
    } else if ret.contains("(SELECT") {
        Stmt::refused(
            "RETURNING subquery of a write with FROM/USING",
            "0A000",
            sql,
        )
    } else {
        Stmt::runs(form, sql)
    }
}

impl Workload {
    pub(super) fn id(&mut self) -> usize {
        1 + self.rng.below(30)
    }

    pub(super) fn amount(&mut self) -> String {
        format!("{}.{:02}", self.rng.below(100), self.rng.below(100))
    }

    pub(super) fn note(&mut self) -> String {
        match self.rng.below(6) {
            0 => "NULL".into(),
            // Literals the statement splitter must read as the server does (no spaces:
            // see `decorate`).
            1 => self
                .rng
                .pick(&[
                    "E'e\\';s'",
                    "$q$d;q$q$",
                    "'semi;colon'",
                    "'it''s'",
                    "'--not'",
                    "'b\\'",
                    "'é'",
                ])
                .into(),
            _ => format!("'n{}'", self.rng.below(20)),
        }
    }

    /// `(id, 'tenant', amount, note)`.
    pub(super) fn row(&mut self) -> String {
        let (id, tenant, amount, note) = (
            self.id(),
            self.rng.pick(TENANTS),
            self.amount(),
            self.note(),
        );
        format!("({id}, '{tenant}', {amount}, {note})")
    }

    /// `('tenant', amount, note)`.
    pub(super) fn short_row(&mut self) -> String {
        let (tenant, amount, note) = (self.rng.pick(TENANTS), self.amount(), self.note());
        format!("('{tenant}', {amount}, {note})")
    }

    /// A predicate on the legacy table under alias prefix `a` (`""` or `"l."`).
    pub(super) fn pred(&mut self, a: &str) -> String {
        let (id, id2) = (self.id(), self.id());
        match self.rng.below(7) {
            0 | 1 => format!("{a}id = {id}"),
            2 => format!("{a}id < {}", id / 3 + 1),
            3 => format!("{a}tenant = '{}'", self.rng.pick(TENANTS)),
            4 => format!("{a}id IN ({id}, {id2})"),
            5 => format!("{a}note IS NULL AND {a}id > {id}"),
            _ => format!("{a}amount > {}", 50 + self.rng.below(50)),
        }
    }

    /// A RETURNING clause (or none) under alias prefix `a`.
    pub(super) fn returning(&mut self, a: &str) -> String {
        match self.rng.below(13) {
            0 => " RETURNING *".into(),
            1 => format!(" RETURNING {a}id, {a}tenant"),
            2 => format!(
                " RETURNING {a}id, {a}amount * 2 AS doubled, upper({a}tenant) AS shout, \
                 {a}created_at IS NOT NULL AS stamped"
            ),
            3 if !a.is_empty() => " RETURNING l.*".into(),
            4 => " RETURNING 1 AS one, note, score".into(),
            5 => format!(" RETURNING *, {a}amount + 1 AS next"),
            6 if a.is_empty() => " RETURNING {legacy}.id, {legacy}.note AS n".into(),
            7 => format!(" RETURNING tableoid::regclass AS tbl, {a}id"),
            8 => " RETURNING (SELECT count(*) FROM {src}) AS srcs, \"id\"".into(),
            _ => String::new(),
        }
    }

    /// Some spaces replaced by comments and other whitespace (no literal holds a space).
    pub(super) fn decorate(&mut self, sql: &str) -> String {
        let mut out = String::new();
        if self.rng.chance(30) {
            out.push_str(self.rng.pick(&["/* lead */ ", "-- lead\r", "--lead;\n"]));
        }
        for (i, piece) in sql.split(' ').enumerate() {
            if i > 0 {
                out.push_str(if self.rng.chance(20) {
                    self.rng.pick(GAPS)
                } else {
                    " "
                });
            }
            out.push_str(piece);
        }
        out
    }

    /// A statement on the table spelled `t`.
    pub(super) fn form(&mut self, t: &str) -> Stmt {
        let list = matches!(self.kind, Kind::List | Kind::ListNoDefault);
        let (id, tenant, amount) = (self.id(), self.rng.pick(TENANTS), self.amount());
        match self.rng.below(36) {
            0 | 1 => {
                let (row, ret) = (self.short_row(), self.returning(""));
                Stmt::runs(
                    "INSERT VALUES",
                    format!("INSERT INTO {t} (tenant, amount, note) VALUES {row}{ret}"),
                )
            }
            2 => {
                let n = 2 + self.rng.below(3);
                let rows: Vec<String> = (0..n).map(|_| self.short_row()).collect();
                let ret = self.returning("");
                Stmt::runs(
                    "INSERT multi-row",
                    format!(
                        "INSERT INTO {t} (tenant, amount, note) VALUES {}{ret}",
                        rows.join(", ")
                    ),
                )
            }
            3 => {
                let ret = self.returning("");
                Stmt::runs(
                    "INSERT SELECT",
                    format!(
                        "INSERT INTO {t} (tenant, amount, note) SELECT tenant, amount, note \
                         FROM {{src}} WHERE tenant <> '{tenant}' ORDER BY tenant{ret}"
                    ),
                )
            }
            4 => {
                let ret = self.returning("");
                Stmt::runs(
                    "INSERT DEFAULT VALUES",
                    format!("INSERT INTO {t} DEFAULT VALUES{ret}"),
                )
            }
            5 => {
                let ret = self.returning("");
                Stmt::runs(
                    "INSERT explicit id",
                    format!("INSERT INTO {t} (id, tenant, amount) VALUES ({id}, '{tenant}', {amount}){ret}"),
                )
            }
            6 => {
                let rows = [self.row(), self.row()].join(", ");
                let target = self.rng.pick(&["", "(id) "]);
                let ret = self.returning("");
                Stmt::runs(
                    "ON CONFLICT DO NOTHING",
                    format!(
                        "INSERT INTO {t} (id, tenant, amount, note) VALUES {rows} \
                         ON CONFLICT {target}DO NOTHING{ret}"
                    ),
                )
            }
            7 | 8 => {
                let rows = if self.rng.chance(70) {
                    self.row()
                } else {
                    [self.row(), self.row()].join(", ")
                };
                let ret = self.returning("l.");
                let (form, set, expect) = match self.rng.below(6) {
                    0 => (
                        "ON CONFLICT DO UPDATE SET id = EXCLUDED.id",
                        "id = EXCLUDED.id, note = EXCLUDED.note",
                        Expect::Runs,
                    ),
                    1 => (
                        "ON CONFLICT DO UPDATE SET tenant",
                        "tenant = EXCLUDED.tenant",
                        if list {
                            Expect::Refused("0A000")
                        } else {
                            Expect::Runs
                        },
                    ),
                    2 => (
                        "ON CONFLICT DO UPDATE of the key",
                        "id = l.id + 1000",
                        Expect::Refused("0A000"),
                    ),
                    _ => (
                        "ON CONFLICT DO UPDATE",
                        "amount = l.amount + EXCLUDED.amount, note = EXCLUDED.note",
                        Expect::Runs,
                    ),
                };
                let filter = if self.rng.chance(30) {
                    " WHERE l.tenant <> 'umbrella'"
                } else {
                    ""
                };
                Stmt {
                    expect,
                    ..Stmt::runs(
                        form,
                        format!(
                            "INSERT INTO {t} AS l (id, tenant, amount, note) VALUES {rows} \
                             ON CONFLICT (id) DO UPDATE SET {set}{filter}{ret}"
                        ),
                    )
                }
            }
            9..=11 => {
                let (a, alias) = if self.rng.chance(40) {
                    ("l.", " AS l")
                } else {
                    ("", "")
                };
                let (pred, note, ret) = (self.pred(a), self.note(), self.returning(a));
                Stmt::runs(
                    "UPDATE",
                    format!("UPDATE {t}{alias} SET amount = amount + 1, note = {note} WHERE {pred}{ret}"),
                )
            }
            12 => {
                let (pred, ret) = (self.pred("l."), self.returning("l."));
                joined(
                    "UPDATE FROM",
                    &ret,
                    format!(
                        "UPDATE {t} AS l SET note = s.note, amount = s.amount FROM {{src}} s \
                         WHERE s.tenant = l.tenant AND {pred}{ret}"
                    ),
                )
            }
            13 | 14 => {
                let ret = self.returning("");
                if self.rng.chance(50) {
                    let (pred, other) = (self.pred(""), self.id());
                    let set = match self.rng.below(5) {
                        0 => format!("id = id + 100 WHERE {pred}"),
                        1 => format!(
                            "id = CASE WHEN id = {id} THEN {other} ELSE {id} END \
                             WHERE id IN ({id}, {other})"
                        ),
                        2 => format!("id = (SELECT max(id) + 1 FROM {{legacy}}) WHERE id = {id}"),
                        3 => format!("id = id, tenant = tenant WHERE {pred}"),
                        _ => format!("id = id + 100 WHERE id = {id}"),
                    };
                    Stmt::runs("UPDATE of the key", format!("UPDATE {t} SET {set}{ret}"))
                } else {
                    let pred = self.pred("");
                    Stmt::runs(
                        "UPDATE of tenant",
                        format!("UPDATE {t} SET tenant = '{tenant}' WHERE {pred}{ret}"),
                    )
                }
            }
            15 => {
                if self.rng.chance(50) {
                    Stmt::refused(
                        "UPDATE of the key with FROM",
                        "0A000",
                        format!(
                            "UPDATE {t} AS l SET id = l.id + 500 FROM {{src}} s \
                             WHERE s.tenant = l.tenant AND l.id = {id}"
                        ),
                    )
                } else {
                    Stmt {
                        expect: if list {
                            Expect::Refused("0A000")
                        } else {
                            Expect::Runs
                        },
                        ..Stmt::runs(
                            "UPDATE of tenant with FROM",
                            format!(
                                "UPDATE {t} AS l SET tenant = s.tenant FROM {{src}} s \
                                 WHERE s.tenant = '{tenant}' AND l.id = {id}"
                            ),
                        )
                    }
                }
            }
            16 => {
                let (pred, ret) = (self.pred(""), self.returning(""));
                Stmt::runs(
                    "UPDATE ONLY",
                    format!("UPDATE ONLY {t} SET note = 'only' WHERE {pred}{ret}"),
                )
            }
            17 | 18 => {
                let (pred, ret) = (self.pred(""), self.returning(""));
                Stmt::runs("DELETE", format!("DELETE FROM {t} WHERE {pred}{ret}"))
            }
            19 => {
                let (pred, ret) = (self.pred(""), self.returning(""));
                Stmt::runs(
                    "DELETE FROM ONLY",
                    format!("DELETE FROM ONLY {t} WHERE {pred}{ret}"),
                )
            }
            20 => {
                let (pred, ret) = (self.pred("l."), self.returning("l."));
                joined(
                    "DELETE USING",
                    &ret,
                    format!(
                        "DELETE FROM {t} AS l USING {{src}} s WHERE s.tenant = l.tenant AND {pred}{ret}"
                    ),
                )
            }
            21 if self.rng.chance(40) => {
                let how = self.rng.pick(&["", "TABLE ", "ONLY "]);
                Stmt::runs("TRUNCATE", format!("TRUNCATE {how}{t}"))
            }
            22 => {
                let pred = self.pred("");
                match self.rng.below(4) {
                    0 => Stmt::runs("SELECT", format!("SELECT count(*) FROM {t}")),
                    3 => Stmt::runs(
                        "COPY TO STDOUT",
                        format!(
                            "COPY (SELECT id, tenant, amount, note FROM {t} WHERE {pred} \
                             ORDER BY id) TO STDOUT"
                        ),
                    ),
                    1 => Stmt::runs(
                        "EXPLAIN of a write",
                        format!("EXPLAIN (COSTS OFF) DELETE FROM {t} WHERE {pred}"),
                    ),
                    _ => Stmt::runs(
                        "SELECT",
                        format!(
                            "SELECT id, tenant, amount, note FROM {t} WHERE {pred} ORDER BY id"
                        ),
                    ),
                }
            }
            23 | 24 => self.invalid(t, id),
            25 if self.rng.chance(50) => match self.rng.below(5) {
                0 => Stmt::runs("SET search_path", "SET search_path = public".into()),
                1 => Stmt::runs("DEALLOCATE ALL", "DEALLOCATE ALL".into()),
                2 => Stmt::runs(
                    "SQL PREPARE of a read",
                    format!("PREPARE fzr AS SELECT count(*) FROM {t} WHERE id > $1"),
                ),
                3 => Stmt::runs(
                    "SQL EXECUTE, DEALLOCATE",
                    self.rng
                        .pick(&["EXECUTE fzr(3)", "DEALLOCATE fzr", "DEALLOCATE PREPARE fzr"])
                        .into(),
                ),
                _ => Stmt::refused(
                    "search_path change before a ruled name",
                    "0A000",
                    format!(
                        "SET search_path = public; INSERT INTO {t} (tenant) VALUES ('{tenant}')"
                    ),
                ),
            },
            26..=29 => self.refused(t, id),
            30 => {
                let (note, ret) = (self.note(), self.returning(""));
                let first = if self.rng.chance(50) {
                    "DEFAULT".to_string()
                } else {
                    id.to_string()
                };
                Stmt::runs(
                    "INSERT without a column list",
                    format!(
                        "INSERT INTO {t} VALUES ({first}, '{tenant}', {amount}, {note}, \
                         DEFAULT, DEFAULT, DEFAULT){ret}"
                    ),
                )
            }
            31 => {
                let (row, ret) = (self.row(), self.returning("l."));
                let action = self.rng.pick(&[
                    "DO NOTHING",
                    "DO UPDATE SET note = EXCLUDED.note",
                    "DO UPDATE SET amount = DEFAULT",
                ]);
                Stmt::runs(
                    "ON CONFLICT ON CONSTRAINT",
                    format!(
                        "INSERT INTO {t} AS l (id, tenant, amount, note) VALUES {row} \
                         ON CONFLICT ON CONSTRAINT {{legacy}}_pkey {action}{ret}"
                    ),
                )
            }
            32 => {
                let ret = self.returning("");
                let sql = if self.rng.chance(50) {
                    format!(
                        "WITH v AS (SELECT tenant, amount FROM {{src}} WHERE tenant <> '{tenant}') \
                         INSERT INTO {t} (tenant, amount) SELECT tenant, amount FROM v \
                         ORDER BY tenant{ret}"
                    )
                } else {
                    format!(
                        "WITH v AS (SELECT max(id) AS m FROM {{legacy}}) \
                         DELETE FROM {t} WHERE id = (SELECT m FROM v){ret}"
                    )
                };
                Stmt::runs("read-only WITH before a write", sql)
            }
            33 => {
                let (pred, ret) = (self.pred(""), self.returning(""));
                let set = self.rng.pick(&[
                    "(amount, note) = (amount * 2, 'r')",
                    "amount = DEFAULT, note = NULL",
                    "amount = (SELECT max(amount) FROM {src})",
                    "\"note\" = upper(coalesce(note, 'q'))",
                ]);
                Stmt::runs(
                    "UPDATE SET forms",
                    format!("UPDATE {t} SET {set} WHERE {pred}{ret}"),
                )
            }
            34 => {
                let ret = self.returning("");
                let sql = if self.rng.chance(50) {
                    format!(
                        "DELETE FROM {t} WHERE id IN (SELECT id FROM {{legacy}} \
                         WHERE tenant = '{tenant}' ORDER BY id LIMIT 2){ret}"
                    )
                } else {
                    format!(
                        "INSERT INTO {t} (tenant, amount) SELECT '{tenant}', g \
                         FROM generate_series(1, 3) g{ret}"
                    )
                };
                Stmt::runs("subquery", sql)
            }
            35 if self.rng.chance(50) => {
                let (pred, ret) = (self.pred("l."), self.returning("l."));
                let sql = match self.rng.below(3) {
                    0 => format!(
                        "UPDATE {t} AS l SET note = o.note FROM {{legacy}} o \
                         WHERE o.id = l.id + 1 AND {pred}{ret}"
                    ),
                    1 => format!(
                        "DELETE FROM {t} AS l USING {{legacy}} o \
                         WHERE o.id = l.id - 1 AND o.tenant = l.tenant AND {pred}{ret}"
                    ),
                    _ => {
                        return Stmt::runs(
                            "the legacy table read inside its own write",
                            format!(
                                "INSERT INTO {t} AS l (tenant, amount, note) SELECT tenant, \
                                 amount, note FROM {{legacy}} WHERE id < {id} ORDER BY id \
                                 LIMIT 3{ret}"
                            ),
                        )
                    }
                };
                joined("the legacy table read inside its own write", &ret, sql)
            }
            35 => {
                let pred = self.pred("");
                Stmt::runs(
                    "SELECT FOR UPDATE",
                    format!("SELECT id, note FROM {t} WHERE {pred} ORDER BY id FOR UPDATE"),
                )
            }
            _ => {
                let (row, ret) = (self.short_row(), self.returning(""));
                Stmt::runs(
                    "INSERT VALUES",
                    format!("INSERT INTO {t} (tenant, amount, note) VALUES {row}{ret}"),
                )
            }
        }
    }

    /// A statement the server itself rejects (or that fails on some rows).
    pub(super) fn invalid(&mut self, t: &str, id: usize) -> Stmt {
        // A U&"..." spelling is refused before the server sees whether the statement fails
        // (unicode_escaped_name_of_the_ruled_table_is_mirrored): use the plain name here, so
        // the server's own error is what both twins answer.
        let t = if t == "{legacy_unicode}" {
            "{legacy}"
        } else {
            t
        };
        let sql = match self.rng.below(7) {
            0 => format!("INSERT INTO {t} (nosuch) VALUES (1)"),
            1 => format!("INSERT INTO {t} (tenant, amount) VALUES ('acme', 'abc')"),
            2 => format!("UPDATE {t} SET amount = amount / 0 WHERE id = {id}"),
            3 => format!("INSERT INTO {t} (id, tenant) VALUES (NULL, 'acme')"),
            4 => format!("INSERT INTO {t} (tenant, amount) VALUES ('acme', 123456789)"),
            // Neither Tandem nor Postgres can parse it: the client gets Postgres's 42601.
            5 => format!("INSERT INTO {t} (tenant) VALUES ("),
            _ => "SELECT 1/0".to_string(),
        };
        Stmt::runs("failing statement", sql)
    }

    /// A statement Tandem must refuse (`docs/dual-write.md`, "Refusals").
    pub(super) fn refused(&mut self, t: &str, id: usize) -> Stmt {
        let (form, code, sql) = match self.rng.below(11) {
            0 => {
                let sql = format!(
                    "MERGE INTO {t} l USING {{src}} s ON l.tenant = s.tenant \
                     WHEN MATCHED THEN UPDATE SET note = s.note \
                     WHEN NOT MATCHED THEN INSERT (tenant, amount) VALUES (s.tenant, s.amount)"
                );
                // Mirrored from PostgreSQL 17 on: then it must answer as Postgres does.
                if self.merge_mirrored {
                    return Stmt::runs("MERGE", sql);
                }
                ("MERGE", "0A000", sql)
            }
            1 => (
                "write in a CTE",
                "0A000",
                format!("WITH x AS (INSERT INTO {t} (tenant) VALUES ('acme') RETURNING id) SELECT id FROM x"),
            ),
            2 => (
                "write in a CTE",
                "0A000",
                format!("WITH x AS (DELETE FROM {t} WHERE id = {id} RETURNING *) SELECT count(*) FROM x"),
            ),
            3 => (
                "write in a CTE",
                "0A000",
                format!("WITH x AS (UPDATE {t} SET note = 'c' RETURNING 1) SELECT count(*) FROM x"),
            ),
            4 => (
                "EXPLAIN ANALYZE of a write",
                "0A000",
                format!("EXPLAIN ANALYZE INSERT INTO {t} (tenant) VALUES ('acme')"),
            ),
            5 => (
                "EXPLAIN ANALYZE of a write",
                "0A000",
                format!("EXPLAIN (ANALYZE, COSTS OFF) DELETE FROM {t} WHERE id = {id}"),
            ),
            6 => (
                "PREPARE of a write",
                "0A000",
                format!("PREPARE fzp AS UPDATE {t} SET note = 'p' WHERE id = $1"),
            ),
            7 => (
                "WHERE CURRENT OF",
                "0A000",
                format!("UPDATE {t} SET note = 'c' WHERE CURRENT OF fzc"),
            ),
            8 => (
                "COPY FROM a file",
                "0A000",
                format!("COPY {t} FROM '/nonexistent/tandem-fuzz'"),
            ),
            9 => (
                "COPY FROM a program",
                "0A000",
                format!("COPY {t} FROM PROGRAM 'true'"),
            ),
            _ => match self.rng.below(3) {
                0 => ("DROP TABLE", "55000", format!("DROP TABLE {t}")),
                1 => (
                    "ALTER TABLE RENAME",
                    "55000",
                    format!("ALTER TABLE {t} RENAME TO fz_renamed"),
                ),
                _ => (
                    "ALTER TABLE RENAME COLUMN",
                    "55000",
                    format!("ALTER TABLE {t} RENAME COLUMN note TO remark"),
                ),
            },
        };
        Stmt::refused(form, code, sql)
    }
}

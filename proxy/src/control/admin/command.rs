//! The admin console's command language, parsed without I/O.
//!
//! Operators type these in psql, and scripts send them through `tandem rules`. The
//! language is small and pgbouncer-like; keywords are case-insensitive, table names use SQL
//! spelling (`orders`, `public.orders`, `app."Line Items"`; a bare name is in `public`, as
//! in the config file), and a bad command gets an error naming what was wrong plus the list
//! of valid commands as a hint.

use tandem_rules::{GuardPolicy, Mode, TableName};

/// One console command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `SHOW RULES`
    ShowRules,
    /// `SHOW SESSIONS`
    ShowSessions,
    /// `SHOW STATS`
    ShowStats,
    /// `SHOW VERSION`
    ShowVersion,
    /// `SHOW PARITY`: the cheap figures (estimates, backfill, drift, shadow samples).
    ShowParity,
    /// `SHOW SHAPES [<table>]`: the read shapes, same rows and time on each side.
    ShowShapes {
        /// One rule's table, or every table.
        table: Option<TableName>,
    },
    /// `SHOW PARTITIONS <table>`: rows and bytes per partition, skew verdict.
    ShowPartitions {
        /// Legacy table (its rule's target) or any partitioned table.
        table: TableName,
    },
    /// `SET RULE <table> MODE <mode> [FORCE]`
    SetMode {
        /// Legacy table.
        table: TableName,
        /// New mode.
        mode: Mode,
        /// Allow leaving `target_only`.
        force: bool,
    },
    /// `SET RULE <table> AUTO_PARTITION on|off`
    SetAutoPartition {
        /// Legacy table.
        table: TableName,
        /// On or off.
        on: bool,
    },
    /// `SET RULE <table> GUARD mirror|fail|record|off`
    SetGuard {
        /// Legacy table.
        table: TableName,
        /// What the guard does with changes made around the proxy.
        guard: GuardPolicy,
    },
    /// `SET RULE <table> DROP_TRIGGERS (<trigger>, ...)`: legacy triggers the target does
    /// not need (`()` for none).
    SetDropTriggers {
        /// Legacy table.
        table: TableName,
        /// Trigger names, catalog spelling.
        triggers: Vec<String>,
    },
    /// `SET RULE <table> DROP_COLUMNS (<col>, ...)`: legacy columns left behind on purpose
    /// (`()` for none).
    SetDropColumns {
        /// Legacy table.
        table: TableName,
        /// Column names, catalog spelling.
        columns: Vec<String>,
    },
    /// `SET RULE <table> SAMPLE <0..1>`
    SetSample {
        /// Legacy table.
        table: TableName,
        /// New sample rate.
        rate: f64,
    },
    /// `ADD RULE <table> [TARGET <t>] [KEY (<cols>)] [MODE <m>]`
    Add {
        /// Legacy table.
        table: TableName,
        /// Target (default `<table>_v2`).
        target: Option<TableName>,
        /// Key columns (default: the legacy primary key plus the target's partition key).
        key: Vec<String>,
        /// Initial mode (default `off`).
        mode: Mode,
        /// The guard's policy (default `mirror`).
        guard: GuardPolicy,
    },
    /// `DROP RULE <table> [FORCE]`
    Drop {
        /// Legacy table.
        table: TableName,
        /// Allow dropping a rule in `target_only`.
        force: bool,
    },
    /// `RELOAD`
    Reload,
}

/// The hint every parse error carries.
pub const USAGE: &str = "commands: SHOW RULES | SHOW SESSIONS | SHOW STATS | SHOW VERSION | SHOW PARITY | SHOW SHAPES [<table>] | SHOW PARTITIONS <table> | \
SET RULE <table> MODE <off|dual_write|union_read|cutover|target_only> [FORCE] | \
SET RULE <table> SAMPLE <0..1> | SET RULE <table> AUTO_PARTITION <on|off> | SET RULE <table> GUARD <mirror|fail|record|off> | SET RULE <table> DROP_COLUMNS (<col>, ...) | SET RULE <table> DROP_TRIGGERS (<trigger>, ...) | ADD RULE <table> [TARGET <table>] [KEY (<col>, ...)] [MODE <mode>] [GUARD <guard>] | \
DROP RULE <table> [FORCE] | RELOAD";

/// Splits a query string into statements at `;` outside double quotes and parses each.
/// Empty statements are skipped.
pub fn parse_all(text: &str) -> Vec<Result<Command, String>> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ';' if !quoted => {
                if !current.trim().is_empty() {
                    out.push(parse(&current));
                }
                current.clear();
            }
            _ => current.push(c),
        }
    }
    if !current.trim().is_empty() {
        out.push(parse(&current));
    }
    out
}

/// Tokens: words (quoted parts kept whole, with their quotes), `(`, `)` and `,`.
fn tokens(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in text.chars() {
        if quoted {
            word.push(c);
            if c == '"' {
                quoted = false;
            }
            continue;
        }
        match c {
            '"' => {
                quoted = true;
                word.push(c);
            }
            '(' | ')' | ',' => {
                if !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
                out.push(c.to_string());
            }
            c if c.is_whitespace() => {
                if !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if quoted {
        return Err("unterminated quoted identifier".into());
    }
    if !word.is_empty() {
        out.push(word);
    }
    Ok(out)
}

/// Parses one statement.
pub fn parse(text: &str) -> Result<Command, String> {
    let tokens = tokens(text)?;
    let mut it = Tokens {
        items: tokens,
        at: 0,
    };
    let first = it.word("a command")?;
    let command = match first.to_ascii_uppercase().as_str() {
        "SHOW" => {
            let what = it
                .word("RULES, SESSIONS, STATS, VERSION, PARITY, SHAPES or PARTITIONS after SHOW")?;
            match what.to_ascii_uppercase().as_str() {
                "RULES" => Command::ShowRules,
                "SESSIONS" => Command::ShowSessions,
                "STATS" => Command::ShowStats,
                "VERSION" => Command::ShowVersion,
                "PARITY" => Command::ShowParity,
                "SHAPES" => Command::ShowShapes {
                    table: match it.peek() {
                        Some(_) => Some(it.table()?),
                        None => None,
                    },
                },
                "PARTITIONS" => Command::ShowPartitions { table: it.table()? },
                other => return Err(format!("unknown SHOW target \"{other}\"")),
            }
        }
        "SET" => {
            it.keyword("RULE")?;
            let table = it.table()?;
            let what = it.word("MODE, SAMPLE, AUTO_PARTITION, GUARD or DROP_COLUMNS")?;
            match what.to_ascii_uppercase().as_str() {
                "MODE" => {
                    let mode = it.mode()?;
                    let force = match it.peek() {
                        Some(w) if w.eq_ignore_ascii_case("FORCE") => {
                            it.at += 1;
                            true
                        }
                        _ => false,
                    };
                    Command::SetMode { table, mode, force }
                }
                "SAMPLE" => {
                    let value = it.word("a sample rate between 0 and 1")?;
                    let rate: f64 = value
                        .parse()
                        .map_err(|_| format!("sample rate \"{value}\" is not a number"))?;
                    if !(0.0..=1.0).contains(&rate) {
                        return Err(format!("sample rate {rate} is not between 0 and 1"));
                    }
                    Command::SetSample { table, rate }
                }
                "AUTO_PARTITION" => {
                    let value = it.word("on or off")?;
                    let on = match value.to_ascii_lowercase().as_str() {
                        "on" | "true" => true,
                        "off" | "false" => false,
                        _ => return Err(format!("AUTO_PARTITION takes on or off, not \"{value}\"")),
                    };
                    Command::SetAutoPartition { table, on }
                }
                "GUARD" => {
                    let guard = it.word("mirror, fail, record or off")?.parse()?;
                    Command::SetGuard { table, guard }
                }
                "DROP_COLUMNS" => Command::SetDropColumns {
                    table,
                    columns: it.columns()?,
                },
                "DROP_TRIGGERS" => Command::SetDropTriggers {
                    table,
                    triggers: it.columns()?,
                },
                other => {
                    return Err(format!(
                        "expected MODE, SAMPLE, AUTO_PARTITION, GUARD, DROP_COLUMNS or DROP_TRIGGERS, found \"{other}\""
                    ))
                }
            }
        }
        "ADD" => {
            it.keyword("RULE")?;
            let table = it.table()?;
            let (mut target, mut key, mut mode) = (None, Vec::new(), Mode::Off);
            let mut guard = GuardPolicy::default();
            while let Some(word) = it.peek().map(str::to_ascii_uppercase) {
                it.at += 1;
                match word.as_str() {
                    "TARGET" => target = Some(it.table()?),
                    "MODE" => mode = it.mode()?,
                    "KEY" => key = it.columns()?,
                    "GUARD" => guard = it.word("mirror, fail, record or off")?.parse()?,
                    other => {
                        return Err(format!(
                            "expected TARGET, KEY, MODE or GUARD, found \"{other}\""
                        ))
                    }
                }
            }
            Command::Add {
                table,
                target,
                key,
                mode,
                guard,
            }
        }
        "DROP" => {
            it.keyword("RULE")?;
            let table = it.table()?;
            let force = match it.peek() {
                Some(w) if w.eq_ignore_ascii_case("FORCE") => {
                    it.at += 1;
                    true
                }
                _ => false,
            };
            Command::Drop { table, force }
        }
        "RELOAD" => Command::Reload,
        other => return Err(format!("unknown command \"{other}\"")),
    };
    if let Some(extra) = it.peek() {
        return Err(format!("unexpected \"{extra}\" at the end of the command"));
    }
    Ok(command)
}

struct Tokens {
    items: Vec<String>,
    at: usize,
}

impl Tokens {
    fn peek(&self) -> Option<&str> {
        self.items.get(self.at).map(String::as_str)
    }

    fn word(&mut self, what: &str) -> Result<String, String> {
        let word = self
            .items
            .get(self.at)
            .cloned()
            .ok_or_else(|| format!("expected {what}"))?;
        self.at += 1;
        Ok(word)
    }

    fn keyword(&mut self, keyword: &str) -> Result<(), String> {
        let word = self.word(keyword)?;
        if word.eq_ignore_ascii_case(keyword) {
            Ok(())
        } else {
            Err(format!("expected {keyword}, found \"{word}\""))
        }
    }

    fn table(&mut self) -> Result<TableName, String> {
        let word = self.word("a table name")?;
        let mut name = TableName::parse(&word).map_err(|e| e.to_string())?;
        if name.schema.is_none() {
            name.schema = Some(tandem_rules::rule::DEFAULT_SCHEMA.to_string());
        }
        Ok(name)
    }

    fn mode(&mut self) -> Result<Mode, String> {
        self.word("a mode")?.parse()
    }

    /// `( col [, col ...] )`, each column folded like SQL (quoted kept); `()` for none.
    fn columns(&mut self) -> Result<Vec<String>, String> {
        if self.word("(")? != "(" {
            return Err("expected ( before the column list".into());
        }
        let mut cols = Vec::new();
        if self.peek() == Some(")") {
            self.at += 1;
            return Ok(cols);
        }
        loop {
            let word = self.word("a column name")?;
            let col = TableName::parse(&word).map_err(|e| e.to_string())?;
            if col.schema.is_some() {
                return Err(format!("\"{word}\" is not a column name"));
            }
            cols.push(col.name);
            match self.word(", or )")?.as_str() {
                "," => continue,
                ")" => break,
                other => {
                    return Err(format!(
                        "expected , or ) in the column list, found \"{other}\""
                    ))
                }
            }
        }
        Ok(cols)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TableName {
        TableName::parse(s).unwrap()
    }

    #[test]
    fn every_command_parses() {
        assert_eq!(parse("show rules").unwrap(), Command::ShowRules);
        assert_eq!(parse(" SHOW  Sessions ").unwrap(), Command::ShowSessions);
        assert_eq!(parse("SHOW STATS").unwrap(), Command::ShowStats);
        assert_eq!(parse("show version").unwrap(), Command::ShowVersion);
        assert_eq!(parse("SHOW PARITY").unwrap(), Command::ShowParity);
        assert_eq!(
            parse("show shapes").unwrap(),
            Command::ShowShapes { table: None }
        );
        assert_eq!(
            parse("SHOW SHAPES orders").unwrap(),
            Command::ShowShapes {
                table: Some(t("public.orders"))
            }
        );
        assert_eq!(
            parse("show partitions orders").unwrap(),
            Command::ShowPartitions {
                table: t("public.orders")
            }
        );
        assert_eq!(
            parse("SET RULE orders MODE union_read").unwrap(),
            Command::SetMode {
                table: t("public.orders"),
                mode: Mode::UnionRead,
                force: false
            }
        );
        assert_eq!(
            parse("set rule app.\"Line Items\" mode DUAL_WRITE force").unwrap(),
            Command::SetMode {
                table: t("app.\"Line Items\""),
                mode: Mode::DualWrite,
                force: true
            }
        );
        assert_eq!(
            parse("SET RULE orders SAMPLE 0.25").unwrap(),
            Command::SetSample {
                table: t("public.orders"),
                rate: 0.25
            }
        );
        assert_eq!(
            parse("ADD RULE orders TARGET public.orders_new KEY (id, \"Tenant\") MODE dual_write GUARD fail")
                .unwrap(),
            Command::Add {
                table: t("public.orders"),
                target: Some(t("public.orders_new")),
                key: vec!["id".into(), "Tenant".into()],
                mode: Mode::DualWrite,
                guard: GuardPolicy::Fail,
            }
        );
        assert_eq!(
            parse("add rule orders").unwrap(),
            Command::Add {
                table: t("public.orders"),
                target: None,
                key: vec![],
                mode: Mode::Off,
                guard: GuardPolicy::Mirror,
            }
        );
        assert_eq!(
            parse("set rule orders guard RECORD").unwrap(),
            Command::SetGuard {
                table: t("public.orders"),
                guard: GuardPolicy::Record,
            }
        );
        assert_eq!(
            parse("SET RULE orders DROP_COLUMNS (legacy_flag, \"Old\")").unwrap(),
            Command::SetDropColumns {
                table: t("public.orders"),
                columns: vec!["legacy_flag".into(), "Old".into()],
            }
        );
        assert_eq!(
            parse("SET RULE orders DROP_TRIGGERS (audit)").unwrap(),
            Command::SetDropTriggers {
                table: t("public.orders"),
                triggers: vec!["audit".into()],
            }
        );
        assert_eq!(
            parse("SET RULE orders DROP_COLUMNS ()").unwrap(),
            Command::SetDropColumns {
                table: t("public.orders"),
                columns: Vec::new(),
            }
        );
        assert!(parse("SET RULE orders GUARD maybe")
            .unwrap_err()
            .contains("mirror, fail, record, off"));
        assert_eq!(
            parse("DROP RULE orders").unwrap(),
            Command::Drop {
                table: t("public.orders"),
                force: false
            }
        );
        assert_eq!(parse("reload").unwrap(), Command::Reload);
        let all = parse_all("SHOW RULES; ; RELOAD;");
        assert_eq!(all.len(), 2);
    }

    #[test]
    fn bad_commands_say_what_is_wrong() {
        for (input, needle) in [
            ("", "expected a command"),
            ("SHOW", "after SHOW"),
            ("SHOW TABLES", "unknown SHOW target"),
            ("SET RULE orders MODE sideways", "unknown mode"),
            ("SET RULE orders SAMPLE 2", "not between 0 and 1"),
            ("SET RULE orders SAMPLE x", "not a number"),
            (
                "ADD RULE orders KEY id",
                "expected ( before the column list",
            ),
            (
                "ADD RULE orders COLOR red",
                "expected TARGET, KEY, MODE or GUARD",
            ),
            ("DROP TABLE orders", "expected RULE"),
            ("RELOAD now", "unexpected"),
            ("SET RULE \"orders MODE off", "unterminated"),
            ("SELECT 1", "unknown command"),
        ] {
            let err = parse(input).unwrap_err();
            assert!(err.contains(needle), "{input:?}: {err}");
        }
    }
}

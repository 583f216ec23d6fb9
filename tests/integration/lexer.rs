//! Tandem's lexer against the server's own scanner, on random strings.
//!
//! Each case is a multi-statement string built from the pieces that decide where code ends
//! and text begins: comments ending at `\n` or `\r`, nested block comments, plain strings
//! whose backslashes escape only when `standard_conforming_strings` is off, `E''` strings,
//! dollar quotes, quoted identifiers, and the table's name spelled every way the server
//! accepts (case, quotes, `U&"…"` with and without `UESCAPE`, a longer name the server
//! truncates to it). Some pieces really insert a row; others only look like they do. The
//! server runs the string, and what it wrote is compared with what Tandem read:
//!
//! - whenever the server wrote the table, Tandem's pre-filter said the string names it
//!   (a miss would let the write run unmirrored);
//! - whenever the string ran, each statement Tandem's splitter cut out runs on its own,
//!   and together they write exactly what the whole string wrote (the same boundaries).
//!
//! `TANDEM_LEXER_SEED` and `TANDEM_LEXER_CASES` pick another seed or a longer run.

use std::collections::BTreeSet;

use tandem_rules::rule::{ResolvedRule, Rule, TableShape};
use tandem_rules::{
    first_ruled_name, statement_spans, Lexing, Mode, RuleSet, RuledNames, TableName,
};
use tandem_tests::{pg, unique};
use tokio_postgres::{Client, SimpleQueryMessage};

/// A small deterministic generator (xorshift64*), so a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// What may stand between two tokens.
const GAPS: &[&str] = &[
    " ",
    "\n",
    "\t",
    " --c\r",
    " --c;x\n",
    " /* a /* b; */ ; */ ",
    "\r",
];

/// Every spelling of the 63-byte table name `name` that the server reads as that table.
fn spellings(name: &str) -> Vec<String> {
    let escaped: String = name
        .chars()
        .map(|c| format!("\\{:04X}", c as u32))
        .collect();
    let bang: String = name
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i % 2 == 0 {
                format!("!{:04X}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect();
    vec![
        name.to_string(),
        name.to_uppercase(),
        format!("\"{name}\""),
        format!("public.{name}"),
        format!("U&\"{escaped}\""),
        format!("u&\"{bang}\" UESCAPE '!'"),
        format!("{name}_and_more_that_the_server_cuts"),
        format!("\"{name}_cut\""),
    ]
}

/// One statement of a case: its text, and the row it inserts when it really is an insert.
fn statement(rng: &mut Rng, names: &[String], k: u32) -> String {
    let name = &names[rng.below(names.len())];
    let gap = |rng: &mut Rng| rng.pick(GAPS).to_string();
    match rng.below(9) {
        0..=2 => format!(
            "INSERT{}INTO{}{name}{}VALUES{}({k})",
            gap(rng),
            gap(rng),
            gap(rng),
            gap(rng)
        ),
        // A backslash before the quote: the string ends here only when
        // standard_conforming_strings is on.
        3 => format!("SELECT 'x\\'; INSERT INTO {name} VALUES ({k}); --'"),
        // The same in an E'' string: never ends there.
        4 => format!("SELECT E'x\\'; INSERT INTO {name} VALUES ({k}); --'"),
        5 => format!("SELECT $q$'; INSERT INTO {name} VALUES ({k}); --$q$"),
        // The comment ends at the carriage return: the insert is real.
        6 => format!("SELECT 1 --x\r; INSERT INTO {name} VALUES ({k})"),
        7 => format!("/* ; INSERT INTO {name} VALUES ({k}) /* n */ ; */ SELECT 2"),
        _ => format!("SELECT 1 AS \"x;INSERT INTO {name} VALUES ({k})\""),
    }
}

/// The values in the table, sorted.
async fn rows(client: &Client, table: &str) -> BTreeSet<i64> {
    client
        .query(&format!("SELECT k FROM {table}"), &[])
        .await
        .expect("read table")
        .iter()
        .map(|r| r.get::<_, i64>(0))
        .collect()
}

/// Runs `sql` as one simple Query; whether it succeeded.
async fn run(client: &Client, sql: &str) -> bool {
    client
        .simple_query(sql)
        .await
        .map(|m: Vec<SimpleQueryMessage>| drop(m))
        .is_ok()
}

#[tokio::test]
async fn the_lexer_reads_statements_and_names_as_the_server_does() {
    let seed = std::env::var("TANDEM_LEXER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x7a6e_6d31_u64);
    let cases: usize = std::env::var("TANDEM_LEXER_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400);
    let mut rng = Rng(seed | 1);
    let client = pg().direct().await;
    let mut name = unique("lx");
    while name.len() < 63 {
        name.push('x');
    }
    name.truncate(63);
    client
        .batch_execute(&format!("CREATE TABLE public.{name} (k bigint)"))
        .await
        .unwrap();
    let table = TableName::new(Some("public"), &name);
    let rule = Rule::new(table.clone(), Mode::DualWrite, vec!["k".into()]);
    let shape = TableShape {
        mirrored_columns: vec!["k".into()],
        ..TableShape::default()
    };
    let set = RuleSet::new(1, vec![ResolvedRule::new(rule, shape).unwrap()]).unwrap();
    let ruled = RuledNames::new(&set);
    let names = spellings(&name);
    let (mut ran, mut wrote, mut statements) = (0, 0, 0);
    for case in 0..cases {
        let scs = rng.below(3) != 0;
        let count = 1 + rng.below(4);
        let mut sql = String::new();
        for i in 0..count {
            if i > 0 {
                sql.push_str(rng.pick(&[";", "; ", ";\r", " ;; ", ";--c\n"]));
            }
            sql.push_str(&statement(&mut rng, &names, (case * 10 + i) as u32));
        }
        let lexing = Lexing {
            standard_conforming_strings: scs,
            ..Lexing::default()
        };
        let setting = if scs { "on" } else { "off" };
        client
            .batch_execute(&format!(
                "SET standard_conforming_strings = {setting}; SET escape_string_warning = off; \
                 TRUNCATE public.{name}"
            ))
            .await
            .unwrap();
        let ok = run(&client, &sql).await;
        let whole = rows(&client, &table.to_string()).await;
        let context = format!("case {case} (seed {seed:#x}, scs {setting}): {sql:?}");
        if !whole.is_empty() {
            wrote += 1;
            assert!(
                first_ruled_name(sql.as_bytes(), lexing, &ruled).is_some(),
                "the server wrote the table but Tandem saw no ruled name: {context}"
            );
        }
        if !ok {
            continue;
        }
        ran += 1;
        client
            .batch_execute(&format!("TRUNCATE public.{name}"))
            .await
            .unwrap();
        for span in statement_spans(sql.as_bytes(), lexing) {
            let piece = &sql[span];
            statements += 1;
            let before = rows(&client, &table.to_string()).await;
            assert!(
                run(&client, piece).await,
                "a statement Tandem cut out fails on its own: {piece:?} of {context}"
            );
            if rows(&client, &table.to_string()).await != before {
                assert!(
                    first_ruled_name(piece.as_bytes(), lexing, &ruled).is_some(),
                    "the piece wrote the table but Tandem saw no ruled name: {piece:?} of {context}"
                );
            }
        }
        assert_eq!(
            rows(&client, &table.to_string()).await,
            whole,
            "Tandem's statements write other rows than the whole string: {context}"
        );
    }
    eprintln!(
        "lexer differential: {cases} strings (seed {seed:#x}), {ran} ran, {wrote} wrote the table, \
         {statements} statements cut and run alone"
    );
    assert!(
        ran > cases / 4 && wrote > cases / 4,
        "the generator exercises too little"
    );
    client
        .batch_execute(&format!("DROP TABLE public.{name}"))
        .await
        .unwrap();
}

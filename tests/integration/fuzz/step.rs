//! The fuzzer's steps: statements (templates over the pair's names, each with what Tandem
//! must do with it) and the protocol exchanges that carry them, as bytes for one pair.
use tandem_tests::mirror::Pair;
use tandem_tests::raw;

/// A small deterministic generator (xorshift64*, as in the lexer test), so a failing seed
/// can be replayed.
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`, mixed first (splitmix64) so that near seeds differ.
    pub fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Self((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// What Tandem must do with a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Run it (mirrored or untouched): the client sees what Postgres answers directly.
    Runs,
    /// Refuse it with this SQLSTATE, writing nothing.
    Refused(&'static str),
}

/// One statement of a step.
#[derive(Debug, Clone)]
pub struct Stmt {
    /// The template, with the pair's names as placeholders.
    pub sql: String,
    /// The form it exercises, for the summary.
    pub form: &'static str,
    pub expect: Expect,
    /// Text parameters (`None` is NULL), for the extended protocol.
    pub params: Vec<Option<String>>,
}

impl Stmt {
    pub(super) fn runs(form: &'static str, sql: String) -> Self {
        Self {
            sql,
            form,
            expect: Expect::Runs,
            params: Vec::new(),
        }
    }

    pub(super) fn refused(form: &'static str, code: &'static str, sql: String) -> Self {
        Self {
            expect: Expect::Refused(code),
            ..Self::runs(form, sql)
        }
    }

    fn params(&self) -> Vec<Option<&str>> {
        self.params.iter().map(|p| p.as_deref()).collect()
    }
}

/// One item of an extended-protocol batch.
#[derive(Debug, Clone)]
pub enum Item {
    /// Parse (unnamed), Bind, Describe portal, Execute.
    Unnamed(Stmt),
    /// Bind of a named statement (`""`: the unnamed one parsed before) with these
    /// parameters, Describe portal, Execute.
    Named(String, Stmt),
    /// A Sync in the middle of the batch: the batch is answered by several ReadyForQuery.
    Sync,
    /// A Flush in the middle of the batch.
    Flush,
}

/// One exchange with the server: what is written before reading the answer.
#[derive(Debug, Clone)]
pub enum Step {
    /// One simple Query; several statements are joined into one string.
    Simple(Vec<Stmt>, String),
    /// Several simple Queries written before reading.
    Queries(Vec<Stmt>),
    /// Parse (unnamed), Describe statement, Bind, Describe portal, Execute (row limit), Sync.
    Extended(Stmt, i32),
    /// Parse of a named statement, Describe statement, Sync.
    Prepare(String, Stmt),
    /// Several extended items before one Sync (or several, with [`Item::Sync`]).
    Batch(Vec<Item>),
    /// Close of a named statement, Sync.
    Close(String),
    /// A simple `COPY ... FROM STDIN` Query, its CopyData and CopyDone written at once.
    Copy(Stmt, String),
}

/// What a refused step runs on the baseline instead: the same failure, written nowhere.
fn stand_in(code: &str) -> String {
    format!("DO $$BEGIN RAISE EXCEPTION 'refused' USING ERRCODE = '{code}'; END$$")
}

impl Step {
    /// The statements the step carries.
    pub fn stmts(&self) -> Vec<&Stmt> {
        match self {
            Step::Simple(s, _) | Step::Queries(s) => s.iter().collect(),
            Step::Extended(s, _) | Step::Prepare(_, s) | Step::Copy(s, _) => vec![s],
            Step::Batch(items) => items
                .iter()
                .filter_map(|i| match i {
                    Item::Unnamed(s) | Item::Named(_, s) => Some(s),
                    Item::Sync | Item::Flush => None,
                })
                .collect(),
            Step::Close(_) => Vec::new(),
        }
    }

    /// The protocol, for the summary.
    pub fn protocol(&self) -> &'static str {
        match self {
            Step::Simple(s, _) if s.len() > 1 => "simple multi-statement",
            Step::Simple(..) => "simple",
            Step::Queries(_) => "simple pipelined",
            Step::Extended(_, limit) if *limit > 0 => "extended, row limit then the rest",
            Step::Extended(..) => "extended unnamed",
            Step::Prepare(..) => "extended named Parse",
            Step::Batch(items) if items.iter().any(|i| matches!(i, Item::Flush)) => {
                "extended pipelined with a Flush"
            }
            Step::Batch(items) if items.iter().any(|i| matches!(i, Item::Sync)) => {
                "extended pipelined, several Syncs"
            }
            Step::Batch(items) if items.iter().any(|i| matches!(i, Item::Named(..))) => {
                "extended named Bind/Execute (batch)"
            }
            Step::Batch(_) => "extended pipelined batch",
            Step::Close(_) => "extended Close",
            Step::Copy(..) => "simple COPY FROM STDIN",
        }
    }

    /// Whether Tandem must refuse the whole step (only single-message steps hold refusals).
    pub fn expect(&self) -> Expect {
        let stmts = self.stmts();
        // The server parses a whole query string before it runs any of it: a piece it
        // cannot parse makes the string fail with its own syntax error, through Tandem too.
        if matches!(self, Step::Simple(..))
            && stmts.iter().any(|s| s.sql.trim_end().ends_with("VALUES ("))
        {
            return Expect::Runs;
        }
        stmts
            .iter()
            .map(|s| s.expect)
            .find(|e| *e != Expect::Runs)
            .unwrap_or(Expect::Runs)
    }

    /// The SQLSTATEs of every refusal the step holds.
    pub fn refusals(&self) -> Vec<&'static str> {
        self.stmts()
            .iter()
            .filter_map(|s| match s.expect {
                Expect::Refused(code) => Some(code),
                Expect::Runs => None,
            })
            .collect()
    }

    /// The same step with the refused statement replaced by [`stand_in`].
    pub fn stand_in(&self, code: &str) -> Step {
        let sql = stand_in(code);
        match self {
            Step::Extended(s, _) => Step::Extended(Stmt::runs(s.form, sql), 0),
            _ => Step::Simple(vec![Stmt::runs("stand-in", sql.clone())], sql),
        }
    }

    /// The bytes to send for `pair`, and how many ReadyForQuery messages answer them.
    pub fn wire(&self, pair: &Pair) -> (Vec<u8>, usize) {
        let mut out = Vec::new();
        let readies = match self {
            Step::Simple(_, joined) => {
                out.extend(raw::query(&pair.sql(joined)));
                1
            }
            Step::Queries(stmts) => {
                for s in stmts {
                    out.extend(raw::query(&pair.sql(&s.sql)));
                }
                stmts.len()
            }
            Step::Extended(s, limit) => {
                out.extend(raw::parse("", &pair.sql(&s.sql)));
                out.extend(raw::describe(b'S', ""));
                out.extend(raw::bind("", "", &s.params()));
                out.extend(raw::describe(b'P', ""));
                out.extend(raw::execute("", *limit));
                if *limit > 0 {
                    // The rest of the suspended portal.
                    out.extend(raw::execute("", 0));
                }
                out.extend(raw::sync());
                1
            }
            Step::Prepare(name, s) => {
                out.extend(raw::parse(name, &pair.sql(&s.sql)));
                out.extend(raw::describe(b'S', name));
                out.extend(raw::sync());
                1
            }
            Step::Batch(items) => {
                for item in items {
                    match item {
                        Item::Unnamed(s) => {
                            out.extend(raw::parse("", &pair.sql(&s.sql)));
                            out.extend(raw::bind("", "", &s.params()));
                        }
                        Item::Named(name, s) => out.extend(raw::bind("", name, &s.params())),
                        Item::Sync => {
                            out.extend(raw::sync());
                            continue;
                        }
                        Item::Flush => {
                            out.extend(raw::flush());
                            continue;
                        }
                    }
                    out.extend(raw::describe(b'P', ""));
                    out.extend(raw::execute("", 0));
                }
                out.extend(raw::sync());
                1 + items.iter().filter(|i| matches!(i, Item::Sync)).count()
            }
            Step::Close(name) => {
                out.extend(raw::close(b'S', name));
                out.extend(raw::sync());
                1
            }
            Step::Copy(s, data) => {
                out.extend(raw::query(&pair.sql(&s.sql)));
                out.extend(raw::message(b'd', data.as_bytes()));
                out.extend(raw::message(b'c', &[]));
                1
            }
        };
        (out, readies)
    }

    /// The step as a person replays it: protocol, statements and parameters.
    pub fn describe(&self) -> String {
        let mut out = format!("[{}]", self.protocol());
        if let Step::Simple(s, joined) = self {
            if s.len() > 1 {
                return format!("{out} {joined:?}");
            }
        }
        if let Step::Close(name) = self {
            return format!("{out} {name}");
        }
        if let Step::Copy(s, data) = self {
            return format!("{out} {:?} data {data:?}", s.sql);
        }
        for s in self.stmts() {
            out.push_str(&format!("\n    {:?}", s.sql));
            if !s.params.is_empty() {
                out.push_str(&format!(" params {:?}", s.params));
            }
        }
        out
    }
}

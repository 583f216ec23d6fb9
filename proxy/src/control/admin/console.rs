//! One admin console session: SCRAM authentication, then simple queries answered as
//! result sets.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{info, warn};

use super::command::{self, Command};
use super::scram::{self, Channel, Exchange, ScramError, Verifier};
use super::scram::{SCRAM_SHA_256, SCRAM_SHA_256_PLUS};
use super::views;
use crate::control::store::change::{self, RuleChange};
use crate::shared::Shared;
use crate::wire::protocol::backend::{encode_negotiate_protocol_version, ErrorFields};
use crate::wire::protocol::frame::{begin, finish, parse_header, read_cstr, HEADER_LEN};
use crate::wire::protocol::startup::StartupMessage;
use crate::wire::stream::Stream;

/// Why a console session ended early.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The client went away or the socket failed.
    #[error("admin console i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The client sent something that is not the protocol.
    #[error("admin console: {0}")]
    Protocol(String),
}

/// Serves an admin console session to its end.
pub async fn serve(mut client: Stream, startup: &StartupMessage, shared: &Arc<Shared>) {
    // The console speaks protocol 3.0 and knows no `_pq_.` options: a client asking for 3.2
    // (libpq 18's max_protocol_version) or an option is told so first, as a server would.
    let options: Vec<&str> = startup
        .params
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|name| name.starts_with("_pq_."))
        .collect();
    if startup.minor > 0 || !options.is_empty() {
        let mut out = BytesMut::new();
        encode_negotiate_protocol_version(&options, &mut out);
        if client.write_all(&out).await.is_err() {
            return;
        }
    }
    let user = startup.user().unwrap_or_default().to_string();
    let Some(admin) = shared.config.admin.as_ref() else {
        let fields = ErrorFields::new("FATAL", "3D000", "database \"tandem\" does not exist")
            .with_hint(
                "the admin console is off; configure [admin] user and password in Tandem's config",
            );
        let _ = fatal(&mut client, &fields).await;
        return;
    };
    if user != admin.user {
        warn!(%user, "refused: not the admin user");
        let fields = ErrorFields::new(
            "FATAL",
            "28000",
            "tandem: only the admin user may connect to the admin console",
        )
        .with_hint("database \"tandem\" is Tandem's admin console; applications connect to their own database");
        let _ = fatal(&mut client, &fields).await;
        return;
    }
    let Some(verifier) = shared.admin_verifier.as_ref() else {
        return;
    };
    let limits = &shared.config.limits;
    // SCRAM-SHA-256-PLUS over TLS only, bound to the certificate presented.
    let end_point = shared.tls_end_point.as_deref().filter(|_| client.is_tls());
    let auth = tokio::time::timeout(
        limits.startup_timeout(),
        authenticate(
            &mut client,
            &user,
            verifier,
            end_point,
            limits.max_message_bytes,
        ),
    )
    .await;
    match auth {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) | Err(_) => return,
        Ok(Err(e)) => {
            warn!(error = %e, "admin console authentication failed");
            return;
        }
    }
    info!(%user, "admin console session");
    if let Err(e) = run(&mut client, &user, shared).await {
        info!(error = %e, "admin console session ended");
    }
}

async fn fatal(client: &mut Stream, fields: &ErrorFields) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    fields.encode_error(&mut out);
    client.write_all(&out).await?;
    client.flush().await?;
    client.shutdown().await
}

/// Postgres's cap on an authentication message (`PG_MAX_AUTH_TOKEN_LENGTH`): a larger
/// claim is refused from its header, before any of the body is waited for.
const MAX_AUTH_MESSAGE: usize = 65535;

/// Reads one message: tag and body (at most `max` bytes; a larger claimed length is refused
/// from the header alone).
async fn read_message(client: &mut Stream, max: usize) -> Result<(u8, Vec<u8>), ConsoleError> {
    let mut header = [0u8; HEADER_LEN];
    client.read_exact(&mut header).await?;
    let header = match parse_header(&header, max) {
        Ok(Some(h)) => h,
        Ok(None) => return Err(ConsoleError::Protocol("truncated message header".into())),
        Err(e) => {
            return Err(ConsoleError::Protocol(format!(
                "invalid frontend message: {e}"
            )))
        }
    };
    let mut body = vec![0u8; header.body_len];
    client.read_exact(&mut body).await?;
    Ok((header.tag, body))
}

/// Reads one authentication message (capped at [`MAX_AUTH_MESSAGE`]); `Ok(None)` when it
/// was refused and the client told with `FATAL 08P01`.
async fn read_auth_message(
    client: &mut Stream,
    max: usize,
) -> Result<Option<(u8, Vec<u8>)>, ConsoleError> {
    match read_message(client, max.min(MAX_AUTH_MESSAGE)).await {
        Ok(message) => Ok(Some(message)),
        Err(ConsoleError::Protocol(what)) => {
            fatal(client, &ErrorFields::new("FATAL", "08P01", what)).await?;
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn auth_message(out: &mut BytesMut, code: i32, data: &[u8]) {
    let start = begin(out, b'R');
    out.put_i32(code);
    out.put_slice(data);
    finish(out, start);
}

/// SCRAM-SHA-256 against the admin verifier, and SCRAM-SHA-256-PLUS bound to `end_point`
/// (the `tls-server-end-point` data of the certificate this TLS connection presented) when
/// given. `Ok(false)`: refused (the client was told).
async fn authenticate(
    client: &mut Stream,
    user: &str,
    verifier: &Verifier,
    end_point: Option<&[u8]>,
    max: usize,
) -> Result<bool, ConsoleError> {
    let mut out = BytesMut::new();
    auth_message(&mut out, 10, &scram::mechanisms(end_point.is_some()));
    client.write_all(&out).await?;
    client.flush().await?;
    let refuse = |code: &str, message: String| ErrorFields::new("FATAL", code, message);
    let bad_password = || {
        refuse(
            "28P01",
            format!("password authentication failed for user \"{user}\""),
        )
    };
    let protocol = |what: &str| refuse("08P01", format!("invalid SASL message: {what}"));

    let Some((tag, body)) = read_auth_message(client, max).await? else {
        return Ok(false);
    };
    if tag != b'p' {
        fatal(client, &protocol("expected SASLInitialResponse")).await?;
        return Ok(false);
    }
    let Some((mechanism, rest)) = read_cstr(&body) else {
        fatal(client, &protocol("no mechanism")).await?;
        return Ok(false);
    };
    let channel = match (mechanism, end_point) {
        (m, _) if m == SCRAM_SHA_256.as_bytes() => Channel::Unbound {
            plus_offered: end_point.is_some(),
        },
        (m, Some(data)) if m == SCRAM_SHA_256_PLUS.as_bytes() => Channel::Bound(data),
        // PLUS where it was not offered (plain TCP): Postgres's refusal (auth-scram.c,
        // scram_init).
        (m, None) if m == SCRAM_SHA_256_PLUS.as_bytes() => {
            fatal(
                client,
                &refuse(
                    "08P01",
                    "client selected an invalid SASL authentication mechanism".into(),
                )
                .with_hint("SCRAM-SHA-256-PLUS (channel binding) is offered over TLS only"),
            )
            .await?;
            return Ok(false);
        }
        _ => {
            fatal(
                client,
                &refuse(
                    "28000",
                    "tandem: the admin console only supports SCRAM-SHA-256 \
                     (and SCRAM-SHA-256-PLUS over TLS)"
                        .into(),
                ),
            )
            .await?;
            return Ok(false);
        }
    };
    let Some(data) = rest.get(4..) else {
        fatal(client, &protocol("truncated")).await?;
        return Ok(false);
    };
    let nonce: [u8; 18] = rand::random();
    let (exchange, server_first) = match Exchange::start(data, verifier, &nonce, channel) {
        Ok(x) => x,
        Err(e) => {
            // Postgres's refusals (auth-scram.c, read_client_first_message).
            let fields = match (e.binding_refusal(), e) {
                (Some(refusal), _) => refusal_fields(refusal),
                (None, ScramError::AuthorizationIdentity) => refuse(
                    "0A000",
                    "client uses authorization identity, but it is not supported".into(),
                ),
                (None, _) => protocol("malformed client-first-message"),
            };
            fatal(client, &fields).await?;
            return Ok(false);
        }
    };
    out.clear();
    auth_message(&mut out, 11, server_first.as_bytes());
    client.write_all(&out).await?;
    client.flush().await?;
    let Some((tag, body)) = read_auth_message(client, max).await? else {
        return Ok(false);
    };
    if tag != b'p' {
        fatal(client, &protocol("expected SASLResponse")).await?;
        return Ok(false);
    }
    let server_final = match exchange.finish(&body, verifier) {
        Ok(f) => f,
        Err(ScramError::BadProof) => {
            warn!(%user, "admin console: wrong password");
            fatal(client, &bad_password()).await?;
            return Ok(false);
        }
        Err(e @ ScramError::BindingMismatch) => {
            // The client saw another certificate than the one this connection presented.
            warn!(%user, "admin console: SCRAM channel binding check failed");
            if let Some(refusal) = e.binding_refusal() {
                fatal(client, &refusal_fields(refusal)).await?;
            }
            return Ok(false);
        }
        Err(e @ (ScramError::UnexpectedBinding | ScramError::NonceMismatch)) => {
            if let Some(refusal) = e.binding_refusal() {
                fatal(client, &refusal_fields(refusal)).await?;
            }
            return Ok(false);
        }
        Err(_) => {
            fatal(client, &bad_password()).await?;
            return Ok(false);
        }
    };
    out.clear();
    auth_message(&mut out, 12, server_final.as_bytes());
    auth_message(&mut out, 0, &[]);
    let version = format!("15.0 (tandem {})", env!("CARGO_PKG_VERSION"));
    for (name, value) in [
        ("server_version", version.as_str()),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("application_name", "tandem"),
    ] {
        let start = begin(&mut out, b'S');
        cstr(&mut out, name);
        cstr(&mut out, value);
        finish(&mut out, start);
    }
    let start = begin(&mut out, b'K');
    out.put_i32(0);
    out.put_i32(rand::random::<i32>());
    finish(&mut out, start);
    ready(&mut out);
    client.write_all(&out).await?;
    client.flush().await?;
    Ok(true)
}

/// A SCRAM refusal as the FATAL error Postgres sends.
fn refusal_fields(refusal: scram::Refusal) -> ErrorFields {
    let fields = ErrorFields::new("FATAL", refusal.code, refusal.message);
    match refusal.detail {
        Some(detail) => fields.with_detail(detail),
        None => fields,
    }
}

fn cstr(out: &mut BytesMut, s: &str) {
    out.put_slice(s.as_bytes());
    out.put_u8(0);
}

fn ready(out: &mut BytesMut) {
    out.put_slice(&[b'Z', 0, 0, 0, 5, b'I']);
}

/// The query loop.
async fn run(client: &mut Stream, user: &str, shared: &Arc<Shared>) -> Result<(), ConsoleError> {
    let max = shared.config.limits.max_message_bytes;
    let mut out = BytesMut::new();
    // After an extended-protocol message: error once, then discard everything until Sync.
    let mut skipping = false;
    loop {
        let (tag, body) = match read_message(client, max).await {
            Ok(m) => m,
            Err(ConsoleError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Ok(())
            }
            Err(ConsoleError::Protocol(what)) => {
                let _ = fatal(client, &ErrorFields::new("FATAL", "08P01", what.clone())).await;
                return Err(ConsoleError::Protocol(what));
            }
            Err(e) => return Err(e),
        };
        out.clear();
        match tag {
            b'X' => return Ok(()),
            // After an error in the extended protocol Postgres discards every message up
            // to Sync, a simple Query included: running it would act on a pipeline the
            // client believes failed.
            b'Q' if skipping => {}
            b'Q' => {
                let text = read_cstr(&body)
                    .and_then(|(q, _)| std::str::from_utf8(q).ok())
                    .unwrap_or("");
                execute_all(text, user, shared, &mut out).await;
                ready(&mut out);
            }
            b'S' => {
                skipping = false;
                ready(&mut out);
            }
            b'H' => {}
            _ => {
                if !skipping {
                    skipping = true;
                    ErrorFields::new(
                        "ERROR",
                        "0A000",
                        "tandem: the admin console accepts simple queries only",
                    )
                    .with_hint("use psql, or simple_query in a driver")
                    .encode_error(&mut out);
                }
            }
        }
        if !out.is_empty() {
            client.write_all(&out).await?;
            client.flush().await?;
        }
    }
}

/// Runs every command of one query string; stops at the first error, like Postgres.
async fn execute_all(text: &str, user: &str, shared: &Arc<Shared>, out: &mut BytesMut) {
    let commands = command::parse_all(text);
    if commands.is_empty() {
        out.put_slice(&[b'I', 0, 0, 0, 4]);
        return;
    }
    for parsed in commands {
        let result = match parsed {
            Ok(cmd) => execute(cmd, user, shared).await,
            Err(reason) => Err(
                ErrorFields::new("ERROR", "42601", format!("tandem: {reason}"))
                    .with_hint(command::USAGE),
            ),
        };
        match result {
            Ok(result) => result.encode(out),
            Err(fields) => {
                fields.encode_error(out);
                return;
            }
        }
    }
}

/// A result set (or just a tag).
pub(super) struct Output {
    pub(super) columns: Vec<&'static str>,
    pub(super) rows: Vec<Vec<Option<String>>>,
    pub(super) tag: String,
}

impl Output {
    fn encode(&self, out: &mut BytesMut) {
        if !self.columns.is_empty() {
            let start = begin(out, b'T');
            out.put_i16(self.columns.len() as i16);
            for name in &self.columns {
                cstr(out, name);
                out.put_u32(0); // table OID
                out.put_i16(0); // attnum
                out.put_u32(25); // text
                out.put_i16(-1);
                out.put_i32(-1);
                out.put_i16(0);
            }
            finish(out, start);
            for row in &self.rows {
                let start = begin(out, b'D');
                out.put_i16(row.len() as i16);
                for value in row {
                    match value {
                        Some(v) => {
                            out.put_i32(v.len() as i32);
                            out.put_slice(v.as_bytes());
                        }
                        None => out.put_i32(-1),
                    }
                }
                finish(out, start);
            }
        }
        let start = begin(out, b'C');
        cstr(out, &self.tag);
        finish(out, start);
    }
}

pub(super) fn error(code: &str, message: String) -> ErrorFields {
    ErrorFields::new("ERROR", code, message)
}

async fn execute(cmd: Command, user: &str, shared: &Arc<Shared>) -> Result<Output, ErrorFields> {
    let Some(watch) = shared.watch.as_ref() else {
        return Err(error("55000", "tandem: the rule store is off".into()));
    };
    let change = match cmd {
        Command::ShowRules => return views::show_rules(shared, watch).await,
        Command::ShowSessions => return views::show_sessions(shared).await,
        Command::ShowStats => return views::show_stats(shared).await,
        Command::ShowVersion => return views::show_version(watch).await,
        Command::ShowParity => return views::show_parity(shared, watch).await,
        Command::ShowShapes { table } => return views::show_shapes(shared, watch, table).await,
        Command::ShowPartitions { table } => return views::show_partitions(shared, table).await,
        Command::Reload => {
            let version = watch.reload().await.map_err(|e| {
                error(
                    "55000",
                    format!("tandem: reload failed, previous rules stay in force: {e}"),
                )
            })?;
            return Ok(Output {
                columns: vec!["store_version"],
                rows: vec![vec![Some(version.to_string())]],
                tag: "RELOAD".into(),
            });
        }
        Command::SetMode { table, mode, force } => RuleChange::SetMode { table, mode, force },
        Command::SetSample { table, rate } => RuleChange::SetSample { table, rate },
        Command::SetAutoPartition { table, on } => RuleChange::SetAutoPartition { table, on },
        Command::SetGuard { table, guard } => RuleChange::SetGuard { table, guard },
        Command::SetDropColumns { table, columns } => RuleChange::SetDropColumns { table, columns },
        Command::SetDropTriggers { table, triggers } => {
            RuleChange::SetDropTriggers { table, triggers }
        }
        Command::Add {
            table,
            target,
            key,
            mode,
            guard,
        } => {
            let mut rule = tandem_rules::Rule::new(table, mode, key);
            rule.guard = guard;
            if let Some(target) = target {
                rule.target = target;
            }
            RuleChange::Add(rule)
        }
        Command::Drop { table, force } => RuleChange::Drop { table, force },
    };
    let tag = match &change {
        RuleChange::Add(_) => "ADD RULE",
        RuleChange::Drop { .. } => "DROP RULE",
        _ => "SET RULE",
    };
    let mut client = views::side(shared).await?;
    let applied = change::apply(&mut client, watch.store(), change, user)
        .await
        .map_err(|e| {
            let fields = error(e.sqlstate, e.message.clone());
            match &e.hint {
                Some(h) => fields.with_hint(h.clone()),
                None => fields,
            }
        })?;
    // This instance applies it now; the others get the NOTIFY.
    let version = watch.reload().await.map_err(|e| {
        error(
            "55000",
            format!("tandem: the change is stored but this instance could not apply it: {e}"),
        )
    })?;
    let mut rows = Vec::new();
    if let Some(rule) = &applied.rule {
        rows.push(vec![
            Some(rule.table.to_string()),
            Some(rule.target.to_string()),
            Some(rule.key.join(", ")),
            Some(rule.mode.to_string()),
            Some(rule.sample_rate.to_string()),
            Some(rule.guard.as_str().to_string()),
            Some(on_off(rule.auto_partition).to_string()),
            Some(version.to_string()),
            Some(applied.notes.join("; ")),
        ]);
    }
    Ok(Output {
        columns: if rows.is_empty() {
            Vec::new()
        } else {
            vec![
                "table",
                "target",
                "key",
                "mode",
                "sample_rate",
                "guard",
                "auto_partition",
                "store_version",
                "notes",
            ]
        },
        rows,
        tag: tag.to_string(),
    })
}

/// A switch as the console spells it (`SET RULE t AUTO_PARTITION on`).
pub(super) fn on_off(on: bool) -> &'static str {
    if on {
        "on"
    } else {
        "off"
    }
}

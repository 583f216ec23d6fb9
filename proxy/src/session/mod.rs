//! One client connection from accept to close.
//!
//! Phases run in order, each in its own module: [`negotiate`] (TLS, cancel, StartupMessage),
//! then connect and [`auth`] (relayed to the upstream), then [`relay`] until either side ends.
//! A failure in any phase is a [`SessionError`], turned into the client's ErrorResponse here.

pub mod auth;
pub mod error;
pub mod framed;
pub mod mirror;
pub mod negotiate;
pub mod relay;
pub mod settings;

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tracing::{debug, info, warn};

pub use error::SessionError;
use negotiate::Negotiated;

use crate::control::stats::Stats;
use crate::shared::Shared;
use crate::wire::protocol::backend::ErrorFields;
use crate::wire::protocol::startup::{encode_cancel, StartupMessage};
use crate::wire::stream::Stream;

/// Runs a client connection to its end. Never panics on peer input; logs how it ended.
pub async fn run(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    permit: Option<OwnedSemaphorePermit>,
    id: u64,
) {
    let _ = tcp.set_nodelay(true);
    let limits = &shared.config.limits;
    let deadline = Instant::now() + limits.startup_timeout();
    let negotiated = tokio::time::timeout_at(
        deadline,
        negotiate::negotiate(
            Stream::Tcp(tcp),
            shared.acceptor.as_ref(),
            limits.max_startup_packet_bytes,
        ),
    )
    .await;
    let (mut client, startup) = match negotiated {
        Err(_) => {
            debug!(%peer, "client did not finish startup in time");
            return;
        }
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "startup failed");
            return;
        }
        Ok(Ok(Negotiated::Cancel { pid, secret })) => {
            forward_cancel(&shared, pid, &secret).await;
            return;
        }
        Ok(Ok(Negotiated::Startup(client, startup))) => (client, startup),
    };

    // The admin console answers even when max_clients is reached: that is when operators
    // need it.
    if startup.database() == Some(crate::control::admin::DATABASE) {
        drop(permit);
        crate::control::admin::console::serve(client, &startup, &shared).await;
        return;
    }

    if permit.is_none() {
        Stats::add(&shared.stats.sessions_refused, 1);
        warn!(%peer, max_clients = limits.max_clients, "refusing client: max_clients reached");
        let fields = ErrorFields::new("FATAL", "53300", "sorry, too many clients already")
            .with_hint("raise limits.max_clients in the Tandem config");
        send_error(&mut client, &fields).await;
        return;
    }

    let user = startup.user().unwrap_or_default().to_string();
    let database = startup.database().unwrap_or_default().to_string();
    info!(%peer, %user, %database, tls = client.is_tls(), "session start");
    let registered = shared
        .sessions
        .register(id, &user, &database, peer, client.is_tls());
    Stats::add(&shared.stats.sessions_total, 1);
    shared.stats.sessions_active.fetch_add(1, Relaxed);
    let result = serve(&mut client, &startup, &shared, deadline, &registered.info).await;
    shared.stats.sessions_active.fetch_sub(1, Relaxed);
    match result {
        Ok(()) => info!("session end"),
        Err(e) => {
            Stats::add(&shared.stats.errors, 1);
            info!(error = %e, "session end");
        }
    }
    drop(permit);
}

/// Connects, authenticates, and relays. `client` is only used until the relay takes it.
async fn serve(
    client: &mut Stream,
    startup: &StartupMessage,
    shared: &Arc<Shared>,
    deadline: Instant,
    info: &Arc<crate::control::sessions::SessionInfo>,
) -> Result<(), SessionError> {
    let limits = &shared.config.limits;
    let setup = async {
        let mut upstream = shared.connector.connect().await?;
        let authed = auth::relay(
            client,
            &mut upstream,
            startup,
            &shared.cancels,
            limits.max_message_bytes,
        )
        .await?;
        Ok::<_, SessionError>((upstream, authed))
    };
    let outcome = match tokio::time::timeout_at(deadline, setup).await {
        Ok(r) => r,
        Err(_) => Err(SessionError::StartupTimeout(limits.startup_timeout_ms)),
    };
    let (upstream, authed) = match outcome {
        Ok(ok) => ok,
        Err(e) => {
            if let Some(fields) = e.client_error() {
                send_error(client, &fields).await;
            }
            return Err(e);
        }
    };
    // The relay owns both streams from here; swap a placeholder in for the caller's handle.
    let client_stream = std::mem::replace(client, Stream::Closed);
    let _cancel_key = authed.cancel;
    relay::run(
        client_stream,
        upstream,
        authed.client_leftover,
        authed.upstream_leftover,
        relay::RelayContext {
            stats: &shared.stats,
            max_message_bytes: limits.max_message_bytes,
            idle_timeout: limits.client_idle_timeout(),
            shutdown: shared.shutdown.clone(),
            mirror: client_side(shared, startup, &authed.params),
            info: Arc::clone(info),
        },
    )
    .await
}

/// The rewriting half for a session on the rules' database, if rules are active.
fn client_side(
    shared: &Shared,
    startup: &StartupMessage,
    params: &[(String, String)],
) -> Option<mirror::ClientSide> {
    let watch = shared.watch.as_ref()?;
    if startup.database() != Some(watch.database()) {
        return None;
    }
    Some(mirror::ClientSide::new(
        Arc::clone(watch),
        search_path(startup),
        Arc::new(settings::SessionSettings::from_login(params)),
        shared.drift.clone(),
        shared.sampler.clone(),
        Arc::clone(&shared.config),
        Arc::clone(&shared.stats),
    ))
}

/// The session's search_path as the client set it at startup (a `search_path` parameter or
/// `-c search_path=...` in `options`), else Postgres's default with `$user` expanded: what
/// Tandem assumes until the server confirms the real one (see `mirror::probe`).
fn search_path(startup: &StartupMessage) -> Arc<[String]> {
    let from_options = startup.param("options").and_then(|o| {
        o.split_whitespace()
            .filter_map(|w| {
                w.strip_prefix("search_path=")
                    .or_else(|| w.strip_prefix("-csearch_path="))
            })
            .next_back()
            .map(str::to_string)
    });
    let user = startup.user().unwrap_or_default().to_string();
    match startup
        .param("search_path")
        .map(str::to_string)
        .or(from_options)
    {
        Some(path) => path
            .split(',')
            .map(|s| s.trim().trim_matches('"').to_string())
            .map(|s| if s == "$user" { user.clone() } else { s })
            .filter(|s| !s.is_empty())
            .collect(),
        None => Arc::from([user, "public".to_string()]),
    }
}

async fn send_error(client: &mut Stream, fields: &ErrorFields) {
    let mut out = BytesMut::new();
    fields.encode_error(&mut out);
    let _ = client.write_all(&out).await;
    let _ = client.flush().await;
    let _ = client.shutdown().await;
}

/// How long a forwarded cancel waits for the upstream to close its connection.
const CANCEL_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Passes a client's CancelRequest to the upstream backend its key maps to, then waits (at
/// most [`CANCEL_WAIT`]) for the upstream to close the connection, as libpq does: the
/// upstream's close says the cancel was handled, and the client's own cancel connection
/// stays open until then. Closing first is also what makes PgBouncer 1.18 exit
/// ("bad client state: 0", fixed in 1.19) when Tandem runs in front of it.
async fn forward_cancel(shared: &Shared, pid: i32, secret: &[u8]) {
    let Some((upstream_pid, upstream_secret)) = shared.cancels.lookup(pid, secret) else {
        debug!(pid, "cancel request with unknown key ignored");
        return;
    };
    Stats::add(&shared.stats.cancels, 1);
    match shared.connector.connect().await {
        Ok(mut upstream) => {
            let mut out = BytesMut::new();
            encode_cancel(upstream_pid, &upstream_secret, &mut out);
            if let Err(e) = upstream.write_all(&out).await {
                warn!(error = %e, "could not send cancel request upstream");
                return;
            }
            let _ = upstream.flush().await;
            let mut rest = Vec::new();
            if tokio::time::timeout(CANCEL_WAIT, upstream.read_to_end(&mut rest))
                .await
                .is_err()
            {
                debug!("the upstream did not close a cancel connection in time");
            }
        }
        Err(e) => warn!(error = %e, "could not connect upstream for cancel request"),
    }
}

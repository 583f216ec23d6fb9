//! The relay phase: bytes both ways, untouched, with frame boundaries tracked by header.
//!
//! Two loops run in one task: client -> upstream and upstream -> client. Each forwards
//! whatever one read returned in one write (batching pipelined messages for free), looking
//! only at tags. The client loop counts what is in flight (Query, Sync, FunctionCall each
//! earn one ReadyForQuery); the upstream loop reads ReadyForQuery's status byte. Together
//! they know when a session is idle, which is when shutdown and idle timeouts may close it.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::error::SessionError;
use super::framed::{Action, Output, Scanner};
use super::mirror::{ClientSide, ExpectQueue, ProbeAnswer, Reports, RetryJob, ServerSide};
use super::settings::SessionSettings;
use crate::control::stats::Stats;
use crate::shared::Phase;
use crate::wire::protocol::backend::ErrorFields;
use crate::wire::protocol::tag;
use crate::wire::stream::{ReadHalf, Stream, WriteHalf};

/// Read buffer size; a read returns at most this much at once.
const READ_CHUNK: usize = 16 * 1024;

/// What both loops of one session know about it.
struct SessionState {
    /// Requests sent that still await their ReadyForQuery.
    in_flight: AtomicI64,
    /// Status byte of the last ReadyForQuery: I, T or E.
    tx_status: AtomicU8,
    /// The client has sent extended-protocol messages not yet closed by Sync.
    mid_pipeline: AtomicBool,
    /// The client said Terminate or went away; upstream EOF is then expected.
    client_done: AtomicBool,
    /// Responses owed for a ruled session's messages (unused without rules).
    expect: ExpectQueue,
    /// A mirrored write to run again once its missing partition exists (auto_partition),
    /// handed from the upstream loop to the client loop.
    retry: std::sync::Mutex<Option<RetryJob>>,
    /// Wakes the client loop for `retry`.
    retry_notify: tokio::sync::Notify,
    /// Tandem's search_path probe is in flight: its DataRow is inspected.
    probing: AtomicBool,
    /// The probe's answer, handed from the upstream loop to the client loop.
    probe: std::sync::Mutex<Option<ProbeAnswer>>,
    /// Wakes the client loop for `probe`.
    probe_notify: tokio::sync::Notify,
    /// Wakes the client loop at each ReadyForQuery (a message waits for a quiet session).
    ready_notify: tokio::sync::Notify,
    /// Parses of names the client side had a record of, as the server settled them.
    parses: std::sync::Mutex<Vec<(String, bool)>>,
}

impl SessionState {
    /// Nothing in flight and no extended-protocol batch open: a hidden query can be sent
    /// and answered before anything of the client's.
    fn is_quiet(&self) -> bool {
        self.in_flight.load(Relaxed) <= 0
            && !self.mid_pipeline.load(Relaxed)
            && self
                .expect
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty()
    }

    fn is_idle(&self) -> bool {
        self.in_flight.load(Relaxed) <= 0
            && self.tx_status.load(Relaxed) == b'I'
            && !self.mid_pipeline.load(Relaxed)
    }
}

/// Settings and shared objects the relay needs.
pub struct RelayContext<'a> {
    /// Process counters.
    pub stats: &'a Stats,
    /// Largest client message body.
    pub max_message_bytes: usize,
    /// Close idle clients after this long.
    pub idle_timeout: Option<Duration>,
    /// Server lifecycle.
    pub shutdown: watch::Receiver<Phase>,
    /// Rewriting for a session on the rules' database; `None` relays untouched.
    pub mirror: Option<ClientSide>,
    /// This session in the registry (SHOW SESSIONS).
    pub info: std::sync::Arc<crate::control::sessions::SessionInfo>,
}

/// What the client loop sends the upstream loop for delivery to the client.
struct ToClient {
    /// A fatal error, after which the session ends.
    fatal: oneshot::Sender<ErrorFields>,
    /// Frames to deliver (a held error whose retry could not run).
    inject: tokio::sync::mpsc::UnboundedSender<BytesMut>,
}

/// The receiving ends of [`ToClient`].
struct FromClientLoop {
    fatal: oneshot::Receiver<ErrorFields>,
    inject: tokio::sync::mpsc::UnboundedReceiver<BytesMut>,
}

/// Relays until either side ends. Returns the error that ended it, if any.
pub async fn run(
    client: Stream,
    upstream: Stream,
    client_leftover: BytesMut,
    upstream_leftover: BytesMut,
    ctx: RelayContext<'_>,
) -> Result<(), SessionError> {
    let state = SessionState {
        in_flight: AtomicI64::new(0),
        tx_status: AtomicU8::new(b'I'),
        mid_pipeline: AtomicBool::new(false),
        client_done: AtomicBool::new(false),
        expect: ExpectQueue::default(),
        retry: std::sync::Mutex::new(None),
        retry_notify: tokio::sync::Notify::new(),
        probing: AtomicBool::new(false),
        probe: std::sync::Mutex::new(None),
        probe_notify: tokio::sync::Notify::new(),
        ready_notify: tokio::sync::Notify::new(),
        parses: std::sync::Mutex::new(Vec::new()),
    };
    // Frames the client loop needs delivered to the client (a held error whose retry could
    // not run).
    let (inject_tx, inject_rx) = tokio::sync::mpsc::unbounded_channel::<BytesMut>();
    let mut ctx = ctx;
    let client_side = ctx.mirror.take();
    let settings = client_side.as_ref().map(ClientSide::settings);
    let (client_r, client_w) = client.into_split();
    let (upstream_r, upstream_w) = upstream.into_split();
    let (fatal_tx, fatal_rx) = oneshot::channel();

    let c2u = client_to_upstream(
        client_r,
        upstream_w,
        client_leftover,
        &state,
        &ctx,
        client_side,
        ToClient {
            fatal: fatal_tx,
            inject: inject_tx,
        },
    );
    let u2c = upstream_to_client(
        upstream_r,
        client_w,
        upstream_leftover,
        &state,
        &ctx,
        settings,
        FromClientLoop {
            fatal: fatal_rx,
            inject: inject_rx,
        },
    );
    tokio::pin!(c2u, u2c);
    tokio::select! {
        end = &mut c2u => {
            if end.is_err() {
                // The error is on its way to the client through the other loop: let it land.
                let _ = tokio::time::timeout(Duration::from_secs(2), &mut u2c).await;
            }
            end
        }
        end = &mut u2c => end,
    }
}

async fn client_to_upstream(
    mut client: ReadHalf,
    mut upstream: WriteHalf,
    mut buf: BytesMut,
    state: &SessionState,
    ctx: &RelayContext<'_>,
    mut client_side: Option<ClientSide>,
    to_client: ToClient,
) -> Result<(), SessionError> {
    let ToClient { fatal, inject } = to_client;
    let mut scanner = Scanner::new(ctx.max_message_bytes);
    let mut out = Output::default();
    let ruled = client_side.is_some();
    let mut shutdown = ctx.shutdown.clone();
    let mut shutdown_seen = false;
    let mut last_read = Instant::now();
    let idle_timeout = ctx.idle_timeout.unwrap_or(Duration::from_secs(86400 * 365));
    loop {
        // Tandem's own time for this batch runs from here (the client's bytes are in
        // `buf`) to its write upstream: probes, planning and rewriting included.
        let began = std::time::Instant::now();
        // A write held for a missing partition: make the partition, then run it again
        // (before any later client message, so responses stay in order).
        let job = state.retry.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let (Some(job), Some(side)) = (job, &client_side) {
            match side.make_partition(&job).await {
                Ok(created) => {
                    tracing::info!(
                        ?created,
                        "auto_partition: created the missing partition; running the write again"
                    );
                    let message = {
                        let mut queue = state.expect.lock().unwrap_or_else(|p| p.into_inner());
                        side.retry_message(&job, &mut queue)
                    };
                    state.in_flight.fetch_add(1, Relaxed);
                    upstream
                        .write_all(&message)
                        .await
                        .map_err(SessionError::UpstreamIo)?;
                }
                Err(reason) => {
                    tracing::warn!(%reason, "auto_partition: cannot create the missing partition; the client gets the error");
                    let mut frames = job.error;
                    frames.extend_from_slice(&job.ready);
                    let _ = inject.send(frames);
                }
            }
        }
        if let Some(side) = &mut client_side {
            let settled =
                std::mem::take(&mut *state.parses.lock().unwrap_or_else(|p| p.into_inner()));
            side.settle_parses(settled);
            let status = state.tx_status.load(Relaxed);
            side.set_in_transaction(status != b'I');
            side.set_transaction_failed(status == b'E');
            // A transaction boundary: nothing in flight and the server said idle.
            if state.is_idle() {
                ctx.info.set_rules_version(side.adopt_latest());
            }
            // A quiet point: ask the server for the search_path if it may have changed
            // (unless the server reported it: PostgreSQL 18).
            if side.needs_probe() && status != b'E' && state.is_quiet() && !side.follow_report() {
                let message = {
                    let mut queue = state.expect.lock().unwrap_or_else(|p| p.into_inner());
                    side.probe(&mut queue)
                };
                state.probing.store(true, Relaxed);
                state.in_flight.fetch_add(1, Relaxed);
                upstream
                    .write_all(&message)
                    .await
                    .map_err(SessionError::UpstreamIo)?;
                let answer = loop {
                    if let Some(answer) =
                        state.probe.lock().unwrap_or_else(|p| p.into_inner()).take()
                    {
                        break answer;
                    }
                    state.probe_notify.notified().await;
                };
                side.learn(answer);
            }
        }
        // A large statement is planned on the blocking pool first, so this worker's other
        // sessions are not held up; the scan below takes that plan (see `mirror::ahead`).
        if let Some(side) = &mut client_side {
            let queue_empty = || {
                state
                    .expect
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .is_empty()
            };
            side.plan_ahead(&buf, queue_empty).await;
        }
        let mut queries = 0u64;
        let mut syncs = 0i64;
        let mut terminated = false;
        let mut pipeline = None;
        let scanned = {
            // Held only while scanning, never across an await.
            let mut queue = ruled.then(|| state.expect.lock().unwrap_or_else(|p| p.into_inner()));
            scanner.scan(
                &buf,
                |t| ruled && ClientSide::inspects(t),
                |t, body| {
                    let action = match (&mut client_side, &mut queue) {
                        (Some(side), Some(queue)) => side.visit(t, body, queue),
                        _ => Action::Forward,
                    };
                    if matches!(action, Action::Stop) {
                        // Not sent yet: it is counted when it is.
                        return action;
                    }
                    match t {
                        tag::QUERY | tag::FUNCTION_CALL => {
                            syncs += 1;
                            queries += u64::from(t == tag::QUERY);
                        }
                        tag::SYNC => {
                            syncs += 1;
                            pipeline = Some(false);
                        }
                        tag::EXECUTE => {
                            queries += 1;
                            pipeline = Some(true);
                        }
                        b'P' | b'B' | b'D' | b'C' | b'H' => pipeline = Some(true),
                        tag::TERMINATE => terminated = true,
                        _ => {}
                    }
                    action
                },
                &mut out,
            )
        };
        let n = match scanned {
            Ok(n) => n,
            Err(e) => {
                let err = SessionError::ClientFrame(e);
                let _ = upstream.write_all(&TERMINATE).await;
                if let Some(fields) = err.client_error() {
                    let _ = fatal.send(fields);
                }
                return Err(err);
            }
        };
        let waiting = client_side.as_mut().is_some_and(ClientSide::take_waiting);
        if waiting && n == 0 && state.is_quiet() {
            // Quiet already: ask for the search_path at the top of the loop.
            continue;
        }
        if n > 0 {
            if syncs > 0 && state.in_flight.fetch_add(syncs, Relaxed) <= 0 {
                ctx.info.set_active(true);
            }
            if let Some(p) = pipeline {
                state.mid_pipeline.store(p, Relaxed);
            }
            ctx.stats.added_to_server.observe(began.elapsed());
            upstream
                .write_all(out.bytes(&buf, n))
                .await
                .map_err(SessionError::UpstreamIo)?;
            buf.advance(n);
            Stats::add(&ctx.stats.bytes_from_clients, n as u64);
            Stats::add(&ctx.stats.queries, queries);
            ctx.info.add_queries(queries);
            if terminated {
                state.client_done.store(true, Relaxed);
                let _ = upstream.shutdown().await;
                return Ok(());
            }
            continue;
        }
        // Nothing forwardable is buffered: wait for the client (or a timer, or shutdown).
        buf.reserve(READ_CHUNK);
        tokio::select! {
            _ = state.retry_notify.notified() => {}
            // A message waits for the session to be quiet (see `mirror::probe`).
            _ = state.ready_notify.notified(), if waiting => {}
            read = client.read_buf(&mut buf) => match read {
                Ok(n) if n > 0 => last_read = Instant::now(),
                other => {
                    // The client left, politely or not. Closing the upstream makes Postgres
                    // roll back whatever transaction was open.
                    state.client_done.store(true, Relaxed);
                    let _ = upstream.write_all(&TERMINATE).await;
                    let _ = upstream.shutdown().await;
                    return other.map(|_| ()).map_err(SessionError::ClientIo);
                }
            },
            _ = tokio::time::sleep_until(last_read + idle_timeout), if ctx.idle_timeout.is_some() => {
                if state.is_idle() {
                    let _ = upstream.write_all(&TERMINATE).await;
                    let _ = fatal.send(ErrorFields::new(
                        "FATAL",
                        "57P05",
                        "terminating connection due to idle-session timeout",
                    ));
                    return Err(SessionError::IdleTimeout);
                }
                last_read = Instant::now();
            }
            changed = shutdown.changed(), if !shutdown_seen => {
                if changed.is_err() || *shutdown.borrow() != Phase::Running {
                    shutdown_seen = true;
                    if state.is_idle() {
                        let _ = upstream.write_all(&TERMINATE).await;
                        let _ = fatal.send(admin_shutdown());
                        return Err(SessionError::Shutdown);
                    }
                    // Busy: the upstream loop closes it at its next idle ReadyForQuery.
                }
            }
        }
    }
}

const TERMINATE: [u8; 5] = [tag::TERMINATE, 0, 0, 0, 4];

fn admin_shutdown() -> ErrorFields {
    ErrorFields::new(
        "FATAL",
        "57P01",
        "terminating connection due to administrator command",
    )
}

fn upstream_frame_inspected(tag: u8) -> bool {
    tag == tag::READY_FOR_QUERY || tag == tag::ERROR_RESPONSE
}

async fn upstream_to_client(
    mut upstream: ReadHalf,
    mut client: WriteHalf,
    mut buf: BytesMut,
    state: &SessionState,
    ctx: &RelayContext<'_>,
    settings: Option<Arc<SessionSettings>>,
    from_client_loop: FromClientLoop,
) -> Result<(), SessionError> {
    // A ruled session: responses are fixed against the client side's expectations, and the
    // server's reports of the settings that change how it reads SQL are recorded.
    let ruled = settings.is_some();
    let FromClientLoop {
        mut fatal,
        mut inject,
    } = from_client_loop;
    let mut output = Output::default();
    // Upstream frames are not size-limited (Postgres has its own), but lengths are checked.
    let mut scanner = Scanner::new(i32::MAX as usize);
    let mut fatal_open = true;
    let mut upstream_said_fatal = false;
    let mut out = BytesMut::new();
    loop {
        // Tandem's own time for this batch: from the server's bytes in `buf` to the write.
        let began = std::time::Instant::now();
        let mut ready = 0i64;
        let mut status = None;
        let mut errors = 0u64;
        let mut retry = None;
        let mut reports = Reports::default();
        let probing = state.probing.load(Relaxed);
        let scanned = {
            let mut queue = ruled.then(|| state.expect.lock().unwrap_or_else(|p| p.into_inner()));
            scanner.scan(
                &buf,
                |t| {
                    upstream_frame_inspected(t)
                        || (ruled && (ServerSide::inspects(t) || t == tag::PARAMETER_STATUS))
                        || (probing && t == tag::DATA_ROW)
                },
                |t, body| {
                    match t {
                        tag::PARAMETER_STATUS => {
                            if let Some(settings) = &settings {
                                settings.report_message(body);
                            }
                        }
                        tag::READY_FOR_QUERY => {
                            ready += 1;
                            status = body.first().copied();
                        }
                        tag::ERROR_RESPONSE => {
                            errors += 1;
                            ctx.stats.error_response(body);
                            let severity = ErrorFields::parse(body).severity;
                            upstream_said_fatal |= severity == "FATAL" || severity == "PANIC";
                        }
                        _ => {}
                    }
                    match &mut queue {
                        Some(queue) => {
                            ServerSide::visit_all(t, body, queue, &mut retry, &mut reports)
                        }
                        None => Action::Forward,
                    }
                },
                &mut output,
            )
        };
        let n = match scanned {
            Ok(n) => n,
            Err(e) => {
                let err = SessionError::UpstreamFrame(e);
                if let Some(fields) = err.client_error() {
                    let _ = deliver(&mut client, &fields, &mut out).await;
                }
                return Err(err);
            }
        };
        if let Some(job) = retry {
            *state.retry.lock().unwrap_or_else(|p| p.into_inner()) = Some(job);
            state.retry_notify.notify_one();
        }
        for (rule, rows) in reports.mirrored.drain(..) {
            ctx.stats.rules.completed(rule, rows);
        }
        if !reports.parses.is_empty() {
            state
                .parses
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .append(&mut reports.parses);
        }
        if let Some(answer) = reports.probe {
            state.probing.store(false, Relaxed);
            *state.probe.lock().unwrap_or_else(|p| p.into_inner()) = Some(answer);
            state.probe_notify.notify_one();
        }
        if n > 0 {
            ctx.stats.added_to_client.observe(began.elapsed());
            client
                .write_all(output.bytes(&buf, n))
                .await
                .map_err(SessionError::ClientIo)?;
            buf.advance(n);
            Stats::add(&ctx.stats.bytes_to_clients, n as u64);
            Stats::add(&ctx.stats.errors, errors);
            if ready > 0 {
                // Still owed a ReadyForQuery: the next request of a pipeline runs from now.
                let owed = state.in_flight.fetch_sub(ready, Relaxed) - ready;
                ctx.info.set_active(owed > 0);
                state.ready_notify.notify_one();
                if let Some(s) = status {
                    state.tx_status.store(s, Relaxed);
                    ctx.info.set_state(s);
                }
                if *ctx.shutdown.borrow() != Phase::Running && state.is_idle() {
                    deliver(&mut client, &admin_shutdown(), &mut out).await?;
                    return Err(SessionError::Shutdown);
                }
            }
            continue;
        }
        buf.reserve(READ_CHUNK);
        tokio::select! {
            biased;
            Some(frames) = inject.recv() => {
                client.write_all(&frames).await.map_err(SessionError::ClientIo)?;
                client.flush().await.map_err(SessionError::ClientIo)?;
            }
            msg = &mut fatal, if fatal_open => match msg {
                Ok(fields) => {
                    deliver(&mut client, &fields, &mut out).await?;
                    return Ok(());
                }
                Err(_) => fatal_open = false,
            },
            read = upstream.read_buf(&mut buf) => match read {
                Ok(n) if n > 0 => {}
                other => {
                    if state.client_done.load(Relaxed) || upstream_said_fatal {
                        return Ok(());
                    }
                    let err = match other {
                        Err(e) => SessionError::UpstreamIo(e),
                        Ok(_) => SessionError::UpstreamIo(std::io::ErrorKind::UnexpectedEof.into()),
                    };
                    if let Some(fields) = err.client_error() {
                        let _ = deliver(&mut client, &fields, &mut out).await;
                    }
                    return Err(err);
                }
            },
        }
    }
}

async fn deliver(
    client: &mut WriteHalf,
    fields: &ErrorFields,
    out: &mut BytesMut,
) -> Result<(), SessionError> {
    out.clear();
    fields.encode_error(out);
    client
        .write_all(out)
        .await
        .map_err(SessionError::ClientIo)?;
    client.flush().await.map_err(SessionError::ClientIo)?;
    Ok(())
}

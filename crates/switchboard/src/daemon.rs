//! The tokio shell: sockets, one core task, one timer, signals, and the registration file.
//!
//! All SIP state lives in one [`Switch`] owned by one task, so the hot path takes no locks. Receive
//! tasks (one per UDP socket, one per TCP connection) hand complete messages over three bounded
//! lanes ([`crate::lanes`]); the core task answers by sending straight on the sockets. The core never touches the disk:
//! registrations are handed to a writer task as text.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use sip_core::message::{Peer, Transport};
use sip_core::proxy::Transmit;
use sip_core::registrar::Registrar;
use sip_core::time::Instant;
use tokio::net::UdpSocket;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::app::Switch;
use crate::config::{Loaded, TransportName};
use crate::ratelimit::LogLimiter;
use crate::setup::{Setup, SetupErrors};
use crate::transport::{Inbound, TcpLimits, TcpTransport};

/// Capacities of the lanes from receivers to the core (`crate::lanes`): bulk (ACK, BYE, REGISTER,
/// ...) and setup (INVITEs). When one is full, UDP receivers drop (the peer retransmits) and TCP
/// readers wait: memory stays bounded under a flood.
const BULK_QUEUE: usize = 8192;
const SETUP_QUEUE: usize = 4096;

/// Kernel receive buffer asked for each UDP socket: a burst (a flood, a mass re-registration) waits
/// here instead of being dropped before we can read it.
const UDP_RECV_BUFFER: usize = 8 << 20;

/// A UDP socket with a large receive buffer, for the tokio reactor.
fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    // Best effort: the kernel caps it at net.core.rmem_max.
    let _ = s.set_recv_buffer_size(UDP_RECV_BUFFER);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// Capacity of the reserved lane (emergency INVITEs, responses to INVITEs).
const RESERVED_QUEUE: usize = 1024;

/// After the last pending transaction is answered, how long a draining daemon still routes the
/// in-dialog requests (ACK, BYE) of calls just set up before it exits.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// The longest a graceful shutdown waits for open transactions.
const DRAIN_LIMIT: Duration = Duration::from_secs(40);

/// Run the daemon until SIGTERM (graceful) or SIGINT (fast).
///
/// Call it on a current-thread runtime: the core loop, the UDP receivers and the sends share that
/// thread. `aux` runs what must not delay SIP and may use the other core: the media pacer, TCP
/// connections and the admin listener.
pub async fn run(mut setup: Setup, aux: tokio::runtime::Handle) -> anyhow::Result<()> {
    // Borrowed, not cloned: with a province's accounts the config is tens of megabytes.
    let loaded = &setup.loaded;
    let c = &loaded.config;
    // The store's writer thread: CDRs leave the hot path over its bounded queue.
    // The outbox thread POSTs work orders to sub-centers; the writer wakes it after each commit.
    let outbox_wake = Arc::new(tokio::sync::Notify::new());
    let mut outbox_task = None;
    let mut store_config = None;
    let (cdr_store, store_writer) = match &c.store {
        Some(sc) => {
            let mut sc = sc.clone();
            sc.path = loaded.resolve(&sc.path);
            if let Some(dir) = sc.path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            // Off the runtime: the PostgreSQL client blocks (and runs its own small runtime).
            let open_cfg = sc.clone();
            let wake = outbox_wake.clone();
            let (s, w) = tokio::task::spawn_blocking(move || {
                store::open(&open_cfg, Some(Box::new(move |_| wake.notify_one())))
            })
            .await
            .context("store open task")?
            .with_context(|| format!("opening the store {}", sc.path.display()))?;
            info!(path = %sc.path.display(), "store open (CDRs, work orders)");
            store_config = Some(sc.clone());
            outbox_task = Some(
                crate::outbox::OutboxTask::spawn(sc.clone(), outbox_wake.clone())
                    .context("starting the outbox thread")?,
            );
            (Some(s), Some(w))
        }
        None => {
            warn!("no [store] section: CDRs are not kept");
            (None, None)
        }
    };
    let clock = Clock::new();
    let secret: [u8; 32] = rand::random();
    let mut sw = Switch::new(
        loaded,
        setup.plan.clone(),
        setup.bridge.clone(),
        setup.seats.as_ref(),
        cdr_store.clone(),
        secret,
        rand::random(),
    );
    sw.on_wall_clock(clock.now(), unix_now());
    // Early media: one task paces every announcement stream (crate::media_task).
    let media_task = setup.media.clone().map(|(settings, prompts)| {
        let (mtx, mrx) = mpsc::channel(crate::media_task::MEDIA_QUEUE);
        let bind_ip = settings.ports.ip;
        info!(ports = ?settings.ports, "early media on");
        crate::media_task::log_tibetan_fallback(&settings, &prompts);
        sw.enable_media(settings, mtx);
        aux.spawn(crate::media_task::run(bind_ip, prompts, mrx))
    });
    sw.set_unix_origin_ms(unix_now_ms() - clock.now().since_origin().as_millis() as i64);
    if setup.bridge.is_none() {
        error!("ALARM: no [emergency] section: emergency calls will be refused with 503");
    }
    info!(plan = %setup.plan.name(), lines = setup.plan.lines().len(), "dialplan loaded");

    let state_file = loaded.resolve(&c.registrar.state_file);
    // In an HA pair the shared table is the truth about registrations (the other node may have
    // served since this one wrote its file): the standby's warm copy comes from there.
    if let Some(h) = &c.ha {
        sw.enable_ha(h.max_call_s);
        info!(file = %state_file.display(), "HA: registrations come from the shared database, not from the state file");
    } else {
        restore_state_file(&mut sw, &state_file, clock.now());
    }

    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    // The HA pair: a standby binds nothing until it holds the lock (ha.rs).
    let mut ha = match &c.ha {
        Some(h) => Some(crate::ha::Ha::start(h.clone()).context("starting the HA thread")?),
        None => None,
    };
    // The admin listener: /metrics, the admin API and the wallboard (crate::admin).
    let (admin_tx, mut admin_rx) =
        mpsc::channel::<crate::admin::Request>(crate::admin::REQUEST_QUEUE);
    let (snap_tx, snap_rx) =
        tokio::sync::watch::channel(Arc::new(crate::admin::Snapshot::default()));
    let mut pending_reloads: Vec<tokio::sync::oneshot::Sender<crate::admin::ReloadResult>> =
        Vec::new();
    if c.metrics.enabled {
        let prometheus = crate::metrics::install().context("installing the metrics recorder")?;
        let tokens = crate::admin::load_tokens(loaded).map_err(anyhow::Error::msg)?;
        let api = tokens.is_some();
        let listener = crate::admin::Listener {
            addr: c.metrics.listen,
            prometheus,
            tokens: tokens.map(|(a, w)| crate::admin::Tokens::new(&a, w.as_deref())),
            core: admin_tx.clone(),
            snapshots: snap_rx,
            seats: setup.seats.take().map(Arc::new),
            store: c.store.as_ref().map(|sc| {
                let mut sc = sc.clone();
                sc.path = loaded.resolve(&sc.path);
                sc
            }),
            ha: ha.as_ref().map(|h| crate::admin::HaView {
                role: h.role.clone(),
                shared: h.shared.clone(),
            }),
        };
        aux.spawn(crate::admin::spawn(listener))
            .await
            .context("admin listener task")?
            .with_context(|| format!("starting the metrics listener on {}", c.metrics.listen))?;
        info!(addr = %c.metrics.listen, api, "metrics on http://{}/metrics", c.metrics.listen);
        if api && !c.metrics.listen.ip().is_loopback() {
            warn!(addr = %c.metrics.listen, "the admin API listens on a non-loopback address: keep it behind a firewall");
        }
    }

    // Standby: keep the warm copy until this node holds the lock.
    let mut took_lock = None;
    if let Some(h) = &mut ha {
        metrics::gauge!(crate::metrics::HA_ACTIVE).set(0.0);
        info!("HA: standby until this node holds the lock");
        loop {
            tokio::select! {
                biased;
                Some(w) = h.warm.recv() => apply_warm(&mut sw, &clock, h, w),
                r = h.role.changed() => {
                    if r.is_err() {
                        anyhow::bail!("the HA thread stopped");
                    }
                    // Active (or already fenced again: it then serves emergency calls only).
                    if *h.role.borrow() != crate::ha::Role::Standby {
                        break;
                    }
                }
                _ = sigterm.recv() => { info!("SIGTERM while standby: exiting"); return Ok(()); }
                _ = sigint.recv() => { info!("SIGINT while standby: exiting"); return Ok(()); }
            }
        }
        // The HA thread sent its last read (and the calls the dead node left open) before it
        // reported Active: all of it is queued now.
        took_lock = Some(std::time::Instant::now());
        while let Ok(w) = h.warm.try_recv() {
            apply_warm(&mut sw, &clock, h, w);
        }
        info!(
            registrations = sw.registrar.binding_count(),
            inherited_calls = sw.inherited_calls(),
            "HA: active; registrations and agent states taken over from the warm copy"
        );
        metrics::gauge!(crate::metrics::HA_ACTIVE).set(1.0);
    }
    let in_ha = ha.is_some();
    // Agents' states (logged in, out, on break) from the previous run, on top of the restored
    // registrations.
    if let (Some(sc), false) = (&store_config, in_ha) {
        use store::StoreBackend;
        let read_cfg = sc.clone();
        let rows = tokio::task::spawn_blocking(move || {
            store::open_backend(&read_cfg)
                .and_then(|mut r| r.load_kv(store::KvSpace::AgentState, unix_now_ms()))
        })
        .await
        .context("agent-state read task")?;
        match rows {
            Ok(rows) if !rows.is_empty() => {
                let n = sw.restore_agent_states(clock.now(), rows);
                info!(restored = n, "agent states restored");
            }
            Ok(_) => {}
            Err(e) => {
                warn!(%e, "cannot read saved agent states; agents start as their centers say")
            }
        }
    }

    // The reserved lane: emergency INVITEs never wait behind (or get dropped with) other traffic;
    // INVITEs go ahead of recent bulk messages (`crate::lanes`).
    let (lanes, mut lane_rx) = crate::lanes::lanes(
        RESERVED_QUEUE,
        SETUP_QUEUE,
        BULK_QUEUE,
        Duration::from_millis(*c.sip.invite_overtake_ms.get_ref()),
    );
    let mut udp: Vec<Arc<UdpSocket>> = Vec::new();
    let mut peeks: Vec<UdpPeek> = Vec::new();
    let mut tcp: Vec<TcpTransport> = Vec::new();
    let mut tls: Vec<TcpTransport> = Vec::new();
    // One handle for every TLS listener: a reload swaps the certificate in it for all of them.
    let tls_handle = setup.tls.clone().map(crate::tls::TlsHandle::new);
    let stream_limits = TcpLimits {
        max_connections: c.sip.tcp_max_connections,
        max_message_bytes: c.sip.max_message_bytes,
        idle_timeout: Duration::from_secs(c.sip.tcp_idle_timeout_s),
        partial_message_timeout: Duration::from_secs(c.sip.tcp_partial_timeout_s),
        ..TcpLimits::default()
    };
    for l in &c.sip.listen {
        let l = l.get_ref();
        match l.transport {
            TransportName::Udp => {
                let sock = Arc::new(
                    bind_retrying(in_ha, || bind_udp(l.addr))
                        .await
                        .with_context(|| format!("binding UDP {}", l.addr))?,
                );
                info!(addr = %l.addr, "listening on UDP");
                let local = sock.local_addr().unwrap_or(l.addr);
                let max = c.sip.max_message_bytes;
                peeks.push(
                    UdpPeek::new(&sock, UdpIntake::new(local, max, lanes.clone()))
                        .with_context(|| format!("a second descriptor of UDP {}", l.addr))?,
                );
                tokio::spawn(udp_receiver(
                    sock.clone(),
                    UdpIntake::new(local, max, lanes.clone()),
                ));
                udp.push(sock);
            }
            TransportName::Tcp => {
                let t = aux
                    .spawn(TcpTransport::bind(
                        l.addr,
                        stream_limits.clone(),
                        lanes.clone(),
                    ))
                    .await
                    .context("TCP bind task")?
                    .with_context(|| format!("binding TCP {}", l.addr))?;
                info!(addr = %l.addr, "listening on TCP");
                tcp.push(t);
            }
            TransportName::Tls => {
                // The config check makes a TLS listener come with a [tls] section.
                let handle = tls_handle
                    .clone()
                    .context("a TLS listener without a [tls] section")?;
                let material = handle.current();
                let t = aux
                    .spawn(TcpTransport::bind_tls(
                        l.addr,
                        stream_limits.clone(),
                        handle,
                        lanes.clone(),
                    ))
                    .await
                    .context("TLS bind task")?
                    .with_context(|| format!("binding TLS {}", l.addr))?;
                info!(
                    addr = %l.addr,
                    cert = %material.cert_file.display(),
                    sha256 = %material.fingerprint,
                    outbound = material.client.is_some(),
                    "listening on TLS"
                );
                tls.push(t);
            }
        }
    }
    drop(lanes);
    warn_demo_credentials(loaded);

    let (persist_tx, persist_rx) = mpsc::channel::<String>(1);
    let writer = tokio::spawn(state_writer(state_file.clone(), persist_rx));

    let mut sighup = signal(SignalKind::hangup())?;
    let reload_requests = Arc::new(tokio::sync::Notify::new());
    let (reload_tx, mut reload_rx) = mpsc::channel::<Result<Setup, SetupErrors>>(1);
    tokio::spawn(reloader(
        loaded.path.clone(),
        reload_requests.clone(),
        reload_tx,
    ));
    let mut out: Vec<Transmit> = Vec::with_capacity(16);
    let mut drain_until: Option<tokio::time::Instant> = None;
    let mut drained_at: Option<tokio::time::Instant> = None;
    let mut next_persist = tokio::time::Instant::now();
    let sender = Sender::new(udp, tcp, tls);

    let mut ha_tick = tokio::time::interval(Duration::from_millis(
        c.ha.as_ref().map_or(1000, |h| h.heartbeat_ms.max(50)),
    ));
    ha_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lost_lock = false;
    let mut stats_tick = tokio::time::interval(Duration::from_secs(1));
    stats_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The rosters follow the wall clock; a tick every 30 s is ample for shifts in whole minutes.
    let mut wall_tick = tokio::time::interval(Duration::from_secs(30));
    wall_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    if let Some(t) = took_lock {
        info!(
            ms = format!("{:.1}", t.elapsed().as_secs_f64() * 1e3),
            "HA: serving, this long after taking the lock"
        );
    }
    let mut turns = TurnClock::default();
    info!("switchboard running");
    loop {
        let deadline = sw.next_deadline().map(|d| clock.to_tokio(d));
        let sleep_until =
            deadline.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        // Which kind of work this turn did and when it started (TurnClock).
        let mut turn: Option<(&'static str, std::time::Instant)> = None;
        // The first SIP message of this wake-up (the batch below takes the rest).
        let mut first: Option<Inbound> = None;
        tokio::select! {
            // Emergency first, always.
            biased;
            Some(m) = lane_rx.reserved.recv() => first = Some(m),
            // Due timers before new requests: under a load that never lets the queue run dry,
            // retransmissions and timeouts still run (each batch is at most 64 messages).
            _ = tokio::time::sleep_until(sleep_until) => {
                turn = Some(("timers", std::time::Instant::now()));
                sw.on_timeout(clock.now(), &mut out);
            }
            msg = lane_rx.ordinary.recv() => match msg {
                Some(m) => first = Some(m),
                None => break,
            },
            _ = sigterm.recv() => {
                info!("SIGTERM: draining (no new calls; open transactions finish)");
                sw.start_draining();
                drain_until = Some(tokio::time::Instant::now() + DRAIN_LIMIT);
            }
            _ = sigint.recv() => {
                info!("SIGINT: exiting now");
                break;
            }
            r = role_change(&mut ha) => match r {
                crate::ha::Role::Standby => {
                    error!("HA: the other node holds the lock now; this node stops serving and exits");
                    lost_lock = true;
                    break;
                }
                role => {
                    let stale = ha.as_ref().is_some_and(|h| h.heartbeat_stale());
                    sw.set_fenced(role == crate::ha::Role::Fenced || stale);
                    metrics::gauge!(crate::metrics::HA_ACTIVE).set(if role == crate::ha::Role::Active { 1.0 } else { 0.0 });
                }
            },
            _ = ha_tick.tick(), if in_ha => {
                if let Some(h) = &ha {
                    let role = *h.role.borrow();
                    sw.set_fenced(role != crate::ha::Role::Active || h.heartbeat_stale());
                }
            }
            _ = stats_tick.tick() => {
                turn = Some(("stats", std::time::Instant::now()));
                turns.publish();
                if let Some(h) = &ha {
                    sw.close_lost_calls(clock.now());
                    h.shared.bindings.store(sw.registrar.binding_count() as u64, std::sync::atomic::Ordering::Relaxed);
                    h.shared.inherited_calls.store(sw.inherited_calls() as u64, std::sync::atomic::Ordering::Relaxed);
                }
                sw.publish_metrics(clock.now());
                sw.persist_agent_states(clock.now());
                snap_tx.send_replace(Arc::new(sw.admin_snapshot(clock.now(), unix_now_ms())));
            }
            Some(req) = admin_rx.recv() => {
                turn = Some(("admin", std::time::Instant::now()));
                crate::admin::answer(&mut sw, clock.now(), req, &mut out, &mut pending_reloads, || {
                    info!("admin API: reloading config and dialplans");
                    reload_requests.notify_one();
                });
            }
            _ = wall_tick.tick() => {
                turn = Some(("rosters", std::time::Instant::now()));
                sw.on_wall_clock(clock.now(), unix_now());
            }
            _ = sighup.recv() => {
                info!("SIGHUP: reloading config and dialplans");
                reload_requests.notify_one();
            }
            Some(result) = reload_rx.recv() => {
                turn = Some(("reload", std::time::Instant::now()));
                match result {
                    Ok(new) => {
                        if new.loaded.config.sip.listen.iter().map(|l| (l.get_ref().transport, l.get_ref().addr)).ne(c.sip.listen.iter().map(|l| (l.get_ref().transport, l.get_ref().addr))) {
                            warn!("reload: listener changes need a restart; the listeners stay as they are");
                        }
                        sw.apply_reload(&new.loaded, new.plan.clone(), new.bridge.clone());
                        lane_rx.ordinary.set_overtake(Duration::from_millis(*new.loaded.config.sip.invite_overtake_ms.get_ref()));
                        // New handshakes present the reloaded certificate; connections up keep theirs.
                        if let (Some(h), Some(m)) = (&tls_handle, new.tls.clone()) {
                            let (cert, sha256) = (m.cert_file.display().to_string(), m.fingerprint.clone());
                            h.replace(m);
                            info!(%cert, %sha256, "reload: TLS certificate in service for new connections");
                        }
                        if new.seats.is_some() {
                            info!("reload: the seat manager keeps its running queues, agents and rosters (restart to change them)");
                        }
                        metrics::counter!(crate::metrics::CONFIG_RELOADS, "result" => "ok").increment(1);
                        for r in pending_reloads.drain(..) {
                            let _ = r.send(crate::admin::ReloadResult { ok: true, plan: Some(new.plan.name().to_string()), errors: Vec::new() });
                        }
                        info!(plan = %new.plan.name(), lines = new.plan.lines().len(), "reload: new config and dialplan in service");
                    }
                    Err(e) => {
                        metrics::counter!(crate::metrics::CONFIG_RELOADS, "result" => "error").increment(1);
                        for r in pending_reloads.drain(..) {
                            let _ = r.send(crate::admin::ReloadResult { ok: false, plan: None, errors: e.0.clone() });
                        }
                        for line in &e.0 {
                            error!("reload refused: {line}");
                        }
                        error!(errors = e.0.len(), "reload refused; the running config and dialplan stay in service");
                    }
                }
            }
        }
        // SIP messages: this one and whatever else is already queued, up to 64, each timed on its
        // own, each one's output sent before the next is handled (a message never waits for the
        // rest of its batch). The lanes choose the next one at every step: the reserved lane (INVITE
        // responses, emergency INVITEs) first, then INVITEs ahead of recent bulk (`crate::lanes`).
        if let Some(m) = first.take() {
            let mut next = Some(m);
            // New INVITEs' 100 Trying wait for the end of the batch (one `sendto` per INVITE in
            // a burst, none for an INVITE whose 180 comes back meanwhile).
            sw.start_batch();
            for left in (0..64).rev() {
                let Some(m) = next.take() else { break };
                let started = std::time::Instant::now();
                let peer = Peer {
                    transport: m.transport,
                    addr: m.peer,
                    conn: m.conn,
                };
                sw.on_message(clock.now(), peer, &m.bytes, &mut out);
                // In the proxy's order (a new INVITE's 100 Trying waits for the end of the batch).
                for t in out.drain(..) {
                    sender.send(t).await;
                }
                turns.record("sip", started.elapsed());
                if left > 0 {
                    for p in &mut peeks {
                        p.drain();
                    }
                    next = lane_rx.try_next();
                }
            }
            sw.end_batch(clock.now(), &mut out);
        }
        for t in out.drain(..) {
            sender.send(t).await;
        }
        if let Some((what, started)) = turn {
            turns.record(what, started.elapsed());
        }
        // HA: the bindings the REGISTERs of this turn changed, right after their 200 OKs went out.
        if let Some(h) = &ha {
            if let Some(rows) = sw.changed_registrations(clock.now(), unix_now_ms()) {
                let batch = crate::ha::RegistrationBatch {
                    rows,
                    at: std::time::Instant::now(),
                };
                // Full (the database is slow or gone): the AORs stay marked for the next turn.
                if h.registrations.try_send(batch).is_ok() {
                    sw.registrations_shared();
                }
            }
        }
        if sw.registrations_dirty && tokio::time::Instant::now() >= next_persist {
            let text = export_text(&sw.registrar, clock.now());
            if persist_tx.try_send(text).is_ok() {
                sw.registrations_dirty = false;
                next_persist = tokio::time::Instant::now() + Duration::from_secs(1);
            }
        }
        // Without dialog tracking, transactions are all a drain can wait for: an answered call's BYE
        // is routed only while its INVITE transactions linger (64·T1, RFC 6026), not later.
        if let Some(limit) = drain_until {
            // Done when nothing waits for an answer any more, plus a short grace for the ACKs and
            // BYEs of calls just answered; completed transactions that only absorb retransmissions
            // (Timer J: 32 s) do not hold the exit up. Never longer than DRAIN_LIMIT.
            let now = tokio::time::Instant::now();
            let pending = sw.proxy.pending_count();
            if pending > 0 {
                drained_at = None;
            } else if drained_at.is_none() {
                drained_at = Some(now);
            }
            if drained_at.is_some_and(|t| now >= t + DRAIN_GRACE) || now >= limit {
                let (servers, clients) = sw.proxy.transaction_count();
                info!(pending, servers, clients, "drained; exiting");
                break;
            }
        }
    }
    // Last write of the registrations, synchronously, so a restart finds them.
    drop(persist_tx);
    drop(admin_tx);
    let _ = writer.await;
    if let Err(e) = write_atomically(&state_file, &export_text(&sw.registrar, clock.now())) {
        error!(file = %state_file.display(), %e, "could not save registrations");
    }
    sw.persist_agent_states(clock.now());
    if let Some(h) = ha.take().filter(|_| !lost_lock) {
        // The registrations handed over in the last turns reach the shared table before the
        // lock session ends with the process (unless the database is gone). SIGINT exits
        // without a drain: this is what keeps its last registrations.
        if let Some(rows) = sw.changed_registrations(clock.now(), unix_now_ms()) {
            let at = std::time::Instant::now();
            let _ = h
                .registrations
                .try_send(crate::ha::RegistrationBatch { rows, at });
        }
        let _ = tokio::task::spawn_blocking(move || h.finish(Duration::from_secs(2))).await;
    }
    if let Some(o) = outbox_task {
        let _ = tokio::task::spawn_blocking(move || o.stop()).await;
    }
    // Every CDR accepted so far is committed before the process ends.
    if let Some(t) = media_task {
        t.abort();
    }
    if let Some(w) = store_writer {
        drop(sw);
        if let Err(e) = tokio::task::spawn_blocking(move || w.shutdown())
            .await
            .unwrap_or(Ok(()))
        {
            error!(%e, "store did not shut down cleanly");
        }
    }
    info!("switchboard stopped");
    if lost_lock {
        anyhow::bail!("HA: another node took the lock");
    }
    Ok(())
}

/// The next HA role change; never resolves without HA.
async fn role_change(ha: &mut Option<crate::ha::Ha>) -> crate::ha::Role {
    match ha {
        Some(h) => {
            if h.role.changed().await.is_err() {
                // The HA thread is gone: treat as fenced, forever.
                std::future::pending::<()>().await;
            }
            let r = *h.role.borrow();
            r
        }
        None => std::future::pending().await,
    }
}

/// Standby: applies what the HA thread read to the warm copy.
fn apply_warm(sw: &mut Switch, clock: &Clock, h: &crate::ha::Ha, w: crate::ha::Warm) {
    use std::sync::atomic::Ordering::Relaxed;
    match w {
        crate::ha::Warm::Registrations { rows, full } => {
            let n = rows.len();
            let held = sw.apply_shared_registrations(clock.now(), unix_now_ms(), rows, full);
            h.shared.bindings.store(held as u64, Relaxed);
            debug!(aors = n, full, held, "HA: warm registrations updated");
        }
        crate::ha::Warm::Agents(rows) => {
            let n = sw.restore_agent_states(clock.now(), rows);
            debug!(applied = n, "HA: warm agent states updated");
        }
        crate::ha::Warm::OpenCalls(rows) => {
            let (waiting, lost) = sw.inherit_open_calls(clock.now(), rows);
            h.shared.inherited_calls.store(waiting as u64, Relaxed);
            info!(
                waiting,
                failover_lost = lost,
                "HA: answered calls taken over from the other node"
            );
        }
    }
}

/// Restores the registrar's state file of the previous run (a single node).
fn restore_state_file(sw: &mut Switch, state_file: &std::path::Path, now: Instant) {
    match std::fs::read_to_string(state_file) {
        Ok(text) => match sip_core::registrar::BindingRecord::from_text(&text) {
            Ok(records) => {
                let n = sw.restore_registrations(now, records);
                info!(restored = n, file = %state_file.display(), "registrations restored");
            }
            Err(e) => {
                warn!(file = %state_file.display(), %e, "registration file unreadable; starting empty")
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => warn!(file = %state_file.display(), %e, "cannot read registration file"),
    }
}

/// Binds, and in an HA pair retries for a while: the node that held the service address may still
/// be closing its sockets when this one takes over.
async fn bind_retrying<T>(
    retry: bool,
    mut bind: impl FnMut() -> std::io::Result<T>,
) -> std::io::Result<T> {
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match bind() {
            Err(e)
                if retry
                    && e.kind() == std::io::ErrorKind::AddrInUse
                    && tokio::time::Instant::now() < end =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            r => return r,
        }
    }
}

/// Loads config and dialplans off the core task when asked. Requests that arrive while a load runs
/// are coalesced into one more load; loads never overlap.
async fn reloader(
    path: PathBuf,
    requests: Arc<tokio::sync::Notify>,
    tx: mpsc::Sender<Result<Setup, SetupErrors>>,
) {
    loop {
        requests.notified().await;
        let p = path.clone();
        let result = match tokio::task::spawn_blocking(move || crate::setup::load(&p)).await {
            Ok(r) => r,
            Err(e) => Err(SetupErrors(vec![format!("reload task failed: {e}")])),
        };
        if tx.send(result).await.is_err() {
            return;
        }
    }
}

/// Seconds since the Unix epoch, for the rosters (the only wall-clock reading the core gets).
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Milliseconds since the Unix epoch (wall clock: records, the outbox schedule, HA heartbeats).
pub(crate) fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn export_text(reg: &Registrar, now: Instant) -> String {
    sip_core::registrar::BindingRecord::to_text(&reg.export(now))
}

/// Maps tokio's clock onto sip-core's time line.
struct Clock {
    start: tokio::time::Instant,
}

impl Clock {
    fn new() -> Self {
        Clock {
            start: tokio::time::Instant::now(),
        }
    }
    fn now(&self) -> Instant {
        Instant::from_origin(self.start.elapsed())
    }
    fn to_tokio(&self, t: Instant) -> tokio::time::Instant {
        self.start + t.since_origin()
    }
}

struct Sender {
    /// Each UDP socket with whether it is IPv4 (asked once: `local_addr` is a system call).
    udp: Vec<(bool, Arc<UdpSocket>)>,
    tcp: Vec<TcpTransport>,
    tls: Vec<TcpTransport>,
}

impl Sender {
    fn new(udp: Vec<Arc<UdpSocket>>, tcp: Vec<TcpTransport>, tls: Vec<TcpTransport>) -> Sender {
        let udp = udp
            .into_iter()
            .filter_map(|s| Some((s.local_addr().ok()?.is_ipv4(), s)))
            .collect();
        Sender { udp, tcp, tls }
    }

    async fn send(&self, t: Transmit) {
        match t.peer.transport {
            Transport::Udp => {
                let Some(sock) = self.udp_for(t.peer.addr) else {
                    warn!(dest = %t.peer.addr, "no UDP listener for this address family");
                    return;
                };
                match sock.try_send_to(&t.bytes, t.peer.addr) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        let _ = sock.send_to(&t.bytes, t.peer.addr).await;
                    }
                    Err(e) => debug!(dest = %t.peer.addr, %e, "UDP send failed"),
                }
            }
            Transport::Tcp | Transport::Tls => {
                let streams = if t.peer.transport == Transport::Tls {
                    &self.tls
                } else {
                    &self.tcp
                };
                let family = t.peer.addr.is_ipv4();
                let Some(stream) = streams.iter().find(|x| x.local_addr().is_ipv4() == family)
                else {
                    let transport = t.peer.transport.as_token();
                    warn!(dest = %t.peer.addr, transport, "no listener of this transport for this address family");
                    return;
                };
                if let Err(e) = stream.send(t.peer.conn, t.peer.addr, t.bytes) {
                    debug!(dest = %t.peer.addr, %e, "stream send failed");
                }
            }
        }
    }

    fn udp_for(&self, dest: SocketAddr) -> Option<&Arc<UdpSocket>> {
        self.udp
            .iter()
            .find(|(v4, _)| *v4 == dest.is_ipv4())
            .map(|(_, s)| s)
    }
}

/// Takes datagrams off a UDP socket into the core's lanes (`crate::lanes`). When a lane is full the
/// datagram is dropped (the sender retransmits). Oversized datagrams get 513 here.
struct UdpIntake {
    local: SocketAddr,
    buf: Vec<u8>,
    max: usize,
    lanes: crate::lanes::Lanes,
    full_log: LogLimiter,
    big_log: LogLimiter,
}

impl UdpIntake {
    fn new(local: SocketAddr, max: usize, lanes: crate::lanes::Lanes) -> Self {
        UdpIntake {
            local,
            buf: vec![0u8; max + 1],
            max,
            lanes,
            full_log: LogLimiter::new(Duration::from_secs(1)),
            big_log: LogLimiter::new(Duration::from_secs(1)),
        }
    }

    /// Queues the `n` bytes just received into `buf`; returns a 513 to send back, if any.
    fn take(&mut self, n: usize, peer: SocketAddr) -> Option<(Bytes, SocketAddr)> {
        if n > self.max {
            if let Some(n) = self.big_log.allow() {
                warn!(%peer, suppressed = n, "oversized datagram: 513");
            }
            let resp = sip_core::message::too_large_response(&self.buf[..n])?;
            return Some((resp.bytes.clone(), resp_dest(&resp.via, peer)));
        }
        let msg = Inbound {
            transport: Transport::Udp,
            local: self.local,
            peer,
            conn: None,
            bytes: Bytes::copy_from_slice(&self.buf[..n]),
            received: std::time::Instant::now(),
        };
        if let Err(e) = self.lanes.try_send(msg) {
            if let Some(n) = self.full_log.allow() {
                warn!(
                    suppressed = n,
                    lane = e.lane.name(),
                    "core lane full: datagram dropped (the sender retransmits)"
                );
            }
        }
        None
    }
}

/// Receives datagrams whenever the socket is readable and queues them for the core.
async fn udp_receiver(sock: Arc<UdpSocket>, mut intake: UdpIntake) {
    loop {
        let (n, peer) = match sock.recv_from(&mut intake.buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP port unreachable and the like surface here on Linux; keep receiving.
                debug!(%e, "UDP receive error");
                continue;
            }
        };
        if let Some((resp, dest)) = intake.take(n, peer) {
            let _ = sock.try_send_to(&resp, dest);
        }
    }
}

/// The core's own look at a UDP socket between two messages of a batch (a second descriptor of the
/// same socket, read without waiting): what arrived while the last message was handled is queued
/// at once, so a response or an emergency INVITE that came in meanwhile is handled next instead
/// of after the rest of the batch. The receiver task and this read the same socket in turn on the
/// one SIP thread, so datagrams keep their order.
struct UdpPeek {
    sock: std::net::UdpSocket,
    intake: UdpIntake,
}

impl UdpPeek {
    fn new(sock: &UdpSocket, intake: UdpIntake) -> std::io::Result<Self> {
        let sock: std::net::UdpSocket = socket2::SockRef::from(sock).try_clone()?.into();
        Ok(UdpPeek { sock, intake })
    }

    /// Queues what the socket holds now (at most 256 datagrams), without waiting.
    fn drain(&mut self) {
        for _ in 0..256 {
            match self.sock.recv_from(&mut self.intake.buf) {
                Ok((n, peer)) => {
                    if let Some((resp, dest)) = self.intake.take(n, peer) {
                        let _ = self.sock.send_to(&resp, dest);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                // ICMP port unreachable and the like: the next datagram may be fine.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!(%e, "UDP receive error");
                }
            }
        }
    }
}

fn resp_dest(via: &sip_core::message::Via, peer: SocketAddr) -> SocketAddr {
    sip_core::message::response_destination(
        via,
        Peer {
            transport: Transport::Udp,
            addr: peer,
            conn: None,
        },
    )
    .addr
}

/// How long the SIP core's loop turns take, from the wake-up to the last datagram of the turn sent
/// (a SIP message's turn is its own handling and sends, even when several were queued together).
/// Every message waits for the turn in progress, so a long turn is a post-dial delay for every call
/// arriving meanwhile: turns of [`SLOW_TURN`] or more are counted (`switchboard_core_slow_turns_total`
/// by `what`) and logged at most every 10 s; the busy time is published once a second
/// (`switchboard_core_busy_microseconds_total`: its rate is the core's load, 1e6 = saturated).
#[derive(Default)]
struct TurnClock {
    busy: Duration,
    last_warned: Option<std::time::Instant>,
}

const SLOW_TURN: Duration = Duration::from_millis(5);

impl TurnClock {
    fn record(&mut self, what: &'static str, took: Duration) {
        self.busy += took;
        if took < SLOW_TURN {
            return;
        }
        metrics::counter!(crate::metrics::CORE_SLOW_TURNS, "what" => what).increment(1);
        if self
            .last_warned
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            self.last_warned = Some(std::time::Instant::now());
            warn!(
                what,
                ms = format!("{:.1}", took.as_secs_f64() * 1e3),
                "SIP core: a slow turn; every message arriving meanwhile waited for it"
            );
        }
    }

    fn publish(&mut self) {
        metrics::counter!(crate::metrics::CORE_BUSY).increment(self.busy.as_micros() as u64);
        self.busy = Duration::ZERO;
    }
}

/// Writes the registration file off the hot path; only the newest text matters.
async fn state_writer(path: PathBuf, mut rx: mpsc::Receiver<String>) {
    while let Some(text) = rx.recv().await {
        let p = path.clone();
        let r = tokio::task::spawn_blocking(move || write_atomically(&p, &text)).await;
        if let Ok(Err(e)) = r {
            error!(file = %path.display(), %e, "could not save registrations");
        }
    }
}

/// Write via a temporary file and rename, so a crash leaves the old file or the new one, never half.
fn write_atomically(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn warn_demo_credentials(loaded: &Loaded) {
    let demo = loaded.config.agents.iter().any(|a| a.demo);
    let exposed: Vec<SocketAddr> = loaded
        .config
        .sip
        .listen
        .iter()
        .map(|l| l.get_ref().addr)
        .filter(|a| !a.ip().is_loopback())
        .collect();
    if demo && !exposed.is_empty() {
        warn!(
            listeners = ?exposed,
            "DEMO CREDENTIALS IN USE on a non-loopback listener: anyone can register as a demo agent; replace the [[agents]] entries"
        );
    }
}

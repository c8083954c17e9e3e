//! The HTTP/1.1 server (hyper) and the routes.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request as HttpRequest, Response, StatusCode};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::debug;

use super::{ApiError, Grant, NewWorkOrder, Request, Tokens, WorkOrderRefusal, WorkOrderStep};

type Body = BoxBody<Bytes, Infallible>;

/// How long a handler waits for the core's answer.
const CORE_TIMEOUT: Duration = Duration::from_secs(5);
/// A reload reads files: it may take longer.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request body accepted.
const MAX_BODY: usize = 16 * 1024;
/// Concurrent connections; more are closed at once.
const MAX_CONNECTIONS: usize = 256;

pub(super) struct State {
    pub prometheus: metrics_exporter_prometheus::PrometheusHandle,
    pub tokens: Option<Tokens>,
    pub core: mpsc::Sender<Request>,
    pub board: watch::Receiver<Arc<str>>,
    pub seats: Option<Arc<seat_manager::SeatConfig>>,
    pub store: Option<store::StoreConfig>,
    pub ha: Option<super::HaView>,
}

pub(super) async fn serve(sock: tokio::net::TcpListener, state: Arc<State>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match sock.accept().await {
            Ok(x) => x,
            Err(e) => {
                debug!(%e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                debug!(%peer, %e, "admin connection ended");
            }
            drop(permit);
        });
    }
}

fn full(status: StatusCode, ctype: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(hyper::header::CONTENT_TYPE, ctype.parse().expect("mime"));
    r.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        "no-store".parse().expect("hv"),
    );
    r
}

fn json<T: Serialize>(status: StatusCode, v: &T) -> Response<Body> {
    let body = serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec());
    full(status, "application/json", body)
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    json(status, &ApiError { error: msg.into() })
}

fn unauthorized() -> Response<Body> {
    let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong token");
    r.headers_mut().insert(
        hyper::header::WWW_AUTHENTICATE,
        "Bearer realm=\"switchboard\"".parse().expect("hv"),
    );
    r
}

fn query<'a>(req: &'a HttpRequest<Incoming>, key: &str) -> Option<&'a str> {
    req.uri()
        .query()?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn bearer(req: &HttpRequest<Incoming>) -> Option<&str> {
    req.headers()
        .get(hyper::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// A standby's answer to anything but `GET /api/v1/ha`: its core task is not running, so asking it
/// would only wait for the timeout. `None` when this node serves.
fn standby(state: &State) -> Option<Response<Body>> {
    let ha = state.ha.as_ref()?;
    if *ha.role.borrow() != crate::ha::Role::Standby {
        return None;
    }
    let mut status = ha.status();
    status.error = Some(format!(
        "standby: node {} does not hold the HA lock and serves nothing; ask the active node",
        status.node
    ));
    let mut r = json(StatusCode::SERVICE_UNAVAILABLE, &status);
    r.headers_mut()
        .insert(hyper::header::RETRY_AFTER, "5".parse().expect("hv"));
    Some(r)
}

/// Ask the core and wait for its answer.
async fn ask<T>(
    state: &State,
    make: impl FnOnce(oneshot::Sender<T>) -> Request,
    limit: Duration,
) -> Result<T, Response<Body>> {
    let (tx, rx) = oneshot::channel();
    if state.core.try_send(make(tx)).is_err() {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the core is busy or stopping; try again",
        ));
    }
    match tokio::time::timeout(limit, rx).await {
        Ok(Ok(v)) => Ok(v),
        _ => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the core did not answer in time",
        )),
    }
}

async fn route(state: &State, req: HttpRequest<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    match (&method, path.as_str()) {
        (&Method::GET, "/metrics") => {
            return full(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                state.prometheus.render(),
            )
        }
        (&Method::GET, "/wallboard" | "/wallboard/") => {
            return full(
                StatusCode::OK,
                "text/html; charset=utf-8",
                super::wallboard::PAGE,
            )
        }
        (&Method::GET, "/") => {
            return full(
                StatusCode::OK,
                "text/plain; charset=utf-8",
                "switchboard: /metrics, /wallboard, /api/v1/ (docs/openapi.yaml)\n",
            )
        }
        _ => {}
    }
    let Some(rest) = path.strip_prefix("/api/v1/") else {
        return error(StatusCode::NOT_FOUND, format!("no such path: {path}"));
    };
    let Some(tokens) = &state.tokens else {
        return error(
            StatusCode::NOT_FOUND,
            "the admin API is off: add an [admin] section with a token",
        );
    };
    let grant = tokens.check(bearer(&req));
    if rest == "events" && method == Method::GET {
        let grant = match grant {
            Grant::None => tokens.check(query(&req, "token")),
            g => g,
        };
        if grant == Grant::None {
            return unauthorized();
        }
        if let Some(r) = standby(state) {
            return r;
        }
        return events(state);
    }
    if grant != Grant::Admin {
        return unauthorized();
    }
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    if let (&Method::GET, ["ha"]) = (&method, segs.as_slice()) {
        return match &state.ha {
            Some(ha) => json(StatusCode::OK, &ha.status()),
            None => error(StatusCode::NOT_FOUND, "no [ha] section: a single node"),
        };
    }
    if let Some(r) = standby(state) {
        return r;
    }
    match (&method, segs.as_slice()) {
        (&Method::GET, ["registrations"]) => {
            match ask(state, Request::Registrations, CORE_TIMEOUT).await {
                Ok(v) => json(StatusCode::OK, &v),
                Err(r) => r,
            }
        }
        (&Method::GET, ["agents"]) => match ask(state, Request::Agents, CORE_TIMEOUT).await {
            Ok(v) => json(StatusCode::OK, &v),
            Err(r) => r,
        },
        (&Method::GET, ["agents", id]) => match ask(state, Request::Agents, CORE_TIMEOUT).await {
            Ok(v) => match v.into_iter().find(|a| a.id == *id) {
                Some(a) => json(StatusCode::OK, &a),
                None => error(StatusCode::NOT_FOUND, format!("no agent `{id}`")),
            },
            Err(r) => r,
        },
        (&Method::POST | &Method::PUT, ["agents", id, "state"]) => {
            let id = (*id).to_owned();
            set_agent(state, id, req).await
        }
        (&Method::GET, ["queues"]) => match ask(state, Request::Queues, CORE_TIMEOUT).await {
            Ok(mut v) => {
                super::wallboard::fill_centers(&mut v, state.seats.as_deref());
                json(StatusCode::OK, &v)
            }
            Err(r) => r,
        },
        (&Method::GET, ["calls"]) => match ask(state, Request::Calls, CORE_TIMEOUT).await {
            Ok(v) => json(StatusCode::OK, &v),
            Err(r) => r,
        },
        (&Method::POST, ["reload"]) => match ask(state, Request::Reload, RELOAD_TIMEOUT).await {
            Ok(v) if v.ok => json(StatusCode::OK, &v),
            Ok(v) => json(StatusCode::UNPROCESSABLE_ENTITY, &v),
            Err(r) => r,
        },
        (&Method::GET, ["roster-check"]) => roster_check(state),
        (&Method::GET, ["wallboard"]) => {
            let b = state.board.borrow().clone();
            full(
                StatusCode::OK,
                "application/json",
                Bytes::from(b.to_string()),
            )
        }
        (&Method::GET, ["work-orders"]) => {
            let since = query(&req, "since_ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let limit = query(&req, "limit")
                .and_then(|v| v.parse().ok())
                .unwrap_or(100usize)
                .min(1000);
            work_orders(state, WorkOrderQuery::Since(since, limit)).await
        }
        (&Method::GET, ["work-orders", id]) => {
            work_orders(state, WorkOrderQuery::One((*id).to_owned())).await
        }
        (&Method::POST, ["work-orders"]) => create_work_order(state, req).await,
        (&Method::POST, ["work-orders", id, "status"]) => {
            let id = (*id).to_owned();
            work_order_step(state, id, req).await
        }
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {method} {path}"),
        ),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StateBody {
    /// `login`, `logout`, `ready` or `break`.
    state: String,
    /// The break's reason code.
    #[serde(default)]
    reason: u16,
}

async fn set_agent(state: &State, agent: String, req: HttpRequest<Incoming>) -> Response<Body> {
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
    };
    let b: StateBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("body: {e} (expected {{\"state\": \"ready\"}})"),
            )
        }
    };
    use seat_manager::AgentAction;
    let action = match b.state.as_str() {
        "login" => AgentAction::Login,
        "logout" => AgentAction::Logout,
        "ready" | "available" => AgentAction::Ready,
        "break" => AgentAction::Break(b.reason),
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("unknown state `{other}`: login, logout, ready or break"),
            )
        }
    };
    match ask(
        state,
        |reply| Request::SetAgent {
            agent,
            action,
            reply,
        },
        CORE_TIMEOUT,
    )
    .await
    {
        Ok(Ok(v)) => json(StatusCode::OK, &v),
        Ok(Err(e)) if e.starts_with("unknown agent") => error(StatusCode::NOT_FOUND, e),
        Ok(Err(e)) => error(StatusCode::CONFLICT, e),
        Err(r) => r,
    }
}

/// The request body as JSON of type `T`, or a 400 naming what is wrong and what was expected.
async fn json_body<T: serde::de::DeserializeOwned>(
    req: HttpRequest<Incoming>,
    expected: &str,
) -> Result<T, Response<Body>> {
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Err(error(StatusCode::BAD_REQUEST, format!("body: {e}"))),
    };
    serde_json::from_slice(&body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("body: {e} (expected {expected})"),
        )
    })
}

fn refused(r: WorkOrderRefusal) -> Response<Body> {
    match r {
        WorkOrderRefusal::Invalid(m) => error(StatusCode::BAD_REQUEST, m),
        WorkOrderRefusal::NoStore => {
            error(StatusCode::NOT_FOUND, "no [store] section: no work orders")
        }
        WorkOrderRefusal::Busy(m) => error(StatusCode::SERVICE_UNAVAILABLE, m),
    }
}

/// `POST /api/v1/work-orders`: 201 with the id once the order is handed to the store's writer.
async fn create_work_order(state: &State, req: HttpRequest<Incoming>) -> Response<Body> {
    let order: NewWorkOrder = match json_body(
        req,
        r#"{"agent": "8001", "summary": "...", optional "call_id", "caller", "prefecture", "department"}"#,
    )
    .await
    {
        Ok(o) => o,
        Err(r) => return r,
    };
    match ask(
        state,
        |reply| Request::CreateWorkOrder { order, reply },
        CORE_TIMEOUT,
    )
    .await
    {
        Ok(Ok(created)) => json(StatusCode::CREATED, &created),
        Ok(Err(r)) => refused(r),
        Err(r) => r,
    }
}

/// `POST /api/v1/work-orders/{id}/status`: 202 once the step is handed to the store's writer.
async fn work_order_step(state: &State, id: String, req: HttpRequest<Incoming>) -> Response<Body> {
    let step: WorkOrderStep = match json_body(
        req,
        r#"{"agent": "8001", "status": "in-progress", "note": "..."}"#,
    )
    .await
    {
        Ok(s) => s,
        Err(r) => return r,
    };
    // The order must exist (committed) before a step is added to it.
    let Some(sc) = state.store.clone() else {
        return refused(WorkOrderRefusal::NoStore);
    };
    let lookup = id.clone();
    let found = tokio::task::spawn_blocking(move || {
        use store::StoreBackend as _;
        let mut reader = store::open_backend(&sc).map_err(|e| e.to_string())?;
        reader.work_order(&lookup).map_err(|e| e.to_string())
    })
    .await;
    match found {
        Ok(Ok(Some(_))) => {}
        Ok(Ok(None)) => return error(StatusCode::NOT_FOUND, "no such work order"),
        Ok(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("store: {e}")),
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("store task: {e}"),
            )
        }
    }
    match ask(
        state,
        |reply| Request::WorkOrderStep { id, step, reply },
        CORE_TIMEOUT,
    )
    .await
    {
        Ok(Ok(())) => json(
            StatusCode::ACCEPTED,
            &serde_json::json!({ "accepted": true }),
        ),
        Ok(Err(r)) => refused(r),
        Err(r) => r,
    }
}

fn roster_check(state: &State) -> Response<Body> {
    let Some(seats) = &state.seats else {
        return error(
            StatusCode::NOT_FOUND,
            "no [routing] seats_file: nothing to check",
        );
    };
    #[derive(Serialize)]
    struct Out {
        ok: bool,
        gaps: Vec<String>,
    }
    let gaps: Vec<String> = seat_manager::roster_check(seats)
        .iter()
        .map(|g| g.to_string())
        .collect();
    json(
        StatusCode::OK,
        &Out {
            ok: gaps.is_empty(),
            gaps,
        },
    )
}

enum WorkOrderQuery {
    Since(i64, usize),
    One(String),
}

async fn work_orders(state: &State, q: WorkOrderQuery) -> Response<Body> {
    let Some(sc) = state.store.clone() else {
        return error(StatusCode::NOT_FOUND, "no [store] section: no work orders");
    };
    let r = tokio::task::spawn_blocking(move || {
        use store::StoreBackend as _;
        let mut reader = store::open_backend(&sc).map_err(|e| e.to_string())?;
        match q {
            WorkOrderQuery::Since(since, limit) => reader
                .work_orders_since(since, limit)
                .map(Some)
                .map_err(|e| e.to_string()),
            WorkOrderQuery::One(id) => reader
                .work_order(&id)
                .map(|o| o.map(|o| vec![o]))
                .map_err(|e| e.to_string()),
        }
    })
    .await;
    match r {
        Ok(Ok(Some(mut list))) => {
            // The caller's number is personal data: the API shows it redacted, like the logs.
            for w in &mut list {
                if let Some(c) = &w.caller {
                    w.caller = Some(crate::redact::Redacted(c).to_string());
                }
            }
            json(StatusCode::OK, &list)
        }
        Ok(Ok(None)) => error(StatusCode::NOT_FOUND, "no such work order"),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("store: {e}")),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("store task: {e}"),
        ),
    }
}

/// Server-sent events: the wallboard's state now, then each time it changes (once a second at
/// most), with a comment line every 15 s so proxies keep the stream open.
fn events(state: &State) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let mut board = state.board.clone();
    tokio::spawn(async move {
        let mut keepalive = tokio::time::interval(Duration::from_secs(15));
        keepalive.tick().await;
        loop {
            let b = board.borrow_and_update().clone();
            let msg = format!("event: board\ndata: {b}\n\n");
            if tx.send(Bytes::from(msg)).await.is_err() {
                return;
            }
            loop {
                tokio::select! {
                    r = board.changed() => {
                        if r.is_err() { return; }
                        break;
                    }
                    _ = keepalive.tick() => {
                        if tx.send(Bytes::from_static(b": keepalive\n\n")).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
    let mut r = Response::new(ChannelBody(rx).boxed());
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        "text/event-stream".parse().expect("hv"),
    );
    r.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        "no-store".parse().expect("hv"),
    );
    r
}

/// A response body fed by a channel (the event stream).
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

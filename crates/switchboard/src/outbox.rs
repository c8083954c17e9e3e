//! The outbox's I/O shell: POSTs work orders to sub-centers' HTTP endpoints.
//!
//! The schedule (per-endpoint order, capped backoff, what is due when) is the store's sans-IO
//! [`store::Outbox`]; this module only makes the HTTP requests and reports each result back. It
//! runs on its own thread with a single-threaded tokio runtime, because the outbox's bookkeeping
//! is a small synchronous SQLite transaction per attempt: that blocks this thread only, never the
//! SIP event loop.
//!
//! Each POST carries the body as `application/json` and the work order's id as
//! `Idempotency-Key`. A 2xx delivers the item; a connect error, a timeout, a 5xx, 408 or 429 is
//! retried later (honouring `Retry-After` in seconds); any other status sets the item aside.
//! The writer wakes the loop after each commit, so a new order leaves within milliseconds.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Uri;
use hyper_util::rt::TokioIo;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::metrics as m;

/// How long one POST may take, connection included, before it counts as a failure.
const POST_TIMEOUT: Duration = Duration::from_secs(10);
/// Even without a wake-up, look for new deliveries this often (another process may have queued
/// them, or a wake-up was missed).
const IDLE_POLL: Duration = Duration::from_secs(1);

/// Whether `url` is an endpoint the outbox can POST to: `http://host[:port][/path]`.
pub fn check_url(url: &str) -> Result<(), String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "`{url}` must start with http:// (no TLS client is built in)"
        ));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("`{url}` has no host"));
    }
    Ok(())
}

/// The running outbox thread.
pub struct OutboxTask {
    stop: watch::Sender<bool>,
    join: Option<std::thread::JoinHandle<()>>,
}

impl OutboxTask {
    /// Start delivering the pending items of `config`'s database. `wake` is notified by the
    /// store's writer after each commit.
    pub fn spawn(config: store::StoreConfig, wake: Arc<Notify>) -> std::io::Result<OutboxTask> {
        let (stop, stopped) = watch::channel(false);
        let join = std::thread::Builder::new()
            .name("outbox".into())
            .spawn(move || {
                // Deliveries wait for no caller: background priority (never an inherited real-time
                // policy), for this thread and its runtime's worker, which inherits it.
                store::background_priority();
                // One worker, multi-thread flavour: store calls run in `block_in_place`, which
                // the PostgreSQL backend's blocking client needs (it drives its own runtime).
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(%e, "outbox: no runtime; work orders stay queued");
                        return;
                    }
                };
                rt.block_on(run(config, wake, stopped));
            })?;
        Ok(OutboxTask {
            stop,
            join: Some(join),
        })
    }

    /// Stop: POSTs in flight are dropped and stay pending (the same key goes again after a
    /// restart, which the sub-center dedups).
    pub fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

impl Drop for OutboxTask {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// What one POST came to.
enum PostResult {
    Delivered(u16),
    Retry(String, Option<u64>),
    Rejected(u16),
}

async fn run(config: store::StoreConfig, wake: Arc<Notify>, mut stopped: watch::Receiver<bool>) {
    let mut outbox = loop {
        match tokio::task::block_in_place(|| store::open_outbox(&config)) {
            Ok(o) => break o,
            Err(e) => {
                warn!(%e, "outbox: cannot open the store; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = stopped.changed() => return,
                }
            }
        }
    };
    info!(backlog = outbox.backlog(), "outbox running");
    let mut posts: JoinSet<(i64, PostResult)> = JoinSet::new();
    let mut refresh = true;
    loop {
        if refresh {
            if let Err(e) = tokio::task::block_in_place(|| outbox.refresh()) {
                warn!(%e, "outbox: cannot read new deliveries");
            }
            refresh = false;
        }
        let now = crate::daemon::unix_now_ms();
        while let Some(d) = outbox.poll_delivery(now) {
            debug!(id = d.id, endpoint = %d.endpoint, attempt = d.attempt, "outbox: POST");
            posts.spawn(async move {
                let r = match tokio::time::timeout(POST_TIMEOUT, post(&d)).await {
                    Ok(r) => r,
                    Err(_) => PostResult::Retry("timed out".into(), None),
                };
                (d.id, r)
            });
        }
        metrics::gauge!(m::OUTBOX_BACKLOG).set(outbox.backlog() as f64);
        let sleep = match outbox.poll_timeout() {
            Some(due) => Duration::from_millis(
                due.saturating_sub(crate::daemon::unix_now_ms()).max(0) as u64,
            )
            .min(IDLE_POLL),
            None => IDLE_POLL,
        };
        tokio::select! {
            Some(done) = posts.join_next() => {
                let Ok((id, result)) = done else { continue };
                let now = crate::daemon::unix_now_ms();
                let (r, label) = match result {
                    PostResult::Delivered(status) => {
                        debug!(id, status, "outbox: delivered");
                        (tokio::task::block_in_place(|| outbox.on_success(id, now)).map(|_| ()), "delivered")
                    }
                    PostResult::Rejected(status) => {
                        warn!(id, status, "outbox: the sub-center refused a work order; set aside, not retried");
                        (tokio::task::block_in_place(|| outbox.on_rejected(id, now)), "rejected")
                    }
                    PostResult::Retry(why, retry_after) => {
                        debug!(id, %why, "outbox: will retry");
                        (tokio::task::block_in_place(|| outbox.on_failure(id, now, retry_after)).map(|_| ()), "retry")
                    }
                };
                metrics::counter!(m::OUTBOX_ATTEMPTS, "result" => label).increment(1);
                if let Err(e) = r {
                    warn!(%e, "outbox: could not record a delivery attempt; it will be repeated");
                }
            }
            _ = wake.notified() => refresh = true,
            _ = tokio::time::sleep(sleep) => refresh = true,
            _ = stopped.changed() => break,
        }
    }
    posts.abort_all();
    info!(backlog = outbox.backlog(), "outbox stopped");
}

async fn post(d: &store::Delivery) -> PostResult {
    let uri: Uri = match d.endpoint.parse() {
        Ok(u) => u,
        Err(e) => return PostResult::Retry(format!("bad endpoint: {e}"), None),
    };
    let Some(host) = uri.host() else {
        return PostResult::Retry("endpoint has no host".into(), None);
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let stream = match tokio::net::TcpStream::connect((host.as_str(), port)).await {
        Ok(s) => s,
        Err(e) => return PostResult::Retry(format!("connect: {e}"), None),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(x) => x,
        Err(e) => return PostResult::Retry(format!("handshake: {e}"), None),
    };
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let authority = uri
        .authority()
        .map_or_else(|| host.clone(), |a| a.as_str().to_owned());
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let req = match hyper::Request::post(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header("Idempotency-Key", d.idempotency_key.as_str())
        .body(Full::new(Bytes::from(d.body.clone())))
    {
        Ok(r) => r,
        Err(e) => return PostResult::Retry(format!("request: {e}"), None),
    };
    let resp = match sender.send_request(req).await {
        Ok(r) => r,
        Err(e) => return PostResult::Retry(format!("send: {e}"), None),
    };
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(hyper::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| s.saturating_mul(1000));
    // Read the body to the end so the exchange completes cleanly.
    let _ = resp.into_body().collect().await;
    match status {
        200..=299 => PostResult::Delivered(status),
        408 | 429 | 500..=599 => PostResult::Retry(format!("status {status}"), retry_after),
        _ => PostResult::Rejected(status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_urls_with_a_host_are_accepted() {
        assert!(check_url("http://127.0.4.1:8080/workorders").is_ok());
        assert!(check_url("https://h/w").unwrap_err().contains("http://"));
        assert!(check_url("ftp://h/").is_err());
        assert!(check_url("not a url").is_err());
    }
}

//! `switchboard ctl …`: the admin API from a shell, in the manner of kamcmd. Tables for people,
//! `--json` for scripts. The URL and token come from flags, `SWITCHBOARD_TOKEN`, or the config file
//! (`[metrics] listen`, `[admin] token` / `token_file`).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde::de::DeserializeOwned;

use crate::admin::{AgentInfo, AgentStateChange, CallInfo, QueueInfo, RegistrationInfo};

#[derive(Args, Debug)]
pub struct CtlArgs {
    /// The config file (for the URL and the token).
    #[arg(short, long, default_value = "deploy/switchboard.toml")]
    pub config: PathBuf,
    /// The admin listener, e.g. `http://127.0.0.1:8060` (default: from the config).
    #[arg(long)]
    pub url: Option<String>,
    /// The admin token (default: `SWITCHBOARD_TOKEN`, then the config).
    #[arg(long)]
    pub token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub cmd: CtlCmd,
}

#[derive(Subcommand, Debug)]
pub enum CtlCmd {
    /// Agents and their states.
    Agents,
    /// Set an agent's state: login, logout, ready or break.
    AgentState {
        agent: String,
        state: String,
        /// The break's reason code.
        #[arg(long, default_value_t = 0)]
        reason: u16,
    },
    /// Queues: counters since start, callers waiting now.
    Queues,
    /// Calls in progress.
    Calls,
    /// Registered contacts.
    Registrations,
    /// Reload config and dialplans (as SIGHUP does) and report the result.
    Reload,
    /// Hours of the week a queue has no staffed center.
    RosterCheck,
    /// This node of the HA pair: role, the registrations it holds, calls taken over. A standby
    /// answers this and nothing else.
    Ha,
    /// Work orders created since a time.
    WorkOrders {
        /// Unix milliseconds (0: all).
        #[arg(long, default_value_t = 0)]
        since_ms: i64,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Create a work order or add a status step to one.
    WorkOrder {
        #[command(subcommand)]
        cmd: WorkOrderCmd,
    },
}

#[derive(Subcommand, Debug)]
pub enum WorkOrderCmd {
    /// A new work order made by an agent; prints its id.
    Create {
        #[arg(long)]
        agent: String,
        #[arg(long)]
        summary: String,
        #[arg(long)]
        call_id: Option<String>,
        #[arg(long)]
        caller: Option<String>,
        #[arg(long)]
        prefecture: Option<String>,
        #[arg(long)]
        department: Option<String>,
    },
    /// A status step (open, in-progress, closed, cancelled) in an order's history.
    Status {
        id: String,
        status: String,
        #[arg(long)]
        agent: String,
        #[arg(long, default_value = "")]
        note: String,
    },
}

/// Run one `ctl` command.
pub fn run(a: CtlArgs) -> ExitCode {
    match run_inner(a) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("switchboard ctl: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_inner(a: CtlArgs) -> Result<ExitCode, String> {
    let (url, token) = target(&a)?;
    let c = Client { url, token };
    let json = a.json;
    match a.cmd {
        CtlCmd::Agents => show(&c, "agents", json, |v: Vec<AgentInfo>| {
            let mut t = Table::new(&["AGENT", "STATE", "REGISTERED", "OFFERABLE", "CALL"]);
            for x in v {
                let state = match x.break_reason {
                    Some(r) if r > 0 => format!("{} ({r})", x.state),
                    _ => x.state,
                };
                t.row(vec![
                    x.id,
                    state,
                    yes(x.registered),
                    yes(x.offerable),
                    x.call.map(|c| format!("call#{c}")).unwrap_or_default(),
                ]);
            }
            t.print()
        }),
        CtlCmd::Queues => show(&c, "queues", json, |v: Vec<QueueInfo>| {
            let mut t = Table::new(&[
                "QUEUE",
                "CENTER",
                "WAITING",
                "LONGEST",
                "OFFERED",
                "ANSWERED",
                "SL15",
                "ABANDONED",
                "AGENTS(avail/busy/out)",
            ]);
            let mut waiting = Vec::new();
            for q in v {
                let busy =
                    q.agents.ringing + q.agents.on_call + q.agents.wrap_up + q.agents.on_break;
                t.row(vec![
                    q.id.clone(),
                    q.center.clone().unwrap_or_default(),
                    q.waiting_now.to_string(),
                    q.longest_wait_s.map(secs).unwrap_or_default(),
                    q.offered.to_string(),
                    q.answered.to_string(),
                    q.service_level
                        .map(|s| format!("{:.0}%", s * 100.0))
                        .unwrap_or_else(|| "-".into()),
                    q.abandoned.to_string(),
                    format!("{}/{}/{}", q.agents.available, busy, q.agents.logged_out),
                ]);
                for c in q.callers {
                    waiting.push((q.id.clone(), c));
                }
            }
            t.print();
            if !waiting.is_empty() {
                println!();
                let mut t = Table::new(&["QUEUE", "CALL", "CALLER", "PHASE", "WAITED", "PRIO"]);
                for (q, c) in waiting {
                    t.row(vec![
                        q,
                        format!("call#{}", c.call),
                        c.caller,
                        c.phase,
                        secs(c.waited_s),
                        c.priority.to_string(),
                    ]);
                }
                t.print();
            }
        }),
        CtlCmd::Calls => show(&c, "calls", json, |v: Vec<CallInfo>| {
            let mut t = Table::new(&["CALL-ID", "STATE", "CALLER", "QUEUE", "AGENT", "AGE"]);
            for x in v {
                let state = match &x.emergency {
                    Some(s) => format!("{} (emergency {s})", x.state),
                    None => x.state,
                };
                t.row(vec![
                    x.sip_call_id,
                    state,
                    x.caller,
                    x.queue.unwrap_or_default(),
                    x.agent.unwrap_or_default(),
                    x.age_s.map(secs).unwrap_or_default(),
                ]);
            }
            t.print()
        }),
        CtlCmd::Registrations => show(&c, "registrations", json, |v: Vec<RegistrationInfo>| {
            let mut t = Table::new(&["USER", "CONTACT", "SOURCE", "TRANSPORT", "EXPIRES"]);
            for x in v {
                t.row(vec![
                    x.user,
                    x.contact,
                    x.source,
                    x.transport,
                    format!("{}s", x.expires_in_s),
                ]);
            }
            t.print()
        }),
        CtlCmd::Ha => show(&c, "ha", json, |v: crate::admin::HaStatus| {
            let mut t = Table::new(&[
                "NODE",
                "ROLE",
                "DATABASE",
                "REGISTRATIONS",
                "INHERITED-CALLS",
            ]);
            let since = crate::daemon::unix_now_ms() - v.last_db_ok_ms;
            t.row(vec![
                v.node,
                v.role,
                if v.last_db_ok_ms > 0 {
                    format!("ok {:.1}s ago", since as f64 / 1000.0)
                } else {
                    "never reached".into()
                },
                v.registrations.to_string(),
                v.inherited_calls.to_string(),
            ]);
            t.print()
        }),
        CtlCmd::AgentState {
            agent,
            state,
            reason,
        } => {
            let body = serde_json::json!({ "state": state, "reason": reason }).to_string();
            let (status, text) = c.call("POST", &format!("agents/{agent}/state"), Some(&body))?;
            if status != 200 {
                return Err(api_error(status, &text));
            }
            if json {
                println!("{text}");
            } else {
                let v: AgentStateChange = parse(&text)?;
                println!("{}: {}", v.id, v.state);
            }
            Ok(ExitCode::SUCCESS)
        }
        CtlCmd::Reload => {
            let (status, text) = c.call("POST", "reload", None)?;
            if json {
                println!("{text}");
            }
            let v: crate::admin::ReloadResult = match parse(&text) {
                Ok(v) => v,
                Err(_) => return Err(api_error(status, &text)),
            };
            if !json {
                if v.ok {
                    println!(
                        "reloaded: dialplan `{}` in service",
                        v.plan.unwrap_or_default()
                    );
                } else {
                    println!("reload refused; the running config stays in service:");
                    for e in &v.errors {
                        println!("  {e}");
                    }
                }
            }
            Ok(if v.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        CtlCmd::RosterCheck => {
            let (status, text) = c.call("GET", "roster-check", None)?;
            if status != 200 {
                return Err(api_error(status, &text));
            }
            #[derive(serde::Deserialize)]
            struct R {
                ok: bool,
                gaps: Vec<String>,
            }
            let r: R = parse(&text)?;
            if json {
                println!("{text}");
            } else if r.ok {
                println!("every queue has a staffed path every hour of the week");
            } else {
                for g in &r.gaps {
                    println!("{g}");
                }
                println!("{} gap(s)", r.gaps.len());
            }
            Ok(if r.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        CtlCmd::WorkOrders { since_ms, limit } => {
            let path = format!("work-orders?since_ms={since_ms}&limit={limit}");
            show(&c, &path, json, |v: Vec<serde_json::Value>| {
                let mut t = Table::new(&["ID", "KIND", "STATUS", "CREATED_MS", "CALLER"]);
                for w in v {
                    let f = |k: &str| match &w[k] {
                        serde_json::Value::String(s) => s.clone(),
                        serde_json::Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    t.row(vec![
                        f("id"),
                        f("kind"),
                        f("status"),
                        f("created_ms"),
                        f("caller"),
                    ]);
                }
                t.print()
            })
        }
        CtlCmd::WorkOrder { cmd } => {
            let (path, body, want) = match cmd {
                WorkOrderCmd::Create {
                    agent,
                    summary,
                    call_id,
                    caller,
                    prefecture,
                    department,
                } => {
                    let o = crate::admin::NewWorkOrder {
                        agent,
                        call_id,
                        caller,
                        prefecture,
                        summary,
                        department,
                    };
                    let body = serde_json::to_string(&o).map_err(|e| e.to_string())?;
                    ("work-orders".to_owned(), body, 201)
                }
                WorkOrderCmd::Status {
                    id,
                    status,
                    agent,
                    note,
                } => {
                    let step = crate::admin::WorkOrderStep {
                        agent,
                        status,
                        note,
                    };
                    let body = serde_json::to_string(&step).map_err(|e| e.to_string())?;
                    (format!("work-orders/{id}/status"), body, 202)
                }
            };
            let (status, text) = c.call("POST", &path, Some(&body))?;
            if status != want {
                return Err(api_error(status, &text));
            }
            if json {
                println!("{text}");
            } else if want == 201 {
                let v: crate::admin::WorkOrderCreated = parse(&text)?;
                println!("{}", v.id);
            } else {
                println!("accepted");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The URL and token to use.
fn target(a: &CtlArgs) -> Result<(String, String), String> {
    let loaded = if a.url.is_none()
        || (a.token.is_none() && std::env::var_os("SWITCHBOARD_TOKEN").is_none())
    {
        Some(crate::config::load(&a.config).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let url = match &a.url {
        Some(u) => u.clone(),
        None => {
            let l = loaded.as_ref().expect("loaded");
            let mut addr = l.config.metrics.listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(if addr.is_ipv4() {
                    std::net::Ipv4Addr::LOCALHOST.into()
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                });
            }
            format!("http://{addr}")
        }
    };
    let token = match (&a.token, std::env::var("SWITCHBOARD_TOKEN")) {
        (Some(t), _) => t.clone(),
        (None, Ok(t)) if !t.is_empty() => t,
        _ => {
            let l = loaded.as_ref().expect("loaded");
            match crate::admin::load_tokens(l)? {
                Some((t, _)) => t,
                None => {
                    return Err(format!(
                        "{}: no [admin] section: give --token or set SWITCHBOARD_TOKEN",
                        a.config.display()
                    ))
                }
            }
        }
    };
    Ok((url, token))
}

fn show<T: DeserializeOwned>(
    c: &Client,
    path: &str,
    json: bool,
    table: impl FnOnce(T),
) -> Result<ExitCode, String> {
    let (status, text) = c.call("GET", path, None)?;
    if status != 200 {
        return Err(api_error(status, &text));
    }
    if json {
        println!("{text}");
    } else {
        table(parse(&text)?);
    }
    Ok(ExitCode::SUCCESS)
}

fn parse<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_json::from_str(text).map_err(|e| format!("unexpected answer ({e}): {text}"))
}

fn api_error(status: u16, text: &str) -> String {
    let msg = serde_json::from_str::<crate::admin::ApiError>(text)
        .map(|e| e.error)
        .unwrap_or_else(|_| text.trim().to_owned());
    format!("HTTP {status}: {msg}")
}

fn yes(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

fn secs(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    format!("{}:{:02}", s / 60, s % 60)
}

/// A blocking HTTP/1.1 client for the admin API: one request per connection.
struct Client {
    url: String,
    token: String,
}

impl Client {
    fn call(&self, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String), String> {
        let hostport = self
            .url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{}: only http:// URLs are supported", self.url))?
            .trim_end_matches('/');
        let addr = hostport
            .to_socket_addrs()
            .map_err(|e| format!("{hostport}: {e}"))?
            .next()
            .ok_or_else(|| format!("{hostport}: no address"))?;
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("cannot reach the switchboard at {}: {e}", self.url))?;
        s.set_read_timeout(Some(Duration::from_secs(40)))
            .map_err(|e| e.to_string())?;
        let body = body.unwrap_or("");
        let req = format!(
            "{method} /api/v1/{path} HTTP/1.1\r\nHost: {hostport}\r\nAuthorization: Bearer {}\r\n\
Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.token,
            body.len()
        );
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&raw);
        let (head, rest) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| "malformed HTTP answer".to_owned())?;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| "malformed HTTP status line".to_owned())?;
        Ok((status, rest.to_owned()))
    }
}

/// A plain left-aligned text table.
struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(head: &[&str]) -> Table {
        Table {
            rows: vec![head.iter().map(|s| (*s).to_owned()).collect()],
        }
    }
    fn row(&mut self, r: Vec<String>) {
        self.rows.push(r);
    }
    fn print(self) {
        let n = self.rows[0].len();
        let widths: Vec<usize> = (0..n)
            .map(|i| {
                self.rows
                    .iter()
                    .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = std::io::stdout().lock();
        for r in &self.rows {
            let line: Vec<String> = r
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
                .collect();
            let _ = writeln!(out, "{}", line.join("  ").trim_end());
        }
        if self.rows.len() == 1 {
            let _ = writeln!(out, "(none)");
        }
    }
}

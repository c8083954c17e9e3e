//! Loading everything a running switchboard needs, the same way for `run`, `check` and SIGHUP:
//! the config, then the dialplans it names, then the checks that cross them. Every problem is
//! collected and reported as `file:line:col: message`; nothing half-loaded is ever returned.

use std::path::Path;
use std::sync::Arc;

use dialplan::CompiledPlan;
use emergency_bridge::EmergencyBridge;

use crate::config::{self, line_col, Loaded};

/// A config and the plan it names, validated together.
#[derive(Debug, Clone)]
pub struct Setup {
    pub loaded: Loaded,
    pub plan: Arc<CompiledPlan>,
    /// The emergency bridge, compiled against this plan (its prefecture ids belong to the plan, so
    /// the two are always swapped together). `None` when the config has no `[emergency]` section.
    pub bridge: Option<Arc<EmergencyBridge>>,
    /// The seat manager's config, checked against the plan and the agents; `None` without
    /// `routing.seats_file`.
    pub seats: Option<seat_manager::SeatConfig>,
    /// Early media (`[media]`): the validated settings and the prompts, read once here.
    pub media: Option<(crate::media_task::MediaSettings, Arc<media::Prompts>)>,
    /// SIP over TLS (`[tls]`): the certificate and key read from their files and checked.
    pub tls: Option<crate::tls::TlsMaterial>,
}

/// Every problem found, one `file:line:col: message` per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct SetupErrors(pub Vec<String>);

/// Load and cross-check the config at `path` and its dialplans.
pub fn load(path: &Path) -> Result<Setup, SetupErrors> {
    let loaded =
        config::load(path).map_err(|e| SetupErrors(e.0.iter().map(|p| p.to_string()).collect()))?;
    let dir = loaded.resolve(&loaded.config.routing.dialplans_dir);
    let plan = dialplan::load_dir(&dir)
        .map_err(|e| SetupErrors(e.to_string().lines().map(str::to_owned).collect()))?;
    let mut problems = Vec::new();
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let known: std::collections::HashSet<&str> = plan.queue_ids().collect();
    for a in &loaded.config.agents {
        for q in &a.queues {
            if !known.contains(q.get_ref().as_str()) {
                let (line, col) = line_col(&text, q.span().start);
                problems.push(format!(
                    "{}:{line}:{col}: agent `{}` answers queue `{}`, which no dialplan in {} defines",
                    path.display(),
                    a.user.get_ref(),
                    q.get_ref(),
                    dir.display()
                ));
            }
        }
    }
    // The dialplan checks a sub-center's `workorder_url` itself; this asks the outbox's own HTTP
    // client whether it can POST there, so no order is queued for an endpoint it cannot reach.
    for l in plan.lines() {
        if let dialplan::LineRoute::Subcenter { workorder_url, .. } = &l.route {
            if let Err(e) = crate::outbox::check_url(workorder_url) {
                problems.push(format!(
                    "{}:{}:1: line {}: workorder_url: {e}",
                    plan.name(),
                    l.source_line,
                    l.number
                ));
            }
        }
    }
    for t in &loaded.trunks {
        if let Some(p) = &t.prefecture {
            if plan.prefecture_by_id(p).is_none() {
                problems.push(format!(
                    "{}:1:1: trunk `{}` names prefecture `{p}`, which the dialplan does not define",
                    path.display(),
                    t.name
                ));
            }
        }
    }
    let bridge = match &loaded.config.emergency {
        Some(e) => match e.compile(&plan, &path.display().to_string(), &text) {
            Ok(b) => Some(Arc::new(b)),
            Err(errors) => {
                problems.extend(errors.to_string().lines().map(str::to_owned));
                None
            }
        },
        None => None,
    };
    let seats = match &loaded.config.routing.seats_file {
        Some(f) => {
            let file = loaded.resolve(f);
            match std::fs::read_to_string(&file) {
                Err(e) => {
                    problems.push(format!(
                        "{}:1:1: cannot read the seats file: {e}",
                        file.display()
                    ));
                    None
                }
                Ok(seat_text) => match seat_manager::SeatConfig::from_toml_str(&seat_text) {
                    Err(e) => {
                        problems.push(format!("{}: {e}", file.display()));
                        None
                    }
                    Ok(sc) => {
                        let users: std::collections::HashSet<&str> = loaded
                            .config
                            .agents
                            .iter()
                            .map(|a| a.user.get_ref().as_str())
                            .collect();
                        for q in &sc.queues {
                            if !known.contains(q.id.as_str()) {
                                problems.push(format!(
                                    "{}: queue `{}` is not a queue of the dialplan",
                                    file.display(),
                                    q.id
                                ));
                            }
                        }
                        for a in &sc.agents {
                            if !users.contains(a.id.as_str()) {
                                problems.push(format!(
                                    "{}: agent `{}` has no [[agents]] account in {}",
                                    file.display(),
                                    a.id,
                                    path.display()
                                ));
                            }
                        }
                        Some(sc)
                    }
                },
            }
        }
        None => None,
    };
    let media = crate::media_task::load(&loaded, &text, &plan, &mut problems);
    let tls = crate::tls::load(&loaded, &text, &mut problems);
    if problems.is_empty() {
        Ok(Setup {
            loaded,
            plan: Arc::new(plan),
            bridge,
            seats,
            media,
            tls,
        })
    } else {
        Err(SetupErrors(problems))
    }
}

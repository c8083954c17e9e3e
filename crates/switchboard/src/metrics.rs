//! Metric names, in one place, and the Prometheus exporter. Labels come only from bounded sets
//! (method, status class, queue id, mode, service, result): never a Call-ID or a phone number.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::PrometheusHandle;

/// Reloads of config and dialplans, labelled `result` = `ok` | `error`.
pub const CONFIG_RELOADS: &str = "switchboard_config_reloads_total";
/// 1 while this node of an HA pair holds the lock and serves, else 0 (absent without `[ha]`).
pub const HA_ACTIVE: &str = "switchboard_ha_active";
/// Histogram: from the hand-over of accepted REGISTERs' bindings (right after their 200 OKs) to
/// their commit in the HA pair's shared table.
pub const HA_REGISTRATION_LAG: &str = "switchboard_ha_registration_lag_seconds";
/// Gauge: answered calls inherited from the other node of the HA pair, waiting for their BYE.
pub const HA_INHERITED_CALLS: &str = "switchboard_ha_inherited_calls";
/// New requests that reached the policy, by `method`.
pub const SIP_REQUESTS: &str = "switchboard_sip_requests_total";
/// Final responses sent upstream for those requests, by status `class` (2xx … 6xx).
pub const SIP_RESPONSES: &str = "switchboard_sip_responses_total";
/// Live transactions, by `kind` = `server` | `client`.
pub const TRANSACTIONS: &str = "switchboard_transactions";
/// Registered contacts.
pub const REGISTRATIONS: &str = "switchboard_registrations";
/// Calls routed, by dialplan `mode` (merge, dual, subcenter, hotline, agent, emergency).
pub const CALLS: &str = "switchboard_calls_total";
/// Calls ended, by dialplan `line`, `mode` and `outcome` (the CDR's: answered, abandoned,
/// overflowed, transferred, emergency-handoff, failed …). Counted as each CDR closes (with a store).
pub const CALLS_ENDED: &str = "switchboard_calls_ended_total";
/// Records (CDRs) handed to the store and not yet committed to disk.
pub const STORE_BACKLOG: &str = "switchboard_store_backlog";
/// Per queue (`queue`): calls offered to the queue.
pub const QUEUE_OFFERED: &str = "switchboard_queue_offered_total";
/// Per queue: calls answered by an agent.
pub const QUEUE_ANSWERED: &str = "switchboard_queue_answered_total";
/// Per queue: calls answered within 15 s (GB/T 33358 service level).
pub const QUEUE_ANSWERED_IN_SL: &str = "switchboard_queue_answered_within_15s_total";
/// Per queue: callers who hung up while waiting.
pub const QUEUE_ABANDONED: &str = "switchboard_queue_abandoned_total";
/// Per queue: callers who hung up within 5 s (counted apart: often misdials).
pub const QUEUE_ABANDONED_SHORT: &str = "switchboard_queue_abandoned_short_total";
/// Per queue: callers waiting now.
pub const QUEUE_WAITING: &str = "switchboard_queue_waiting";
/// Per queue: the caller waiting longest right now, in seconds.
pub const QUEUE_LONGEST_WAIT: &str = "switchboard_queue_longest_wait_seconds";
/// Per queue: how long callers waited before an agent answered or they left.
pub const QUEUE_WAIT: &str = "switchboard_queue_wait_seconds";
/// Per queue and `state`: agents serving the queue.
pub const AGENTS: &str = "switchboard_agents";
/// Emergency calls, by `service` and `result` = `connected` | `failed`.
pub const EMERGENCY_CALLS: &str = "switchboard_emergency_calls_total";
/// Emergency targets skipped for the next one, by `service`.
pub const EMERGENCY_FAILOVERS: &str = "switchboard_emergency_failovers_total";
/// Calls that arrived with no agent logged in anywhere along their overflow chain.
pub const NO_AGENT_ALARMS: &str = "switchboard_no_agent_alarms_total";
/// CDRs that could not be handed to the store (its queue was full or it had stopped).
pub const CDRS_LOST: &str = "switchboard_cdrs_lost_total";
/// Requests dropped before parsing, by `reason` = `rate` | `banned` (the per-source flood guard) |
/// `overload` (an unregistered address while transactions are at twice the overload threshold).
pub const FLOOD_DROPS: &str = "switchboard_flood_drops_total";
/// Sources banned for flooding, by `budget` = `requests` | `register`.
pub const FLOOD_BANS: &str = "switchboard_flood_bans_total";
/// Failed digest authentications, by `kind` = `register` | `proxy`.
pub const AUTH_FAILURES: &str = "switchboard_auth_failures_total";
/// Lockouts after repeated failures, by `scope` = `account` | `source`.
pub const AUTH_LOCKOUTS: &str = "switchboard_auth_lockouts_total";
/// Agents' calls refused by their class of service (toll fraud).
pub const COS_REFUSALS: &str = "switchboard_cos_refusals_total";
/// New INVITEs refused with 503 because the core was beyond capacity.
pub const OVERLOAD_REJECTIONS: &str = "switchboard_overload_rejections_total";
/// Sources the flood guard tracks now.
pub const FLOOD_SOURCES: &str = "switchboard_flood_tracked_sources";
/// Work orders waiting in the outbox for their sub-center (in flight included).
pub const OUTBOX_BACKLOG: &str = "switchboard_outbox_backlog";
/// Outbox POSTs, by `result` = `delivered` | `retry` | `rejected`.
pub const OUTBOX_ATTEMPTS: &str = "switchboard_outbox_attempts_total";
/// Work orders created by the switchboard, by `kind`.
pub const WORK_ORDERS: &str = "switchboard_work_orders_total";
/// Early-media streams the media task is playing now.
pub const MEDIA_STREAMS: &str = "switchboard_media_streams";
/// RTP ports of the `[media]` range allocated to calls now.
pub const MEDIA_PORTS_IN_USE: &str = "switchboard_media_ports_in_use";
/// SDP offers of queued calls, by `result` = `answered` | `no_codec` | `no_port` | `busy` |
/// `requires_100rel` (the caller requires reliable provisionals: no 183, no announcements).
pub const MEDIA_OFFERS: &str = "switchboard_media_offers_total";
/// RTP ports the media task could not bind (the caller got no announcement).
pub const MEDIA_BIND_FAILURES: &str = "switchboard_media_bind_failures_total";
/// TLS handshakes that failed or timed out, by `side` = `accept` (a peer connecting to our TLS
/// listener: junk, an old protocol, a certificate it refused) | `connect` (a server we connected to).
pub const TLS_HANDSHAKE_FAILURES: &str = "switchboard_tls_handshake_failures_total";
/// Time the SIP core spent working (handling messages, timers, stats), µs; its rate is the core's
/// load (1e6 per second = saturated).
pub const CORE_BUSY: &str = "switchboard_core_busy_microseconds_total";
/// SIP core loop turns of 5 ms or more, by `what` = `sip` (one message: its handling and sends) |
/// `timers` | `stats` | `admin` | `rosters` | `reload`: every message arriving during one waited
/// for it.
pub const CORE_SLOW_TURNS: &str = "switchboard_core_slow_turns_total";
/// Build information (`version`), always 1.
pub const BUILD_INFO: &str = "switchboard_build_info";

/// Install the Prometheus recorder and describe every metric. The returned handle renders
/// `/metrics`; the admin listener ([`crate::admin`]) serves it and runs its upkeep.
pub fn install() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(QUEUE_WAIT.to_owned()),
            &[1.0, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0],
        )?
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(HA_REGISTRATION_LAG.to_owned()),
            &[0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0, 5.0],
        )?
        .install_recorder()?;
    describe_counter!(CONFIG_RELOADS, "Reloads of config and dialplans, by result");
    describe_counter!(
        CORE_BUSY,
        "Time the SIP core spent working, in microseconds (rate 1e6/s = saturated)"
    );
    describe_counter!(
        CORE_SLOW_TURNS,
        "SIP core loop turns of 5 ms or more (every message waited for them), by what the turn did"
    );
    describe_gauge!(
        HA_ACTIVE,
        "1 while this node of the HA pair holds the lock and serves"
    );
    describe_histogram!(
        HA_REGISTRATION_LAG,
        Unit::Seconds,
        "From a REGISTER's 200 OK to its bindings committed in the HA pair's database"
    );
    describe_gauge!(
        HA_INHERITED_CALLS,
        "Answered calls taken over from the other HA node, waiting for their BYE"
    );
    describe_counter!(SIP_REQUESTS, "New SIP requests handled, by method");
    describe_counter!(
        SIP_RESPONSES,
        "Final responses sent upstream, by status class"
    );
    describe_gauge!(TRANSACTIONS, "Live SIP transactions, by kind");
    describe_gauge!(REGISTRATIONS, "Registered contacts");
    describe_counter!(CALLS, "Calls routed, by dialplan mode");
    describe_counter!(CALLS_ENDED, "Calls ended, by line, mode and outcome");
    describe_gauge!(
        STORE_BACKLOG,
        "Records submitted to the store, not yet committed"
    );
    describe_counter!(QUEUE_OFFERED, "Calls offered to the queue");
    describe_counter!(QUEUE_ANSWERED, "Calls answered by an agent");
    describe_counter!(QUEUE_ANSWERED_IN_SL, "Calls answered within 15 s");
    describe_counter!(QUEUE_ABANDONED, "Callers who hung up while waiting");
    describe_counter!(QUEUE_ABANDONED_SHORT, "Callers who hung up within 5 s");
    describe_gauge!(QUEUE_WAITING, "Callers waiting now");
    describe_gauge!(QUEUE_LONGEST_WAIT, Unit::Seconds, "Longest current wait");
    describe_histogram!(QUEUE_WAIT, Unit::Seconds, "Wait before answer or abandon");
    describe_gauge!(AGENTS, "Agents serving the queue, by state");
    describe_counter!(EMERGENCY_CALLS, "Emergency calls, by service and result");
    describe_counter!(
        EMERGENCY_FAILOVERS,
        "Emergency targets skipped for the next"
    );
    describe_counter!(
        NO_AGENT_ALARMS,
        "Calls with no agent logged in along their chain"
    );
    describe_counter!(CDRS_LOST, "CDRs not handed to the store");
    describe_counter!(FLOOD_DROPS, "Requests dropped by the flood guard");
    describe_counter!(FLOOD_BANS, "Sources banned for flooding");
    describe_counter!(AUTH_FAILURES, "Failed digest authentications");
    describe_counter!(AUTH_LOCKOUTS, "Lockouts after repeated failures");
    describe_counter!(COS_REFUSALS, "Calls refused by class of service");
    describe_counter!(OVERLOAD_REJECTIONS, "New calls refused: overload");
    describe_gauge!(FLOOD_SOURCES, "Sources tracked by the flood guard");
    describe_gauge!(OUTBOX_BACKLOG, "Work orders waiting for their sub-center");
    describe_counter!(OUTBOX_ATTEMPTS, "Outbox POSTs, by result");
    describe_counter!(WORK_ORDERS, "Work orders created, by kind");
    describe_gauge!(MEDIA_STREAMS, "Early-media streams playing now");
    describe_gauge!(MEDIA_PORTS_IN_USE, "RTP ports allocated to calls now");
    describe_counter!(MEDIA_OFFERS, "SDP offers of queued calls, by result");
    describe_counter!(MEDIA_BIND_FAILURES, "RTP ports that could not be bound");
    describe_counter!(TLS_HANDSHAKE_FAILURES, "TLS handshakes failed, by side");
    describe_gauge!(BUILD_INFO, "Build information");
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(handle)
}

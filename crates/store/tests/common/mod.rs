//! Builders shared by the integration tests.
#![allow(dead_code)]

use store::{
    Cdr, HistoryEntry, LineMode, Outcome, StoreConfig, WorkOrder, WorkOrderKind, WorkOrderStatus,
};

/// A full CDR for call `n`, arriving at `arrival_ms`.
pub fn cdr(n: u64, arrival_ms: i64) -> Cdr {
    Cdr {
        call_id: format!("call-{n}@10.0.0.1"),
        caller: format!("1380013{:04}", n % 10_000),
        dialed: "097212315".into(),
        normalized: "12315".into(),
        line: Some("12315".into()),
        mode: Some(LineMode::Merge),
        prefecture: Some("0972".into()),
        entry_queue: Some("12345-haidong".into()),
        answer_queue: Some("12345-province".into()),
        agent: Some("8001".into()),
        target: None,
        arrival_ms,
        queued_ms: Some(arrival_ms + 10),
        offered_ms: Some(arrival_ms + 20),
        answered_ms: Some(arrival_ms + 3_000),
        ended_ms: arrival_ms + 60_000,
        outcome: Outcome::Answered,
        work_order: None,
    }
}

/// A new work order, with its creation step in the history.
pub fn work_order(id: &str, kind: WorkOrderKind, at_ms: i64, endpoint: Option<&str>) -> WorkOrder {
    let status = if endpoint.is_some() {
        WorkOrderStatus::Dispatched
    } else {
        WorkOrderStatus::Open
    };
    WorkOrder {
        id: id.into(),
        kind,
        status,
        created_ms: at_ms,
        updated_ms: at_ms,
        call_id: Some(format!("call-of-{id}")),
        caller: Some("13800138000".into()),
        prefecture: Some("0976".into()),
        subcenter_endpoint: endpoint.map(str::to_owned),
        payload: serde_json::json!({ "summary": "税务咨询回拨", "department": "12366" }),
        history: vec![HistoryEntry {
            at_ms,
            status,
            actor: "switchboard".into(),
            note: "created".into(),
        }],
    }
}

/// A database for one test: a SQLite file, or a fresh PostgreSQL server (the HA pair's backend);
/// the backend-neutral tests run against both (`both!`).
pub struct Db {
    pub cfg: StoreConfig,
    _dir: tempfile::TempDir,
    _pg: Option<store::testing::PgServer>,
}

impl Db {
    pub fn sqlite() -> Db {
        let dir = tempfile::tempdir().unwrap();
        Db {
            cfg: StoreConfig::new(dir.path().join("store.db")),
            _dir: dir,
            _pg: None,
        }
    }

    pub fn postgres() -> Db {
        let dir = tempfile::tempdir().unwrap();
        let pg = store::testing::PgServer::start();
        let mut cfg = StoreConfig::new(dir.path().join("store.db"));
        cfg.postgres_url = Some(pg.create_db("switchboard"));
        Db {
            cfg,
            _dir: dir,
            _pg: Some(pg),
        }
    }
}

#[macro_export]
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[test]
            pub fn sqlite() {
                super::$name(super::Db::sqlite());
            }
            #[test]
            pub fn postgres() {
                super::$name(super::Db::postgres());
            }
        }
    };
}

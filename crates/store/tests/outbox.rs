//! The outbox against a simulated sub-center on a virtual clock: an hour-long outage, a restart
//! in the middle of it, a lost 2xx, and at the end every item delivered once, in order.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::{work_order, Db};
use store::{
    Delivery, NewDelivery, Outbox, Record, Store, StoreBackend, StoreConfig, WorkOrderKind,
    WorkOrderStatus, WriterHandle,
};

const WAIT: Duration = Duration::from_secs(20);
const T0: i64 = 1_764_000_000_000;
const MIN: i64 = 60_000;
const TAX: &str = "http://127.0.0.1:18080/tax/workorders";
const CUSTOMS: &str = "http://127.0.0.1:18081/customs/workorders";

/// A sub-center: up or down by the virtual clock, keeping one effect per idempotency key as
/// the issue asks of the receiving side.
struct SubCenter {
    down_from: i64,
    down_until: i64,
    posts: HashMap<String, u32>,
    effects: Vec<String>,
}

impl SubCenter {
    fn new(down_from: i64, down_until: i64) -> SubCenter {
        SubCenter {
            down_from,
            down_until,
            posts: HashMap::new(),
            effects: Vec::new(),
        }
    }

    /// `true` for a 2xx, `false` for a connection refused.
    fn post(&mut self, d: &Delivery, now: i64) -> bool {
        if (self.down_from..self.down_until).contains(&now) {
            return false;
        }
        *self.posts.entry(d.idempotency_key.clone()).or_default() += 1;
        if !self.effects.contains(&d.idempotency_key) {
            self.effects.push(d.idempotency_key.clone());
        }
        true
    }
}

fn setup(db: &Db) -> (StoreConfig, Store, WriterHandle) {
    let mut cfg = db.cfg.clone();
    cfg.outbox.initial_backoff_ms = 1_000;
    cfg.outbox.max_backoff_ms = 5 * MIN as u64;
    let (store, writer) = store::open(&cfg, None).unwrap();
    (cfg, store, writer)
}

/// A work order for a sub-center and its delivery, committed together.
fn submit_order(store: &Store, n: usize, endpoint: &str, now: i64) -> String {
    let id = format!("WO-a-{n:04}");
    let key = format!("{id}/create");
    let order = work_order(&id, WorkOrderKind::SubcenterTransfer, now, Some(endpoint));
    let t = store
        .submit(Record::Group(vec![
            Record::WorkOrder(Box::new(order)),
            Record::Deliver(Box::new(NewDelivery {
                endpoint: endpoint.into(),
                body: serde_json::json!({ "id": id, "n": n }).to_string(),
                idempotency_key: key.clone(),
                work_order: Some(id),
                created_ms: now,
            })),
        ]))
        .unwrap();
    assert!(store.wait_committed(t, WAIT));
    key
}

fn a_sub_center_down_for_an_hour_gets_everything_once_in_order(db: Db) {
    let (cfg, store, writer) = setup(&db);
    let mut outbox = store::open_outbox(&cfg).unwrap();
    // Tax is down from T0+5 min to T0+65 min; customs never is.
    let mut centers = BTreeMap::from([
        (TAX, SubCenter::new(T0 + 5 * MIN, T0 + 65 * MIN)),
        (CUSTOMS, SubCenter::new(0, 0)),
    ]);
    let mut sent: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    // One work order a minute for 90 minutes, alternating sub-centers.
    let mut arrivals: Vec<(i64, &str)> = (0..90)
        .map(|i| (T0 + i * MIN + 1, if i % 2 == 0 { TAX } else { CUSTOMS }))
        .collect();
    arrivals.reverse();
    let mut now = T0;
    let mut restarted = false;
    let mut lost_ack = false;
    let mut first_tax_after_outage = None;
    let mut steps = 0;
    loop {
        steps += 1;
        assert!(steps < 100_000, "the simulation must end");
        while arrivals.last().is_some_and(|(at, _)| *at <= now) {
            let (at, endpoint) = arrivals.pop().unwrap();
            let key = submit_order(&store, sent.values().map(Vec::len).sum(), endpoint, at);
            sent.entry(endpoint).or_default().push(key);
        }
        outbox.refresh().unwrap();

        if !restarted && now >= T0 + 30 * MIN {
            // The daemon restarts in the middle of the outage: the schedule comes back from
            // disk, backoff included, so the dead endpoint is not hammered.
            restarted = true;
            let before = outbox.backlog();
            drop(outbox);
            outbox = store::open_outbox(&cfg).unwrap();
            assert_eq!(outbox.backlog(), before);
            let due = outbox.poll_timeout().unwrap();
            assert!(
                due > now - 5 * MIN,
                "the persisted backoff survives: {due} vs {now}"
            );
        }

        while let Some(d) = outbox.poll_delivery(now) {
            let endpoint = if d.endpoint == TAX { TAX } else { CUSTOMS };
            let ok = centers.get_mut(endpoint).unwrap().post(&d, now);
            if ok && endpoint == TAX && now >= T0 + 65 * MIN && first_tax_after_outage.is_none() {
                first_tax_after_outage = Some(now);
            }
            if ok && endpoint == TAX && now >= T0 + 70 * MIN && !lost_ack {
                // The 2xx is lost and the daemon dies before recording it: the item must go
                // again, with the same key, and the sub-center keeps one effect.
                lost_ack = true;
                drop(outbox);
                outbox = store::open_outbox(&cfg).unwrap();
                break;
            }
            if ok {
                outbox.on_success(d.id, now).unwrap();
            } else {
                outbox.on_failure(d.id, now, None).unwrap();
            }
        }

        let next = [outbox.poll_timeout(), arrivals.last().map(|(at, _)| *at)]
            .into_iter()
            .flatten()
            .min();
        match next {
            Some(t) => now = now.max(t),
            None => break,
        }
    }
    assert!(restarted && lost_ack);
    assert_eq!(outbox.backlog(), 0);
    assert_eq!(outbox.backend_mut().outbox_backlog().unwrap(), 0);

    for (endpoint, center) in &centers {
        assert_eq!(
            &center.effects, &sent[endpoint],
            "{endpoint}: every item once, in order"
        );
    }
    let tax = &centers[TAX];
    let redelivered: Vec<_> = tax.posts.iter().filter(|(_, n)| **n > 1).collect();
    assert_eq!(
        redelivered.len(),
        1,
        "only the lost 2xx was sent twice: {redelivered:?}"
    );
    assert!(centers[CUSTOMS].posts.values().all(|n| *n == 1));
    let back = first_tax_after_outage.unwrap();
    assert!(
        back <= T0 + 65 * MIN + 5 * MIN,
        "the first retry after the outage comes within the backoff cap"
    );

    // Every order says it was delivered, in its history.
    writer.shutdown().unwrap();
    let mut r = store::open_backend(&cfg).unwrap();
    for key in sent.values().flatten() {
        let id = key.trim_end_matches("/create");
        let wo = r.work_order(id).unwrap().unwrap();
        assert_eq!(wo.status, WorkOrderStatus::Delivered, "{id}");
        let last = wo.history.last().unwrap();
        assert_eq!(
            (last.actor.as_str(), last.status),
            ("outbox", WorkOrderStatus::Delivered)
        );
    }
    let attempts: i64 = match &mut r {
        store::AnyBackend::Sqlite(b) => b
            .connection()
            .query_row(
                "SELECT max(attempts) FROM outbox WHERE endpoint = ?1",
                [TAX],
                |row| row.get(0),
            )
            .unwrap(),
        store::AnyBackend::Postgres(b) => {
            let n: i32 = b
                .client()
                .query_one(
                    "SELECT max(attempts) FROM outbox WHERE endpoint = $1",
                    &[&TAX],
                )
                .unwrap()
                .get(0);
            i64::from(n)
        }
    };
    // 1 s doubling to the 5 min cap covers ~9 tries, then one per 5 min over the rest of the hour.
    assert!(
        (10..=25).contains(&attempts),
        "the dead endpoint was not hammered: {attempts}"
    );
}
both!(a_sub_center_down_for_an_hour_gets_everything_once_in_order);

fn a_rejected_item_is_set_aside_and_does_not_block_the_next(db: Db) {
    let (cfg, store, writer) = setup(&db);
    let k1 = submit_order(&store, 1, TAX, T0);
    let k2 = submit_order(&store, 2, TAX, T0);
    let mut outbox: Outbox<store::AnyBackend> = store::open_outbox(&cfg).unwrap();
    let d1 = outbox.poll_delivery(T0).unwrap();
    assert_eq!(d1.idempotency_key, k1);
    assert_eq!(outbox.poll_delivery(T0), None);
    outbox.on_rejected(d1.id, T0 + 1).unwrap();
    let d2 = outbox.poll_delivery(T0 + 1).unwrap();
    assert_eq!((d2.idempotency_key.as_str(), d2.attempt), (k2.as_str(), 1));
    assert!(
        outbox.on_success(d1.id, T0 + 2).is_err(),
        "only the item in flight"
    );
    outbox.on_success(d2.id, T0 + 2).unwrap();
    assert_eq!(outbox.backlog(), 0);
    writer.shutdown().unwrap();

    let mut r = store::open_backend(&cfg).unwrap();
    let wo = r.work_order("WO-a-0001").unwrap().unwrap();
    assert_eq!(wo.status, WorkOrderStatus::Open, "back to the agents");
    assert!(wo.history.last().unwrap().note.starts_with("refused"));
    // A restart does not bring it back.
    drop(outbox);
    let outbox = store::open_outbox(&cfg).unwrap();
    assert_eq!(outbox.backlog(), 0);
}
both!(a_rejected_item_is_set_aside_and_does_not_block_the_next);

fn resubmitting_a_delivery_with_the_same_key_queues_it_once(db: Db) {
    let (cfg, store, writer) = setup(&db);
    submit_order(&store, 1, TAX, T0);
    submit_order(&store, 1, TAX, T0);
    writer.shutdown().unwrap();
    let outbox = store::open_outbox(&cfg).unwrap();
    assert_eq!(outbox.backlog(), 1);
}
both!(resubmitting_a_delivery_with_the_same_key_queues_it_once);

//! A CDR for every call, durable across a SIGKILL, exported with `switchboard cdr export`.

mod common;

use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(40);

#[test]
fn every_call_leaves_a_cdr_that_survives_sigkill() {
    // Callers who give up after 1 s get a callback work order: the abandoned call below makes one,
    // committed with its CDR before the kill.
    let mut d = Daemon::start_with(Settings {
        config_edits: vec![(
            "callback_after_abandon_s = 30\n".into(),
            "callback_after_abandon_s = 1\n".into(),
        )],
        ..Settings::default()
    });
    // An answered merge-line call from Haidong.
    let port = free_port("127.0.0.81");
    register(&d, "8002", "127.0.0.81", port, "u1");
    let p = port.to_string();
    let agent = sipp(
        "phone 8002",
        &[
            "-sf",
            &scenario("uas.xml"),
            "-s",
            "8002",
            "-i",
            "127.0.0.81",
            "-p",
            &p,
            "-m",
            "1",
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    let tp = free_port("127.0.0.2").to_string();
    let (ok, diag) = sipp(
        "answered",
        &[
            &d.target(),
            "-sf",
            &scenario("uac.xml"),
            "-s",
            "097212331",
            "-i",
            "127.0.0.2",
            "-p",
            &tp,
            "-m",
            "1",
        ],
    )
    .finish(LIMIT);
    let (a_ok, a_diag) = agent.finish(LIMIT);
    assert!(ok && a_ok, "{diag}\n{a_diag}\n--- daemon\n{}", d.log());
    // A caller who gives up in the queue (nobody answers Yushu or the province).
    let tp = free_port("127.0.0.2").to_string();
    let (ok, diag) = sipp(
        "abandoned",
        &[
            &d.target(),
            "-sf",
            &scenario("uac_abandon.xml"),
            "-s",
            "097612345",
            "-i",
            "127.0.0.2",
            "-p",
            &tp,
            "-m",
            "1",
        ],
    )
    .finish(LIMIT);
    assert!(ok, "{diag}");
    // The writer commits within its batch window (10 ms); then the daemon dies without warning.
    std::thread::sleep(Duration::from_millis(500));
    d.signal("KILL");
    assert!(d.wait_exit(Duration::from_secs(5)).is_some());

    let cdrs = export_cdrs(&d);
    assert_eq!(cdrs.len(), 2, "{cdrs:#?}");
    let answered = cdrs
        .iter()
        .find(|c| c["dialed"] == "097212331")
        .expect("the answered call's CDR");
    assert_eq!(answered["outcome"], "answered", "{answered}");
    assert_eq!(answered["normalized"], "12331");
    assert_eq!(answered["line"], "12331");
    assert_eq!(answered["mode"], "merge");
    assert_eq!(answered["prefecture"], "haidong");
    assert_eq!(answered["entry_queue"], "12345-haidong");
    assert_eq!(answered["answer_queue"], "12345-haidong");
    assert_eq!(answered["agent"], "8002");
    assert_eq!(
        answered["caller"], "13800000000",
        "the caller is stored in full"
    );
    let abandoned = cdrs
        .iter()
        .find(|c| c["dialed"] == "097612345")
        .expect("the abandoned call's CDR");
    assert_eq!(abandoned["outcome"], "abandoned", "{abandoned}");
    assert_eq!(abandoned["mode"], "hotline");
    // The work order acknowledged with it survived too, and the store opens cleanly.
    let mut reader = store::open_reader(&store::StoreConfig::new(
        d.dir.path().join("switchboard.db"),
    ))
    .expect("the store opens after SIGKILL");
    store::StoreBackend::check_integrity(&mut reader).expect("integrity");
    let orders = store::StoreBackend::work_orders_since(&mut reader, 0, 100).unwrap();
    assert_eq!(orders.len(), 1, "{orders:?}");
    assert_eq!(orders[0].kind, store::WorkOrderKind::AbandonedCallback);
    assert_eq!(
        abandoned["work_order"],
        orders[0].id.as_str(),
        "{abandoned}"
    );
    assert_eq!(answered["work_order"], serde_json::Value::Null);
    // And the log never shows the caller's number in full.
    assert!(
        !d.log().contains("13800000000"),
        "a raw caller number reached the log"
    );
}

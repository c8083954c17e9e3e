//! The demo PSAP table that the default config ships loads against the shipped Qinghai plan and
//! gives every center a path for every service, laid out as issue 5 item 7 says.

use std::net::SocketAddr;
use std::path::PathBuf;

use emergency_bridge::{PrefectureId, PsapTier, Transport, SERVICES};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn demo_psaps_cover_every_prefecture_and_service() {
    let plan = dialplan::load_file(root().join("dialplans/qinghai.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let bridge = emergency_bridge::load_file(
        root().join("crates/emergency-bridge/examples/demo-psaps.toml"),
        &plan,
    )
    .unwrap_or_else(|e| panic!("{e}"));

    // DESIGN.md's order: Xining 1 ... Haixi 8; the province at 9.
    let order = [
        ("xining", 1),
        ("haidong", 2),
        ("haibei", 3),
        ("huangnan", 4),
        ("hainan", 5),
        ("golog", 6),
        ("yushu", 7),
        ("haixi", 8),
        ("province", 9),
    ];
    assert_eq!(plan.centers().len(), order.len());
    let mut pairs = 0;
    for (id, k) in order {
        let center = plan.prefecture_by_id(id).unwrap_or_else(|| panic!("{id}"));
        for service in SERVICES {
            let port = emergency_bridge::service_number(service)
                .parse::<u16>()
                .map(|n| 5000 + n)
                .unwrap();
            let own: SocketAddr = format!("127.0.1.{k}:{port}").parse().unwrap();
            let province: SocketAddr = format!("127.0.1.9:{port}").parse().unwrap();
            let list = bridge.route(service, center);
            let addrs: Vec<SocketAddr> = list.iter().map(|t| t.addr).collect();
            if center == PrefectureId::PROVINCE {
                assert_eq!(addrs, [province], "{id} {service}");
                assert_eq!(list[0].tier, PsapTier::Province);
            } else {
                assert_eq!(addrs, [own, province], "{id} {service}");
                assert_eq!(list[0].tier, PsapTier::Prefecture);
                assert_eq!(list[1].tier, PsapTier::Province);
            }
            assert!(list.iter().all(|t| t.transport == Transport::Udp));
            let number = emergency_bridge::service_number(service);
            assert_eq!(
                list[0].request_uri(service),
                format!("sip:{number}@127.0.1.{k}:{port}")
            );
            pairs += 1;
        }
        // Each PSAP address is a trunk of its own center.
        assert_eq!(
            bridge.psap_source(format!("127.0.1.{k}").parse().unwrap()),
            Some(center)
        );
    }
    assert_eq!(pairs, 36);
    assert_eq!(bridge.no_provisional_timeout().as_millis(), 2000);
    assert!(bridge.psap_trunks_as_sources());
}

//! Dialplan lookup cost on a generated plan of 10,000 lines: the cost must not grow with the plan,
//! and a lookup must not allocate (everything returned borrows from the plan).
//!
//! Run: `cargo bench -p dialplan --bench lookup`.

use std::fmt::Write;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};

const LINES: usize = 10_000;

/// A plan with the Qinghai centers and `LINES` lines cycling through the three modes.
fn generated_plan() -> String {
    let mut t = String::from(
        "[platform]\nhotline = \"12345\"\nprovince = \"bench\"\n\n\
         [provincial_center]\nid = \"province\"\nname = \"p\"\nqueue = \"12345-province\"\n",
    );
    let prefectures = [
        ("xining", "0971"),
        ("haidong", "0972"),
        ("haibei", "0970"),
        ("huangnan", "0973"),
        ("hainan", "0974"),
        ("golog", "0975"),
        ("yushu", "0976"),
        ("haixi", "0977\", \"0979"),
    ];
    for (id, codes) in prefectures {
        let _ = write!(
            t,
            "\n[[prefectures]]\nid = \"{id}\"\nname = \"{id}\"\narea_codes = [\"{codes}\"]\nqueue = \"12345-{id}\"\n"
        );
    }
    for i in 0..LINES {
        let n = 2_000_000 + i;
        let _ = write!(
            t,
            "\n[[lines]]\nnumber = \"{n}\"\ndepartment = \"d{i}\"\nskill = \"s{i}\"\n"
        );
        let _ = match i % 3 {
            0 => writeln!(t, "mode = \"merge\"\nannouncement = \"moved\""),
            1 => writeln!(
                t,
                "mode = \"dual\"\ndepartment_queue = \"dept-{n}\"\noverflow_after_s = 20"
            ),
            _ => writeln!(
                t,
                "mode = \"subcenter\"\ntrunk = [\"sip:127.0.2.1:5060\", \"sip:127.0.2.2:5060\"]\n\
                 workorder_url = \"http://127.0.2.1:8080/wo\""
            ),
        };
    }
    t
}

fn bench(c: &mut Criterion) {
    let plan =
        dialplan::load_str("generated.toml", &generated_plan()).expect("generated plan compiles");
    assert_eq!(plan.lines().len(), LINES);
    let mut g = c.benchmark_group("route");
    g.bench_function("bare_merge_number", |b| {
        b.iter(|| {
            black_box(plan.route(
                black_box("2009999"),
                black_box("13912345678"),
                black_box(Some("haidong")),
            ))
        })
    });
    g.bench_function("sip_uri_area_prefix_dual", |b| {
        b.iter(|| {
            black_box(plan.route(
                black_box("sip:0972-2005000@10.0.0.1:5060;user=phone"),
                black_box("sip:09711234567@gw;user=phone"),
                black_box(None),
            ))
        })
    });
    g.bench_function("plus86_subcenter_fixed_caller", |b| {
        b.iter(|| {
            black_box(plan.route(
                black_box("tel:+86-979-2000002"),
                black_box("+869771234567"),
                black_box(Some("haixi")),
            ))
        })
    });
    g.bench_function("hotline_12345", |b| {
        b.iter(|| {
            black_box(plan.route(
                black_box("sip:12345@gw"),
                black_box("09761234567"),
                black_box(None),
            ))
        })
    });
    g.bench_function("emergency_prefixed", |b| {
        b.iter(|| {
            black_box(plan.route(
                black_box("0971110"),
                black_box("13912345678"),
                black_box(None),
            ))
        })
    });
    g.bench_function("unknown_number", |b| {
        b.iter(|| {
            black_box(plan.route(
                black_box("sip:9999999@gw"),
                black_box("13912345678"),
                black_box(None),
            ))
        })
    });
    g.finish();

    // The same kind of lookup on the 29-line shipped plan: the cost must not depend on plan size.
    let qinghai = dialplan::load_file(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../dialplans/qinghai.toml"
    ))
    .expect("shipped plan compiles");
    let mut g = c.benchmark_group("route_qinghai_29_lines");
    g.bench_function("sip_uri_area_prefix_dual", |b| {
        b.iter(|| {
            black_box(qinghai.route(
                black_box("sip:0972-12315@10.0.0.1:5060;user=phone"),
                black_box("sip:09711234567@gw;user=phone"),
                black_box(None),
            ))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! CPU cost of early media: N simultaneous announcement streams (default 2,000) played by the
//! daemon's real media task (`switchboard::media_task::run`: one task, one 20 ms interval, one
//! socket per stream, rtp-rs packets) with real UDP sends on loopback.
//!
//!   cargo bench -p switchboard --bench media_streams            # 2000 streams, 10 s
//!   MEDIA_BENCH_STREAMS=500 MEDIA_BENCH_SECONDS=5 cargo bench -p switchboard --bench media_streams
//!
//! The media task runs alone on its own thread (a current-thread tokio runtime), so that thread's
//! CPU time (utime+stime from /proc/thread-self/stat, read on that thread) is the cost of the
//! streams: pacing, packet building and the sendto calls. A sink thread counts what arrives, to
//! show the packets really went out; its own CPU is not counted. Reports CPU-µs per
//! stream-second (benches/README.md records the figure).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use media::{Clip, Codec, Lang, PlaylistRequest, Prompts};
use switchboard::media_task::{self, MediaCommand};

/// (utime + stime) of the calling thread, in clock ticks.
fn thread_cpu_ticks() -> u64 {
    let s = std::fs::read_to_string("/proc/thread-self/stat").expect("/proc/thread-self/stat");
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = &s[s.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// `Udp: OutDatagrams` and `RcvbufErrors` of this network namespace (/proc/net/snmp): whether the
/// packets left, and whether the sink dropped them (system-wide: other traffic adds a little).
fn udp_counters() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut lines = s.lines().filter(|l| l.starts_with("Udp: "));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return (0, 0);
    };
    let get = |want: &str| {
        names
            .split_whitespace()
            .position(|n| n == want)
            .and_then(|i| values.split_whitespace().nth(i))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (get("OutDatagrams"), get("RcvbufErrors"))
}

fn clock_ticks_per_second() -> u64 {
    // getconf CLK_TCK; 100 on every Linux we run on.
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

fn load_prompts() -> Prompts {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prompts/cmn");
    let mut p = Prompts::new();
    for c in Clip::ALL {
        let f = dir.join(format!("{}.wav", c.file_stem()));
        let bytes = std::fs::read(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        p.add_wav(Lang::Mandarin, c, &bytes).expect("prompt");
    }
    p
}

fn main() {
    let streams: usize = std::env::var("MEDIA_BENCH_STREAMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let seconds: u64 = std::env::var("MEDIA_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    // `cargo bench` passes --bench; `cargo test --benches` would run us too: keep that short.
    let quick = std::env::args().all(|a| a != "--bench");
    let (streams, seconds) = if quick { (50, 1) } else { (streams, seconds) };
    let bind_ip: IpAddr = "127.0.3.20".parse().unwrap();

    // The sink: one socket where every stream's offer points; counts packets.
    let sink = {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        let _ = s.set_recv_buffer_size(16 << 20);
        s.bind(&SocketAddr::from(([127, 0, 3, 21], 0)).into())
            .unwrap();
        UdpSocket::from(s)
    };
    let sink_addr = sink.local_addr().unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sink_thread = {
        let (received, done) = (received.clone(), done.clone());
        std::thread::spawn(move || {
            sink.set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            let mut buf = [0u8; 2048];
            while !done.load(Ordering::Relaxed) {
                if sink.recv_from(&mut buf).is_ok() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    // Ports: the first `streams` even ports from 40000 that are free on bind_ip.
    let ports: Vec<u16> = (40000u16..60000)
        .step_by(2)
        .filter(|p| UdpSocket::bind((bind_ip, *p)).is_ok())
        .take(streams)
        .collect();
    assert_eq!(ports.len(), streams, "not enough free ports on {bind_ip}");

    let prompts = Arc::new(load_prompts());
    let (tx, rx) = tokio::sync::mpsc::channel(media_task::MEDIA_QUEUE.max(streams + 16));
    for &port in &ports {
        tx.try_send(MediaCommand::Start {
            port,
            codec: Codec::Pcma,
            payload_type: 8,
            remote: sink_addr,
            playlist: PlaylistRequest {
                lang: Lang::Mandarin,
                merged_notice: true,
                position: Some(12),
            },
        })
        .expect("channel room");
    }

    // The media task on its own thread; a probe task on the same thread reads its CPU time.
    let warmup = Duration::from_secs(1);
    let measure = Duration::from_secs(seconds);
    let media_thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let task = tokio::spawn(media_task::run(bind_ip, prompts, rx));
            tokio::time::sleep(warmup).await;
            let c0 = thread_cpu_ticks();
            let u0 = udp_counters();
            let t0 = Instant::now();
            tokio::time::sleep(measure).await;
            let c1 = thread_cpu_ticks();
            let u1 = udp_counters();
            let wall = t0.elapsed();
            drop(tx); // the task ends when the core's sender goes
            let _ = task.await;
            (c1 - c0, wall, (u1.0 - u0.0, u1.1 - u0.1))
        })
    });
    let before = Instant::now();
    std::thread::sleep(warmup);
    let r0 = received.load(Ordering::Relaxed);
    let (ticks, wall, (out_datagrams, rcvbuf_errors)) = media_thread.join().unwrap();
    let r1 = received.load(Ordering::Relaxed);
    let elapsed = before.elapsed();
    done.store(true, Ordering::Relaxed);
    sink_thread.join().unwrap();

    let cpu_us = ticks as f64 * 1e6 / clock_ticks_per_second() as f64;
    let stream_seconds = streams as f64 * wall.as_secs_f64();
    let expected = stream_seconds * 50.0;
    let got = (r1 - r0) as f64;
    println!("media_streams: {streams} streams for {:.1} s (after {warmup:?} warm-up; total {elapsed:.1?})", wall.as_secs_f64());
    println!(
        "  media task CPU: {:.0} ms = {:.1} % of one core",
        cpu_us / 1e3,
        cpu_us / 1e4 / wall.as_secs_f64()
    );
    let sent = (out_datagrams as f64).min(expected).max(1.0);
    println!(
        "  CPU per stream-second: {:.1} µs measured; {:.1} µs at the full 50 packets/s ({:.2} µs per packet sent)",
        cpu_us / stream_seconds,
        cpu_us / sent * 50.0,
        cpu_us / sent
    );
    println!(
        "  UDP datagrams sent (whole namespace, /proc/net/snmp): {out_datagrams} of {expected:.0} expected ({:.1} %)",
        out_datagrams as f64 * 100.0 / expected
    );
    println!(
        "  packets received by the sink thread: {got:.0} ({:.1} %); receive-buffer drops: {rcvbuf_errors}",
        got * 100.0 / expected
    );
}

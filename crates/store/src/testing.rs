//! A throwaway PostgreSQL server for tests: the Debian package's binaries, a fresh cluster in a
//! temporary directory, listening on 127.0.0.1 at a free port, stopped (by its PID) when the
//! [`PgServer`] is dropped. Tests of the PostgreSQL backend and of the HA pair use it, so they
//! need no server set up beforehand, only the `postgresql` package (`scripts/test.sh` installs
//! it). Not used by the daemon.
//!
//! `initdb` runs once per machine into a template directory; each server copies it, so a server
//! starts in well under a second. PostgreSQL refuses to run as root: when the tests run as
//! root, the server runs as the `postgres` user (which the Debian package creates).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A running server; dropped, it is stopped and its files removed.
#[derive(Debug)]
pub struct PgServer {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
}

/// The directory holding `initdb` and `postgres`, newest version first.
pub fn bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("postgres").exists() && p.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop()
}

/// The uid/gid to run as: the `postgres` user when we are root, else ourselves.
fn run_as() -> Option<(u32, u32)> {
    let me = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid_line = me.lines().find(|l| l.starts_with("Uid:"))?;
    let uid: u32 = uid_line.split_whitespace().nth(1)?.parse().ok()?;
    if uid != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("postgres:"))?;
    let mut f = line.split(':').skip(2);
    Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
}

fn chown_tree(path: &Path, ids: Option<(u32, u32)>) {
    if let Some((uid, gid)) = ids {
        let status = Command::new("chown")
            .arg("-R")
            .arg(format!("{uid}:{gid}"))
            .arg(path)
            .status()
            .expect("chown");
        assert!(status.success(), "chown {}", path.display());
    }
}

fn command(bin: &Path, ids: Option<(u32, u32)>) -> Command {
    let mut c = Command::new(bin);
    if let Some((uid, gid)) = ids {
        use std::os::unix::process::CommandExt;
        c.uid(uid).gid(gid);
    }
    c
}

fn scratch(name: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("sb-pg-{}-{name}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A cluster made by `initdb` once per machine and PostgreSQL version (kept in the temp dir and
/// shared by later test runs), copied by each server. Made in a private directory and renamed
/// into place, so concurrent test processes never see half of one.
fn template() -> &'static PathBuf {
    static T: OnceLock<PathBuf> = OnceLock::new();
    T.get_or_init(|| {
        let bin = bin_dir().expect(
            "PostgreSQL is not installed: apt-get install -y postgresql (the README's test command does this)",
        );
        let version = bin
            .parent()
            .and_then(|p| p.file_name())
            .map(|v| v.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ids = run_as();
        let owner = ids.map_or(0, |(uid, _)| uid);
        let shared = std::env::temp_dir().join(format!("sb-pg-template-{version}-{owner}"));
        if shared.join("PG_VERSION").exists() {
            return shared;
        }
        let dir = scratch("template");
        chown_tree(&dir, ids);
        let data = dir.join("data");
        let out = command(&bin.join("initdb"), ids)
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-instructions"])
            .arg("-D")
            .arg(&data)
            .stdout(Stdio::null())
            .output()
            .expect("running initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Another process may have won the race; either way `shared` is complete afterwards.
        let _ = std::fs::rename(&data, &shared);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(shared.join("PG_VERSION").exists(), "template cluster");
        shared
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl PgServer {
    /// Starts a fresh server on 127.0.0.1 and waits until it accepts connections.
    pub fn start() -> PgServer {
        let bin = bin_dir().expect("PostgreSQL is not installed: apt-get install -y postgresql");
        let ids = run_as();
        let dir = scratch("server");
        let data = dir.join("data");
        let status = Command::new("cp")
            .arg("-a")
            .arg(template())
            .arg(&data)
            .status()
            .expect("cp");
        assert!(status.success(), "copying the template cluster");
        chown_tree(&dir, ids);
        let port = free_port();
        let child = command(&bin.join("postgres"), ids)
            .arg("-D")
            .arg(&data)
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-p", &port.to_string()])
            .arg("-k")
            .arg(&dir)
            .args(["-c", "fsync=on", "-c", "synchronous_commit=on"])
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("postgres.log")).expect("log file"),
            ))
            .spawn()
            .expect("starting postgres");
        let server = PgServer {
            child: Some(child),
            dir,
            port,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let end = Instant::now() + Duration::from_secs(30);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                && postgres::Client::connect(&self.url("postgres"), postgres::NoTls).is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < end,
                "postgres did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection URL for database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates database `db` and returns its URL.
    pub fn create_db(&self, db: &str) -> String {
        let mut c = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)
            .expect("connecting to postgres");
        c.batch_execute(&format!("CREATE DATABASE \"{db}\""))
            .expect("CREATE DATABASE");
        self.url(db)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }

    /// The server's PID.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the server now (fast shutdown: SIGINT, then SIGKILL after 10 s).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let end = Instant::now() + Duration::from_secs(10);
            while Instant::now() < end {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same data and port (after [`PgServer::stop`]).
    pub fn restart(&mut self) {
        self.stop();
        let bin = bin_dir().expect("postgres binaries");
        let child = command(&bin.join("postgres"), run_as())
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-p", &self.port.to_string()])
            .arg("-k")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(self.dir.join("postgres.log"))
                    .expect("log file"),
            ))
            .spawn()
            .expect("starting postgres");
        self.child = Some(child);
        self.wait_ready();
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

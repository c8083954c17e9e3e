//! `switchboard`: the 12345 switchboard daemon and its tools.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use switchboard::config::{self, LogFormat};

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "The 12345 government-service hotline switchboard"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon.
    Run {
        /// The config file.
        #[arg(short, long, default_value = "deploy/switchboard.toml")]
        config: PathBuf,
    },
    /// Validate the config offline; print every problem as file:line:col: message.
    Check {
        #[arg(short, long, default_value = "deploy/switchboard.toml")]
        config: PathBuf,
    },
    /// Call detail records.
    Cdr {
        #[command(subcommand)]
        cmd: CdrCmd,
    },
    /// Rosters: prove that every hour of the week has a staffed path for every queue.
    Roster {
        #[command(subcommand)]
        cmd: RosterCmd,
    },
    /// Talk to a running daemon over its admin API (agents, queues, calls, reload …).
    Ctl(switchboard::ctl::CtlArgs),
    /// Print the HA1 hashes for an agent's password, for the [[agents]] table.
    Ha1 {
        #[arg(long)]
        user: String,
        #[arg(long)]
        realm: String,
        /// Read from the SWITCHBOARD_PASSWORD environment variable when absent.
        #[arg(long)]
        password: Option<String>,
    },
}

#[derive(Subcommand)]
enum CdrCmd {
    /// Write the CDRs of calls that arrived since a time to standard output.
    Export {
        #[arg(short, long, default_value = "deploy/switchboard.toml")]
        config: PathBuf,
        /// Arrival time from which to export, in Unix milliseconds (0: everything).
        #[arg(long, default_value_t = 0)]
        since_ms: i64,
        /// `csv` or `jsonl`.
        #[arg(long, default_value = "csv")]
        format: String,
    },
}

#[derive(Subcommand)]
enum RosterCmd {
    /// Print every gap (an hour of the week when a queue has no staffed center) and exit non-zero
    /// if there is one.
    Check {
        #[arg(short, long, default_value = "deploy/switchboard.toml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Check { config } => match switchboard::setup::load(&config) {
            Ok(s) => {
                println!(
                    "{}: ok ({} listeners, {} trunks, {} agents; dialplan `{}` with {} lines)",
                    config.display(),
                    s.loaded.config.sip.listen.len(),
                    s.loaded.trunks.len(),
                    s.loaded.config.agents.len(),
                    s.plan.name(),
                    s.plan.lines().len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Cdr {
            cmd:
                CdrCmd::Export {
                    config,
                    since_ms,
                    format,
                },
        } => {
            let loaded = match config::load(&config) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            let Some(sc) = &loaded.config.store else {
                eprintln!("{}: no [store] section: no CDRs are kept", config.display());
                return ExitCode::FAILURE;
            };
            let mut sc = sc.clone();
            sc.path = loaded.resolve(&sc.path);
            let mut reader = match store::open_backend(&sc) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("{}: {e}", sc.path.display());
                    return ExitCode::FAILURE;
                }
            };
            let mut out = std::io::stdout().lock();
            let r = match format.as_str() {
                "csv" => store::write_csv(&mut reader, since_ms, &mut out),
                "jsonl" => store::write_jsonl(&mut reader, since_ms, &mut out),
                other => {
                    eprintln!("unknown format `{other}`: csv or jsonl");
                    return ExitCode::FAILURE;
                }
            };
            match r {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("export failed: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Roster {
            cmd: RosterCmd::Check { config },
        } => match switchboard::setup::load(&config) {
            Ok(s) => match &s.seats {
                None => {
                    eprintln!(
                        "{}: no [routing] seats_file: nothing to check",
                        config.display()
                    );
                    ExitCode::FAILURE
                }
                Some(seats) => {
                    let gaps = seat_manager::roster_check(seats);
                    for g in &gaps {
                        println!("{g}");
                    }
                    if gaps.is_empty() {
                        println!(
                            "{}: every queue has a staffed path every hour of the week",
                            config.display()
                        );
                        ExitCode::SUCCESS
                    } else {
                        println!("{} gap(s)", gaps.len());
                        ExitCode::FAILURE
                    }
                }
            },
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Ctl(args) => switchboard::ctl::run(args),
        Cmd::Ha1 {
            user,
            realm,
            password,
        } => {
            let Some(pw) = password.or_else(|| std::env::var("SWITCHBOARD_PASSWORD").ok()) else {
                eprintln!("give --password or set SWITCHBOARD_PASSWORD");
                return ExitCode::FAILURE;
            };
            use sip_core::auth::{ha1, DigestAlgorithm};
            println!(
                "ha1_md5 = \"{}\"",
                ha1(DigestAlgorithm::Md5, &user, &realm, &pw)
            );
            println!(
                "ha1_sha256 = \"{}\"",
                ha1(DigestAlgorithm::Sha256, &user, &realm, &pw)
            );
            ExitCode::SUCCESS
        }
        Cmd::Run { config } => {
            let setup = match switchboard::setup::load(&config) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            init_logging(&setup.loaded.config.log);
            // Two runtimes (ARCHITECTURE.md, "Threads"): SIP is received, routed and sent on this
            // one thread, so a message never waits for a wake-up of another thread; media pacing,
            // TCP connections and the admin listener get a second thread of their own. The SIP
            // runtime's blocking threads (config reloads, the registration file) run in the
            // background like the store's writer: under a real-time policy (deploy/switchboard.
            // service) they would otherwise run to the end ahead of the SIP thread on its CPU.
            let runtimes = tokio::runtime::Builder::new_current_thread()
                .thread_name("sb-blocking")
                .on_thread_start(store::background_priority)
                .enable_all()
                .build()
                .and_then(|sip| {
                    let aux = tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(1)
                        .thread_name("sb-aux")
                        .enable_all()
                        .build()?;
                    Ok((sip, aux))
                });
            let (rt, aux) = match runtimes {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let result = rt.block_on(switchboard::daemon::run(setup, aux.handle().clone()));
            aux.shutdown_timeout(std::time::Duration::from_secs(1));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("fatal: {e:#}");
                    eprintln!("switchboard: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_logging(c: &config::LogConfig) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&c.level));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in files and journals.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match c.format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.init(),
    }
}

//! `emotion-gateway`: run the gateway, or check a configuration.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use emotion_gateway::app;
use emotion_gateway::config::{Config, LogFormat};

/// jemalloc rather than glibc's malloc: an event is allocated on a network
/// thread and freed on the buffer writer's or the analyzer's, and glibc's
/// arenas pay for that (consolidation and locking were a sixth of the
/// ingest path's CPU). Its unused pages go back to the system after a few
/// seconds (`background_threads`), so memory stays near glibc's.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read at its start (`_RJEM_MALLOC_CONF` in the
/// environment overrides them): two arenas rather than four per CPU, and
/// freed pages returned within about a second by its background thread.
/// Under the load tool's 32 × 32 WebSocket load this held the gateway's
/// RSS to ~100 MB (glibc: ~72 MB) where the defaults kept more.
// The one way to hand jemalloc its settings from Rust: a C string under the
// name it looks up (no other symbol has that name).
#[allow(unsafe_code)]
#[cfg(feature = "jemalloc")]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: &[u8; 70] =
    b"background_thread:true,narenas:2,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// Edge gateway for real-time emotion processing: ingests emotion events and
/// device readings, analyzes every user's state, trajectory and risk locally,
/// and keeps everything in a durable local buffer.
///
/// With no subcommand it runs the gateway. Without --config it runs on the
/// embedded defaults (config/gateway.toml in the source tree). Any key can be
/// overridden with EMOTION_GATEWAY__SECTION__KEY=value.
#[derive(Debug, Parser)]
#[command(name = "emotion-gateway", version, about, long_about)]
struct Cli {
    /// Configuration file merged over the embedded defaults.
    #[arg(
        long,
        short,
        global = true,
        env = "EMOTION_GATEWAY_CONFIG",
        value_name = "PATH"
    )]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Run,
    /// Validate the configuration, print every problem, and exit.
    CheckConfig,
    /// Print the embedded default configuration.
    DefaultConfig,
    /// Tools for plugin authors: keys, signatures, trying a plugin.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Make an ed25519 signing key: DIR/NAME.key (secret) and DIR/NAME.pub.
    Keygen {
        name: String,
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Sign a component: writes FILE.sig beside it.
    Sign {
        file: PathBuf,
        /// The secret key file made by `keygen`.
        #[arg(long)]
        key: PathBuf,
    },
    /// Run a plugin on readings (one JSON object per line; `-` for stdin) and
    /// print one result per line with its time, then a summary on stderr.
    Test {
        file: PathBuf,
        readings: PathBuf,
        /// The plugin's settings, as JSON.
        #[arg(long)]
        settings: Option<String>,
        /// Budget of one call.
        #[arg(long, default_value = "100ms")]
        deadline: String,
        /// Memory limit of the instance [default: the need the component
        /// declares, else 64MiB, as in the gateway]
        #[arg(long)]
        memory: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::DefaultConfig) => {
            print!("{}", emotion_gateway::config::EMBEDDED);
            return ExitCode::SUCCESS;
        }
        Some(Command::Plugin(cmd)) => {
            return match plugin_command(cmd) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("emotion-gateway plugin: {}", describe(&e));
                    ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }
    // Emotion data is personal: whatever this process creates (the buffer,
    // exports, caches) is readable by its own user only.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let config = match Config::load(cli.config.as_deref(), std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("emotion-gateway: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::CheckConfig) = cli.command {
        // Not errors: the gateway being checked may be the one holding them.
        for warning in config.mqtt.problems() {
            eprintln!("warning: {warning}");
        }
        println!("configuration is valid");
        return ExitCode::SUCCESS;
    }
    init_logging(&config);
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let message = describe(&e);
            tracing::error!("{message}");
            eprintln!("emotion-gateway: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each said once: our error messages already
/// quote their cause, so a cause already in the text is not repeated.
fn describe(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let m = cause.to_string();
        if !out.contains(&m) {
            out.push_str(": ");
            out.push_str(&m);
        }
    }
    out
}

fn plugin_command(cmd: PluginCommand) -> anyhow::Result<()> {
    use emotion_plugin_host as host;
    match cmd {
        PluginCommand::Keygen { name, dir } => {
            let kp = host::keygen(&dir, &name)?;
            println!(
                "secret key: {} (keep it secret)",
                kp.secret_key_file.display()
            );
            println!("public key: {}", kp.public_key_file.display());
            println!("fingerprint: {}", kp.fingerprint);
            println!(
                "trust it with: [plugins] trusted_keys = [\"{}\"]",
                kp.public_key
            );
        }
        PluginCommand::Sign { file, key } => {
            let sig = host::sign_file(&file, &key)?;
            println!("signed {}: {}", file.display(), sig.display());
        }
        PluginCommand::Test {
            file,
            readings,
            settings,
            deadline,
            memory,
        } => {
            let opts = host::TestOptions::default();
            let mut opts = match &memory {
                Some(memory) => opts.with_limits(&deadline, memory),
                None => opts.with_deadline(&deadline),
            }
            .map_err(anyhow::Error::msg)?;
            if let Some(s) = settings {
                opts.settings = Some(serde_json::from_str(&s).context("--settings must be JSON")?);
            }
            let input: Box<dyn std::io::BufRead> = if readings.as_os_str() == "-" {
                Box::new(std::io::stdin().lock())
            } else {
                let f = std::fs::File::open(&readings)
                    .with_context(|| format!("opening {}", readings.display()))?;
                Box::new(std::io::BufReader::new(f))
            };
            let summary = host::test_plugin(&file, input, std::io::stdout().lock(), &opts)?;
            eprintln!("{summary}");
        }
    }
    Ok(())
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn run(config: Config) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("gateway")
        .build()
        .context("building the async runtime")?;
    rt.block_on(async {
        let running = app::start(config).await?;
        // Tests and scripts read this line to find the port.
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "emotion-gateway listening on {}://{}",
            running.scheme, running.addr
        )?;
        out.flush()?;
        drop(out);
        wait_for_signal().await?;
        tracing::info!("shutdown requested; finishing in-flight events");
        running.shutdown().await;
        Ok(())
    })
}

async fn wait_for_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    Ok(())
}

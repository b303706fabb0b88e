//! firmware-sim: play the devices and apps of the emotion gateway.
//!
//! ```text
//! firmware-sim all --speed 60                      # every scenario over WebSocket, 60× real time
//! firmware-sim single-user --gateway ws://127.0.0.1:8080 --token T
//! firmware-sim serial --link-dir /tmp/emo          # a strap and a band on ptys (/tmp/emo/strap, /tmp/emo/band)
//! firmware-sim stress --users 3 --duration 60 --serial --speed 10
//! firmware-sim load --connections 32 --depth 32 --duration 20   # size a box (README: Sizing a box)
//! ```
//!
//! Exit code: 0 when every event was acknowledged, 1 when any was refused
//! or failed (or a load connection broke), 2 on a setup error (bad option,
//! no pty, gateway unreachable).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use firmware_sim::devices::{Script, SerialDevice, StepData};
use firmware_sim::journey::Journey;
use firmware_sim::load;
use firmware_sim::mqtt::MqttVersion;
use firmware_sim::scenario::{self, Counter, Counts, Overrides, ScenarioKind, Summary, WsOptions};
use firmware_sim::serial::{self, PtyPort, SerialProgress, SerialRunOptions, SerialStats};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(
    name = "firmware-sim",
    version,
    about = "Simulated wearables and apps for the emotion gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    opts: Opts,
}

#[derive(Subcommand, Debug, Clone)]
enum Command {
    /// 1 user, 3 minutes, calm → stress → recovery.
    SingleUser,
    /// 5 users, 5 minutes, five journeys.
    MultiUser,
    /// A recovery journey, then a crisis journey.
    Scenarios,
    /// 10 users, 10 minutes.
    Stress,
    /// Every scenario, one after the other.
    All,
    /// Only serial devices: a heart-rate strap and an EDA band on ptys.
    Serial,
    /// Saturate the gateway and measure: acknowledged events/s, ack latency
    /// percentiles, the gateway's CPU and memory (--duration: measured
    /// seconds, default 10; --users: distinct users, default one per
    /// connection).
    Load(LoadArgs),
}

#[derive(clap::Args, Debug, Clone)]
struct LoadArgs {
    /// ws (the event stream) or mqtt (ready events on emotions/{user}/events).
    #[arg(long, default_value = "ws")]
    transport: load::Transport,
    /// Connections (WebSocket streams or MQTT clients).
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Closed loop: messages in flight per connection (default 1).
    #[arg(long)]
    depth: Option<usize>,
    /// Open loop: events per second in total, evenly paced; latency counts
    /// from when each event was due.
    #[arg(long, conflicts_with = "depth")]
    rate: Option<f64>,
    /// MQTT QoS: 1 (PUBACK once durable) or 0 (no acknowledgement).
    #[arg(long, default_value_t = 1)]
    qos: u8,
    /// Seconds sent but not measured before the measured interval.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// The gateway's process id, for its CPU and memory (default: the
    /// process listening on the gateway's port, when on this machine).
    #[arg(long)]
    gateway_pid: Option<u32>,
    /// MQTT: the user the device is bound to (may contain {i}, like
    /// --mqtt-username and --mqtt-password: the connection's identity
    /// index, 0-based). Without --mqtt-username: dev-device, user 42.
    #[arg(long)]
    mqtt_user: Option<String>,
    /// Print the report as JSON (stdout) instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct Opts {
    /// The gateway (ws://, http:// or host:port).
    #[arg(
        long,
        global = true,
        env = "FIRMWARE_SIM_GATEWAY",
        default_value = "ws://127.0.0.1:8080"
    )]
    gateway: String,
    /// API token with the ingest scope.
    #[arg(
        long,
        global = true,
        env = "FIRMWARE_SIM_TOKEN",
        default_value = "dev-token-change-me",
        hide_env_values = true
    )]
    token: String,
    /// Simulated seconds per real second (compresses time for tests and demos).
    #[arg(long, global = true, default_value_t = 1.0)]
    speed: f64,
    /// Users per scenario (overrides the scenario's).
    #[arg(long, global = true)]
    users: Option<usize>,
    /// Simulated length of each scenario (or of the serial run), seconds.
    #[arg(long, global = true)]
    duration: Option<f64>,
    /// Simulated seconds between one user's events.
    #[arg(long, global = true, default_value_t = 3.0)]
    event_interval: f64,
    /// Seed of every generator (same seed, same signals).
    #[arg(long, global = true, default_value_t = 1)]
    seed: u64,
    /// Seconds to wait for a connection or a reply.
    #[arg(long, global = true, default_value_t = 30.0)]
    timeout: f64,
    /// With a scenario: also run the serial strap and band meanwhile.
    #[arg(long, global = true)]
    serial: bool,
    /// Keep symlinks DIR/strap and DIR/band to the ptys (stable paths for
    /// the gateway's [[serial]] config, surviving unplug/replug).
    #[arg(long, global = true)]
    link_dir: Option<PathBuf>,
    /// Journey of the serial devices.
    #[arg(long, global = true, default_value = "calm-stress-recovery")]
    journey: Journey,
    /// Device id of the serial strap.
    #[arg(long, global = true, default_value_t = 1)]
    strap_id: u64,
    /// Device id of the serial band.
    #[arg(long, global = true, default_value_t = 2)]
    band_id: u64,
    /// Inject a junk block after every N serial frames.
    #[arg(long, global = true)]
    corrupt_every: Option<u64>,
    /// Unplug the serial devices every SECS simulated seconds…
    #[arg(long, global = true)]
    unplug_every: Option<f64>,
    /// …for SECS real seconds.
    #[arg(long, global = true, default_value_t = 2.0)]
    unplug_for: f64,
    /// The serial devices reboot while unplugged: numbering starts over at
    /// 0 with a new boot id, the boot hello lost with the other frames made
    /// while the cable is out.
    #[arg(long, global = true)]
    reboot_on_unplug: bool,
    /// Write every N-th serial frame twice, as a firmware retransmit (same
    /// boot id, same number): the gateway must store it once.
    #[arg(long, global = true)]
    retransmit_every: Option<u64>,
    /// Serial devices play firmware from before boot ids (frame format 1).
    #[arg(long, global = true)]
    no_boot_ids: bool,
    /// Write every serial frame sent (JSON lines) to FILE.
    #[arg(long, global = true)]
    frame_log: Option<PathBuf>,
    /// Write the closing summary as JSON to FILE.
    #[arg(long, global = true)]
    summary_json: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, global = true)]
    quiet: bool,
    /// With a scenario: also run one MQTT device per user (facial, voice or
    /// chat in turn), publishing raw readings to sensors/{device_id}/{source}
    /// on this broker (mqtt://HOST:PORT), QoS 1.
    #[arg(long, global = true)]
    mqtt: Option<String>,
    /// MQTT protocol version: 5 (refusals come as PUBACK reason codes) or
    /// 3.1.1 (refusals come on the device's errors topic). The gateway's
    /// embedded broker has a port for each (mqtt.listen_v5, mqtt.listen_v4).
    #[arg(
        long,
        global = true,
        env = "FIRMWARE_SIM_MQTT_VERSION",
        default_value = "5"
    )]
    mqtt_version: MqttVersion,
    /// MQTT username (the device identity the gateway checks).
    #[arg(long, global = true, env = "FIRMWARE_SIM_MQTT_USERNAME")]
    mqtt_username: Option<String>,
    #[arg(
        long,
        global = true,
        env = "FIRMWARE_SIM_MQTT_PASSWORD",
        hide_env_values = true
    )]
    mqtt_password: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Load(args) = &cli.command {
        return match run_load(&cli.opts, args).await {
            Ok(report) if report.problems() > 0 => ExitCode::from(1),
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("firmware-sim load: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    match run(cli).await {
        Ok(summary) => {
            if summary.not_acknowledged() > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("firmware-sim: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<Summary> {
    let o = &cli.opts;
    anyhow::ensure!(
        o.speed.is_finite() && o.speed > 0.0,
        "--speed must be a positive number"
    );
    anyhow::ensure!(
        o.event_interval.is_finite() && o.event_interval > 0.0,
        "--event-interval must be a positive number"
    );
    anyhow::ensure!(o.timeout.is_finite(), "--timeout must be a number");
    let duration = o
        .duration
        .map(|d| {
            anyhow::ensure!(
                d.is_finite() && d > 0.0 && d < 1e9,
                "--duration must be a positive number of seconds"
            );
            Ok(firmware_sim::secs(d))
        })
        .transpose()?;
    let cancel = CancellationToken::new();
    tokio::spawn({
        let cancel = cancel.clone();
        async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("interrupted: finishing up");
                cancel.cancel();
            }
        }
    });

    let kind = match cli.command {
        Command::SingleUser => Some(ScenarioKind::SingleUser),
        Command::MultiUser => Some(ScenarioKind::MultiUser),
        Command::Scenarios => Some(ScenarioKind::Scenarios),
        Command::Stress => Some(ScenarioKind::Stress),
        Command::All => Some(ScenarioKind::All),
        Command::Serial => None,
        Command::Load(_) => anyhow::bail!("load runs on its own"),
    };
    let plans = kind
        .map(|k| {
            scenario::plans(
                k,
                Overrides {
                    users: o.users,
                    duration,
                },
            )
        })
        .unwrap_or_default();
    let ws_opts = WsOptions {
        gateway: o.gateway.clone(),
        token: o.token.clone(),
        speed: o.speed,
        event_interval_s: o.event_interval,
        timeout: firmware_sim::secs(o.timeout.max(0.1)),
        seed: o.seed,
    };
    let total = ws_opts.total_events(&plans);

    // Serial devices: with `serial`, or a scenario with --serial.
    let serial_cancel = cancel.child_token();
    let serial_task = if kind.is_none() || o.serial {
        let serial_duration = match (kind, duration) {
            (None, Some(d)) => d.as_secs_f64(),
            (None, None) => 180.0,
            // Alongside a scenario: until the scenario is done.
            (Some(_), _) => f64::from(u32::MAX),
        };
        Some(start_serial(o, serial_duration, &serial_cancel)?)
    } else {
        None
    };

    let started = std::time::Instant::now();
    let counter = Arc::new(Counter::default());
    let bar = if o.quiet || total == 0 {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} events ({per_sec}) {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    };
    let ticker = tokio::spawn({
        let (bar, counter) = (bar.clone(), counter.clone());
        async move {
            loop {
                let c = counter.snapshot();
                bar.set_position(c.done());
                bar.set_message(format!("refused {}, failed {}", c.refused, c.failed));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let mqtt_counter = Arc::new(Counter::default());
    let mqtt_task = match (&o.mqtt, plans.is_empty()) {
        (Some(broker), false) => {
            let target = scenario::MqttTarget {
                broker: broker.clone(),
                username: o.mqtt_username.clone(),
                password: o.mqtt_password.clone(),
                version: o.mqtt_version,
            };
            let (plans, ws_opts, counter, cancel) = (
                plans.clone(),
                ws_opts.clone(),
                mqtt_counter.clone(),
                cancel.clone(),
            );
            Some(tokio::spawn(async move {
                scenario::run_mqtt(&plans, &ws_opts, &target, counter, &cancel).await;
            }))
        }
        (Some(_), true) => anyhow::bail!("--mqtt needs a scenario (single-user, …, all)"),
        (None, _) => None,
    };
    if !plans.is_empty() {
        eprintln!(
            "firmware-sim: {} scenario part(s), {} events to {} at {}×",
            plans.len(),
            total,
            o.gateway,
            o.speed
        );
        scenario::run_ws(&plans, &ws_opts, counter.clone(), &cancel).await;
        if let Some(t) = mqtt_task {
            t.await.context("MQTT task")?;
        }
        serial_cancel.cancel();
    }
    let serial_stats = match serial_task {
        Some(task) => Some(task.await.context("serial task")??),
        None => None,
    };
    ticker.abort();
    let c = counter.snapshot();
    bar.set_position(c.done());
    bar.finish_and_clear();

    let mut summary = Summary {
        elapsed_s: started.elapsed().as_secs_f64(),
        ..Summary::default()
    };
    if !plans.is_empty() {
        summary.transports.insert("websocket".into(), c);
    }
    if o.mqtt.is_some() {
        summary
            .transports
            .insert("mqtt".into(), mqtt_counter.snapshot());
    }
    if let Some(s) = serial_stats {
        // Serial has no acknowledgement: a frame written is a frame sent.
        summary.transports.insert(
            "serial".into(),
            Counts {
                sent: s.frames_sent + s.frames_dropped,
                ..Counts::default()
            },
        );
        println!(
            "serial: {} frames written, {} dropped (nobody reading), {} retransmitted, {} junk blocks injected, {} unplugs, {} reboots",
            s.frames_sent,
            s.frames_dropped,
            s.retransmitted,
            s.corrupt_injected,
            s.unplugs,
            s.reboots
        );
    }
    println!("{summary}");
    if let Some(path) = &o.summary_json {
        let mut v = serde_json::to_value(&summary)?;
        if let (Some(s), Some(obj)) = (serial_stats, v.as_object_mut()) {
            obj.insert("serial".into(), serde_json::to_value(s)?);
        }
        std::fs::write(path, serde_json::to_string_pretty(&v)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(summary)
}

/// `firmware-sim load`: run, print the report (text or JSON), write it to
/// --summary-json too.
async fn run_load(o: &Opts, a: &LoadArgs) -> anyhow::Result<load::LoadReport> {
    let num = |name: &str, v: f64| -> anyhow::Result<Duration> {
        anyhow::ensure!(
            v.is_finite() && (0.0..1e9).contains(&v),
            "{name} must be a number of seconds, got {v}"
        );
        Ok(firmware_sim::secs(v))
    };
    let connections = a.connections;
    let options = load::LoadOptions {
        transport: a.transport,
        gateway: o.gateway.clone(),
        token: o.token.clone(),
        connections,
        depth: a.depth.unwrap_or(1),
        rate: a.rate,
        duration: num("--duration", o.duration.unwrap_or(10.0))?,
        warmup: num("--warmup", a.warmup)?,
        users: o.users.unwrap_or(connections),
        timeout: num("--timeout", o.timeout.max(0.1))?,
        seed: o.seed,
        gateway_pid: a.gateway_pid,
        mqtt: load::MqttLoad {
            broker: o.mqtt.clone(),
            version: o.mqtt_version,
            qos: a.qos,
            username: o.mqtt_username.clone(),
            password: o.mqtt_password.clone(),
            user: a.mqtt_user.clone(),
        },
    };
    let cancel = CancellationToken::new();
    tokio::spawn({
        let cancel = cancel.clone();
        async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("interrupted: stopping, collecting the answers in flight");
                cancel.cancel();
            }
        }
    });
    let bar = if o.quiet {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::with_draw_target(Some(1), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(Duration::from_millis(250));
        bar
    };
    let report = load::run(&options, &bar, &cancel).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report}");
    }
    if let Some(path) = &o.summary_json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}

type SerialTask = tokio::task::JoinHandle<anyhow::Result<SerialStats>>;

fn start_serial(
    o: &Opts,
    duration_s: f64,
    cancel: &CancellationToken,
) -> anyhow::Result<SerialTask> {
    if let Some(dir) = &o.link_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let link = |name: &str| o.link_dir.as_ref().map(|d| d.join(name));
    let script = Script::new(o.journey, firmware_sim::secs(duration_s.min(1e9)));
    let firmware = |d: SerialDevice| {
        if o.no_boot_ids {
            d.without_boot_ids()
        } else {
            d
        }
    };
    let devices = [
        (
            "strap",
            firmware(SerialDevice::strap(o.strap_id, script, o.seed)),
        ),
        (
            "band",
            firmware(SerialDevice::band(
                o.band_id,
                script,
                o.seed.wrapping_add(1),
            )),
        ),
    ];
    let log = match &o.frame_log {
        Some(p) => Some(Arc::new(open_frame_log(p)?)),
        None => None,
    };
    let opts = SerialRunOptions {
        speed: o.speed,
        step_s: 1.0,
        duration_s,
        corrupt_every: o.corrupt_every,
        unplug: o
            .unplug_every
            .map(|every| (every, firmware_sim::secs(o.unplug_for))),
        reboot_on_unplug: o.reboot_on_unplug,
        retransmit_every: o.retransmit_every,
        write_wait: Duration::from_millis(200),
        seed: o.seed,
    };
    let mut tasks = Vec::new();
    for (name, mut device) in devices {
        let port = PtyPort::open(link(name).as_deref())
            .with_context(|| format!("creating the {name}'s pty"))?;
        println!(
            "serial {name} (device id {}): {}{}",
            device.device_id,
            port.port_path().display(),
            if port.link().is_some() {
                format!(" -> {}", port.slave_path().display())
            } else {
                String::new()
            }
        );
        let (opts, cancel, log) = (opts.clone(), cancel.clone(), log.clone());
        let name = name.to_owned();
        tasks.push(tokio::spawn(async move {
            // The port stays open (plugged in) until the process ends.
            serial::run_device(&mut device, port, &opts, &cancel, |p| match p {
                SerialProgress::Frame { frame, written } => {
                    if let Some(log) = &log {
                        log.write(&name, frame, written, false);
                    }
                }
                SerialProgress::Retransmitted(frame) => {
                    if let Some(log) = &log {
                        log.write(&name, frame, true, true);
                    }
                }
                SerialProgress::Rebooted { boot_id } => match boot_id {
                    Some(id) => {
                        println!("serial {name}: rebooted while unplugged, boot id {id:#010x}")
                    }
                    None => println!("serial {name}: rebooted while unplugged"),
                },
                SerialProgress::Reopened(path) => {
                    println!("serial {name}: replugged at {}", path.display());
                }
                SerialProgress::Step(StepData::Heart(_) | StepData::Eda(_)) => {}
            })
            .await
        }));
    }
    let _ = std::io::stdout().flush();
    Ok(tokio::spawn(async move {
        let mut total = SerialStats::default();
        let mut ports = Vec::new();
        for t in tasks {
            let (s, port) = t.await.context("serial device task")??;
            ports.push(port);
            total.frames_sent += s.frames_sent;
            total.frames_dropped += s.frames_dropped;
            total.corrupt_injected += s.corrupt_injected;
            total.unplugs += s.unplugs;
            total.reboots += s.reboots;
            total.retransmitted += s.retransmitted;
        }
        // Give the reader a moment to drain before the ptys close.
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(ports);
        Ok(total)
    }))
}

/// A JSON-lines log of the frames sent, shared by the device tasks.
struct FrameLog(std::sync::Mutex<std::io::BufWriter<std::fs::File>>);

fn open_frame_log(path: &std::path::Path) -> anyhow::Result<FrameLog> {
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    Ok(FrameLog(std::sync::Mutex::new(std::io::BufWriter::new(f))))
}

impl FrameLog {
    /// Log `frame`; `retransmit`: a second copy of a frame logged already.
    fn write(&self, device: &str, frame: &emotion_wire::Frame, written: bool, retransmit: bool) {
        use emotion_wire::Payload;
        let payload = match &frame.payload {
            Payload::Hello(h) => {
                json!({"hello": {"model": h.model, "firmware": h.firmware.to_string(), "capabilities": h.capabilities.0}})
            }
            Payload::HeartRateMeasurement(bytes) => {
                match emotion_wire::HeartRateMeasurement::decode(bytes) {
                    Ok(m) => json!({"heart_rate_bpm": m.heart_rate_bpm,
                                    "rr_intervals_ms": m.rr_intervals_ms().collect::<Vec<_>>()}),
                    Err(e) => json!({"undecodable": e.to_string()}),
                }
            }
            Payload::SkinConductance {
                sample_rate_hz,
                samples_us,
            } => json!({"eda_sample_rate_hz": sample_rate_hz, "skin_conductance": samples_us}),
            Payload::SkinTemperature { celsius } => json!({"skin_temperature": celsius}),
            Payload::Battery { percent } => json!({"battery_percent": percent}),
        };
        let line = json!({"device": device, "device_id": frame.device_id, "boot_id": frame.boot_id,
                          "seq": frame.seq, "written": written, "retransmit": retransmit,
                          "payload": payload});
        if let Ok(mut w) = self.0.lock() {
            let _ = writeln!(w, "{line}");
            let _ = w.flush();
        }
    }
}

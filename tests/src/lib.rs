//! Helpers for end-to-end tests: start the real `emotion-gateway` binary on a
//! free port with its own data directory, talk to it over WebSocket and HTTP,
//! and kill it (gracefully or with SIGKILL).
//!
//! The binary is found next to the test executable's target directory; the
//! test command (`scripts/test.sh`) builds it first.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub mod fleet;

/// The token the test gateways accept for every scope.
pub const TOKEN: &str = "test-token-0123456789";
/// A token with only the `read` scope.
pub const READ_TOKEN: &str = "read-only-token-0123456789";

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Path of a binary built from this workspace (same profile as the tests).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("."));
    // target/<profile>/deps/<test-exe> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."));
    dir.join(name)
}

/// A component built by `scripts/build-plugins.sh`: real plugins live in
/// `target/plugins`, the deliberately broken and benchmark ones in
/// `target/test-plugins`. Fails loudly when missing (the test command builds
/// them first).
pub fn built_plugin(name: &str) -> Result<PathBuf> {
    let bin = workspace_bin("emotion-gateway");
    let target = bin
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("no target directory above {}", bin.display()))?;
    for dir in ["plugins", "test-plugins"] {
        let f = target.join(dir).join(format!("{name}.wasm"));
        if f.is_file() {
            return Ok(f);
        }
    }
    bail!(
        "plugin `{name}` is not built under {}/{{plugins,test-plugins}}: run scripts/build-plugins.sh (scripts/test.sh does)",
        target.display()
    )
}

/// A directory holding copies of the named built components.
pub fn plugin_dir(names: &[&str]) -> Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix("emotion-plugins-")
        .tempdir()?;
    for n in names {
        std::fs::copy(built_plugin(n)?, dir.path().join(format!("{n}.wasm")))?;
    }
    Ok(dir)
}

/// Options that point a gateway at `plugins` (compiled code cached in a
/// directory shared by the tests, since compiling in debug builds is slow).
pub fn with_plugins(plugins: &Path, watch: &str) -> GatewayOptions {
    let cache = workspace_bin("emotion-gateway")
        .parent()
        .map(|d| d.join("gateway-test-plugin-cache"))
        .unwrap_or_else(|| PathBuf::from("gateway-test-plugin-cache"));
    GatewayOptions {
        env: vec![
            (
                "EMOTION_GATEWAY__PLUGINS__DIR".into(),
                plugins.display().to_string(),
            ),
            (
                "EMOTION_GATEWAY__PLUGINS__CACHE_DIR".into(),
                cache.display().to_string(),
            ),
            (
                "EMOTION_GATEWAY__PLUGINS__WATCH_INTERVAL".into(),
                watch.into(),
            ),
        ],
        config: None,
    }
}

/// A running gateway process.
#[derive(Debug)]
pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    /// Collected stderr (logs) of the process, for failure messages.
    logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// How to start a gateway.
#[derive(Debug, Clone, Default)]
pub struct GatewayOptions {
    /// Extra `EMOTION_GATEWAY__…` overrides.
    pub env: Vec<(String, String)>,
    /// An optional config file.
    pub config: Option<PathBuf>,
}

impl Gateway {
    /// Start on a free port with `data_dir` as its buffer, and wait until it
    /// prints its address.
    pub fn start(data_dir: &Path, opts: &GatewayOptions) -> Result<Gateway> {
        // A benchmark may compare against another build of the gateway.
        let bin = std::env::var_os("EMOTION_GATEWAY_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_bin("emotion-gateway"));
        if !bin.exists() {
            bail!(
                "{} is missing: build it first (`cargo build -p emotion-gateway`, which scripts/test.sh does)",
                bin.display()
            );
        }
        let tokens = format!(
            r#"[{{name = "test", token = "{TOKEN}", scopes = ["ingest", "read", "admin"]}}, {{name = "reader", token = "{READ_TOKEN}", scopes = ["read"]}}]"#
        );
        let mut cmd = Command::new(&bin);
        if let Some(c) = &opts.config {
            cmd.arg("--config").arg(c);
        }
        cmd.env("EMOTION_GATEWAY__HTTP__LISTEN", "127.0.0.1:0")
            .env("EMOTION_GATEWAY__STORAGE__PATH", data_dir)
            .env("EMOTION_GATEWAY__AUTH__TOKENS", tokens)
            .env("EMOTION_GATEWAY__HTTP__METRICS_INTERVAL", "200ms")
            // Free ports for the embedded MQTT broker (GET /api/mqtt names them).
            .env("EMOTION_GATEWAY__MQTT__LISTEN_V4", "127.0.0.1:0")
            .env("EMOTION_GATEWAY__MQTT__LISTEN_V5", "127.0.0.1:0")
            // No plugins unless a test asks for them (`with_plugins`).
            .env("EMOTION_GATEWAY__PLUGINS__DIR", data_dir.join("no-plugins"))
            .env("EMOTION_GATEWAY__LOG__LEVEL", "info")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log_thread = child.stderr.take().map(|stderr| {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Ok(mut l) = logs.lock() {
                        l.push(line);
                    }
                }
            })
        });
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let addr = line
                    .strip_prefix("emotion-gateway listening on http://")
                    .or_else(|| line.strip_prefix("emotion-gateway listening on https://"));
                if let Some(addr) = addr {
                    let _ = tx.send(addr.trim().to_owned());
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a.parse().context("parsing the printed address")?,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                // The process is gone, so its stderr ends: the log thread
                // finishes once it has collected every line.
                if let Some(t) = log_thread {
                    let _ = t.join();
                }
                let logs = logs.lock().map(|l| l.join("\n")).unwrap_or_default();
                bail!("gateway did not print its address; its log:\n{logs}");
            }
        };
        Ok(Gateway {
            child,
            addr,
            data_dir: data_dir.to_owned(),
            logs,
        })
    }

    /// The process id (benchmarks read its memory from /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// What the process logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(mut self) -> Result<()> {
        self.child.kill().context("SIGKILL")?;
        self.child.wait().context("reaping")?;
        Ok(())
    }

    /// SIGTERM, then wait for a clean exit; returns the exit status code.
    pub fn terminate(mut self) -> Result<Option<i32>> {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()?
            .success();
        if !ok {
            bail!("kill -TERM {pid} failed");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.code());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("gateway did not exit within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// GET a JSON document with the full-scope token.
    pub async fn get_json(&self, path: &str) -> Result<Value> {
        let resp = reqwest::Client::new()
            .get(self.http(path))
            .header("x-auth-token", TOKEN)
            .send()
            .await?;
        let status = resp.status();
        let body: Value = resp.json().await?;
        if !status.is_success() {
            bail!("GET {path}: {status}: {body}");
        }
        Ok(body)
    }

    /// Record `user`'s consent (PUT /api/users/{user}/consent).
    pub async fn consent(&self, user: &str, analytics: bool, credit: bool) -> Result<()> {
        let r = reqwest::Client::new()
            .put(self.http(&format!("/api/users/{user}/consent")))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"analytics": analytics, "credit": credit}))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("consent for {user}: {}", r.status());
        }
        Ok(())
    }

    /// Every stored event of a user (as the API returns them).
    pub async fn user_events(&self, user: &str) -> Result<Vec<Value>> {
        let v = self
            .get_json(&format!("/api/users/{user}/events?limit=100000"))
            .await?;
        Ok(v["events"].as_array().cloned().unwrap_or_default())
    }

    /// Open `/ws/readings`.
    pub async fn readings(&self) -> Result<Ws> {
        let url = self.ws_url(&format!("/ws/readings?token={TOKEN}"));
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(ws)
    }

    /// Open `/ws/emotions/stream` for `user` and read the welcome message.
    pub async fn stream(&self, user: &str) -> Result<(Ws, Value)> {
        let url = self.ws_url(&format!("/ws/emotions/stream?user_id={user}&token={TOKEN}"));
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
        let welcome = next_json(&mut ws).await?;
        Ok((ws, welcome))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Send one JSON message.
pub async fn send_json(ws: &mut Ws, v: &Value) -> Result<()> {
    ws.send(Message::Text(v.to_string().into())).await?;
    Ok(())
}

/// The next text message as JSON (pings skipped), with a timeout.
pub async fn next_json(ws: &mut Ws) -> Result<Value> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .context("timed out waiting for a message")?
            .ok_or_else(|| anyhow!("connection closed"))??;
        match msg {
            Message::Text(t) => return Ok(serde_json::from_str(&t)?),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => bail!("unexpected message {other:?}"),
        }
    }
}

/// The close code the server ends the connection with.
pub async fn close_code(ws: &mut Ws) -> Result<u16> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await? {
            Some(Ok(Message::Close(Some(frame)))) => return Ok(frame.code.into()),
            Some(Ok(Message::Close(None))) => bail!("closed without a code"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => bail!("error before close: {e}"),
            None => bail!("stream ended without a close frame"),
        }
    }
}

/// A fresh temporary directory for one gateway's data.
pub fn data_dir() -> Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new()
        .prefix("emotion-gw-test-")
        .tempdir()?)
}

/// Send `total` events for `users` users over `connections` pipelined
/// WebSocket streams as fast as the gateway acknowledges them. Returns the
/// number acknowledged (`processed`). For load generation in benchmarks.
pub async fn blast(gw: &Gateway, users: usize, connections: usize, total: usize) -> Result<usize> {
    let per = total.div_ceil(connections.max(1));
    let mut tasks = Vec::new();
    for c in 0..connections {
        let url = gw.ws_url(&format!(
            "/ws/emotions/stream?user_id={}&token={TOKEN}",
            c % users.max(1) + 1
        ));
        let n = per.min(total.saturating_sub(c * per));
        tasks.push(tokio::spawn(async move {
            let (ws, _) = tokio_tungstenite::connect_async_with_config(&url, None, true).await?;
            let (mut tx, mut rx) = ws.split();
            let _welcome = rx.next().await;
            let writer = tokio::spawn(async move {
                for i in 0..n {
                    let v = ((i % 200) as f64 / 100.0) - 1.0;
                    let body = serde_json::json!({"source": "survey", "valence": v, "arousal": 0.5, "context": {"i": i}});
                    if tx.feed(Message::Text(body.to_string().into())).await.is_err() {
                        break;
                    }
                    if i % 256 == 255 && tx.flush().await.is_err() {
                        break;
                    }
                }
                let _ = tx.flush().await;
                tx
            });
            let mut acked = 0;
            let mut answered = 0;
            while answered < n {
                match rx.next().await {
                    Some(Ok(Message::Text(t))) => {
                        answered += 1;
                        if t.contains("\"processed\"") {
                            acked += 1;
                        }
                    }
                    Some(Ok(_)) => {}
                    _ => break,
                }
            }
            let _ = writer.await;
            Ok::<usize, anyhow::Error>(acked)
        }));
    }
    let mut acked = 0;
    for t in tasks {
        acked += t.await??;
    }
    Ok(acked)
}

/// A Mosquitto tool (`mosquitto`, `mosquitto_pub`, …) from `PATH` or the
/// Debian locations, or a loud failure naming the install script.
pub fn mqtt_tool(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/usr/bin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` is not installed: run scripts/install-mqtt-test-deps.sh")
        })
}

/// A private Mosquitto broker on a free loopback port, with its own
/// persistence directory; killed when dropped. Used where a test needs a
/// broker configured differently from the machine's (unbounded queues).
#[derive(Debug)]
pub struct PrivateMosquitto {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl PrivateMosquitto {
    /// Start one; `settings` are extra lines of `mosquitto.conf`.
    pub fn start(settings: &str) -> Result<PrivateMosquitto> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
                 persistence_location {}/\n{settings}\n",
                dir.path().display()
            ),
        )?;
        let child = Command::new(mqtt_tool("mosquitto"))
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting mosquitto")?;
        let mut broker = PrivateMosquitto {
            port,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline || broker.child.try_wait()?.is_some() {
                bail!("mosquitto did not start on port {port}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(broker)
    }
}

impl Drop for PrivateMosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run `firmware-sim` with `args` to completion and return its closing
/// summary (`--summary-json`); an error carries its output if it fails.
pub fn firmware_sim_summary<I, S>(args: I) -> Result<Value>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let work = tempfile::tempdir()?;
    let summary = work.path().join("summary.json");
    let out = Command::new(workspace_bin("firmware-sim"))
        .args(args)
        .arg("--summary-json")
        .arg(&summary)
        .output()
        .context("running firmware-sim")?;
    if !out.status.success() {
        bail!(
            "firmware-sim failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = std::fs::read_to_string(&summary).context("reading the summary")?;
    serde_json::from_str(&text).context("parsing the summary")
}

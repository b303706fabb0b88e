//! Test helpers (feature `testing`): a throw-away database per test on the
//! development server, and a private PostgreSQL instance that a test can stop
//! and start (outages).
//!
//! They panic with instructions instead of returning errors: a test that
//! cannot reach PostgreSQL must fail loudly, never skip.

use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio_postgres::NoTls;

/// Connection string of the server tests create their databases on.
pub const ENV_ADMIN_URL: &str = "EMOTION_SYNC_TEST_DATABASE_URL";
/// Used when [`ENV_ADMIN_URL`] is not set: the development server.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// How to start the development server on these machines.
pub const START_HINT: &str =
    "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start";

/// The admin connection string: [`ENV_ADMIN_URL`] or the default.
pub fn admin_url() -> String {
    std::env::var(ENV_ADMIN_URL).unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

/// `base` with its database name replaced by `dbname` (URL or key=value form).
pub fn with_dbname(base: &str, dbname: &str) -> String {
    for scheme in ["postgres://", "postgresql://"] {
        if let Some(rest) = base.strip_prefix(scheme) {
            let (rest, query) = match rest.split_once('?') {
                Some((r, q)) => (r, format!("?{q}")),
                None => (rest, String::new()),
            };
            let authority = rest.split_once('/').map_or(rest, |(a, _)| a);
            return format!("{scheme}{authority}/{dbname}{query}");
        }
    }
    format!("{base} dbname={dbname}")
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A database with a unique name, created for one test and dropped (with its
/// connections) when this value is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
    admin_url: String,
}

impl TestDatabase {
    /// On the development server (or [`ENV_ADMIN_URL`]).
    pub async fn create() -> Self {
        Self::create_on(&admin_url()).await
    }

    /// On the server of `admin_url` (a database there to connect to first).
    pub async fn create_on(admin_url: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "emotion_sync_test_{}_{}_{}",
            std::process::id(),
            nanos,
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let (client, conn) = match tokio_postgres::connect(admin_url, NoTls).await {
            Ok(c) => c,
            Err(e) => panic!(
                "\n\nPostgreSQL is not reachable at {admin_url}: {}\n\
                 The sync tests need a real server (they never skip). Start it with:\n\
                 \n    {START_HINT}\n\n\
                 or point {ENV_ADMIN_URL} at another server.\n\n",
                crate::error::describe(&e)
            ),
        };
        let task = tokio::spawn(conn);
        if let Err(e) = client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
        {
            panic!(
                "cannot create test database {name} on {admin_url}: {}",
                crate::error::describe(&e)
            );
        }
        drop(client);
        let _ = task.await;
        TestDatabase {
            url: with_dbname(admin_url, &name),
            name,
            admin_url: admin_url.to_owned(),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot be blocked on: use
        // a thread with a runtime of its own.
        let (name, admin) = (self.name.clone(), self.admin_url.clone());
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let (client, conn) = tokio_postgres::connect(&admin, NoTls)
                    .await
                    .map_err(|e| crate::error::describe(&e))?;
                let task = tokio::spawn(conn);
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await
                    .map_err(|e| crate::error::describe(&e))?;
                drop(client);
                let _ = task.await;
                Ok::<(), String>(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: could not drop test database {}: {e}", self.name),
            Err(_) => eprintln!("warning: dropping test database {} panicked", self.name),
        }
    }
}

/// A private PostgreSQL instance in a temporary directory, on a free port,
/// that a test can stop (an outage) and start again. Built from the server
/// binaries (`initdb`, `pg_ctl`, `postgres`) on `PATH` or in
/// `/usr/lib/postgresql/*/bin`. As root, the server runs as the `postgres`
/// OS user (PostgreSQL refuses to run as root).
#[derive(Debug)]
pub struct TempCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

fn find_bin_dir() -> io::Result<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            if d.join("initdb").is_file() && d.join("pg_ctl").is_file() {
                return Ok(d);
            }
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("initdb").is_file())
        .collect();
    // Highest version last (directory names are major versions).
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "no initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin",
        )
    })
}

fn output_text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn id_of(args: &[&str]) -> io::Result<u32> {
    let o = Command::new("id").args(args).output()?;
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .map_err(|_| {
            io::Error::other(format!(
                "`id {}` failed: {}",
                args.join(" "),
                output_text(&o)
            ))
        })
}

impl TempCluster {
    /// `initdb` a new cluster (trust authentication, user `postgres`); not started.
    pub fn init() -> io::Result<Self> {
        let bin = find_bin_dir()?;
        let as_postgres = id_of(&["-u"])? == 0;
        let dir = tempfile::Builder::new()
            .prefix("emotion-sync-pg-")
            .tempdir()?;
        if as_postgres {
            let (uid, gid) = (id_of(&["-u", "postgres"])?, id_of(&["-g", "postgres"])?);
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
        }
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let c = TempCluster {
            dir,
            bin,
            port,
            as_postgres,
        };
        let data = c.data_dir();
        c.run(
            "initdb",
            &[
                "-D",
                &data.to_string_lossy(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )?;
        Ok(c)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Where the server log goes.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn run(&self, tool: &str, args: &[&str]) -> io::Result<()> {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.args(args).current_dir(self.dir.path());
        let o = cmd.output()?;
        if o.status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "{tool} {} failed: {}\n(server log: {})",
                args.join(" "),
                output_text(&o),
                std::fs::read_to_string(self.log_path()).unwrap_or_default()
            )))
        }
    }

    /// Start the server and wait until it accepts connections.
    pub fn start(&self) -> io::Result<()> {
        self.start_with(&[])
    }

    /// Start with extra server settings (`("shared_buffers", "1GB")`, …).
    pub fn start_with(&self, settings: &[(&str, &str)]) -> io::Result<()> {
        let mut opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {}",
            self.port,
            self.dir.path().display()
        );
        for (k, v) in settings {
            opts.push_str(&format!(" -c {k}={v}"));
        }
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data_dir().to_string_lossy(),
                "-l",
                &self.log_path().to_string_lossy(),
                "-o",
                &opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
    }

    /// Stop the server: `fast` disconnects clients and shuts down cleanly;
    /// otherwise `immediate` (like a crash: no checkpoint, recovery on start).
    pub fn stop(&self, fast: bool) -> io::Result<()> {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data_dir().to_string_lossy(),
                "-m",
                if fast { "fast" } else { "immediate" },
                "-w",
                "stop",
            ],
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connection string for `dbname` on this instance.
    pub fn url(&self, dbname: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{dbname}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        // Best effort: it may be stopped already.
        let _ = self.stop(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_swapped_in_both_forms() {
        assert_eq!(
            with_dbname("postgres://u@h:5432/postgres", "t1"),
            "postgres://u@h:5432/t1"
        );
        assert_eq!(
            with_dbname("postgresql://u@h/postgres?sslmode=disable", "t1"),
            "postgresql://u@h/t1?sslmode=disable"
        );
        assert_eq!(with_dbname("postgres://u@h", "t1"), "postgres://u@h/t1");
        assert_eq!(
            with_dbname("host=h user=u", "t1"),
            "host=h user=u dbname=t1"
        );
    }
}

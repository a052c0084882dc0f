//! Servers of a test's (or the chaos suite's) own: a `redis-server` and a
//! `mariadbd` on free ports, in temporary directories, that the caller may
//! pause (`SIGSTOP`), resume, kill and restart without touching the
//! machine's own services. Each is killed (only it, by PID) and its
//! directory removed when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};

/// A free TCP port on 127.0.0.1 (free when asked; bind it soon).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

fn temp_dir(kind: &str) -> PathBuf {
    std::env::temp_dir().join(format!("concert-{kind}-{}", uuid::Uuid::new_v4().simple()))
}

/// Sends `signal` (`STOP`, `CONT`, `KILL`, ...) to process `pid`.
pub fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -{signal} {pid} failed");
    }
    Ok(())
}

/// Polls `ready` every 50 ms until it answers true or `patience` passes.
async fn wait_until<F, Fut>(patience: Duration, mut ready: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + patience;
    loop {
        if ready().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(Duration::from_millis(50)).await;
    }
}

/// A server process of one's own: its port and temporary directory. Only
/// it is signalled (by PID); dropped, it is resumed (a stopped process
/// would not die), killed and its directory removed.
struct Process {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Process {
    /// A free port and a fresh directory for a server of `kind`.
    fn place(kind: &str) -> anyhow::Result<(u16, PathBuf)> {
        let dir = temp_dir(kind);
        std::fs::create_dir_all(&dir).context("a temporary directory")?;
        Ok((free_port(), dir))
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn pause(&self) {
        let _ = signal(self.pid(), "STOP");
    }

    fn resume(&self) {
        let _ = signal(self.pid(), "CONT");
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.resume();
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `redis-server` of one's own, without persistence (a restart comes back
/// empty, like a Redis that lost its data).
pub struct OwnRedis {
    process: Process,
}

impl OwnRedis {
    /// Starts one on a free port and waits until it answers `PING`.
    pub async fn start() -> anyhow::Result<Self> {
        let (port, dir) = Process::place("redis")?;
        let child = Self::spawn(port, &dir)?;
        let server = Self {
            process: Process { child, port, dir },
        };
        server.wait_ready().await?;
        Ok(server)
    }

    fn spawn(port: u16, dir: &Path) -> anyhow::Result<Child> {
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (is it installed?)")
    }

    pub fn port(&self) -> u16 {
        self.process.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port())
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// True when it answers `PING` within 500 ms.
    pub async fn answers(&self) -> bool {
        let ping = async {
            let mut stream = TcpStream::connect(("127.0.0.1", self.port())).await.ok()?;
            stream.write_all(b"PING\r\n").await.ok()?;
            let mut reply = [0u8; 7];
            stream.read_exact(&mut reply).await.ok()?;
            Some(&reply == b"+PONG\r\n")
        };
        matches!(
            timeout(Duration::from_millis(500), ping).await,
            Ok(Some(true))
        )
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        if wait_until(Duration::from_secs(10), || self.answers()).await {
            Ok(())
        } else {
            bail!("own redis-server on port {} did not start", self.port())
        }
    }

    /// `INFO <section>`: the server's report, as text.
    pub async fn info(&self, section: &str) -> anyhow::Result<String> {
        let mut stream = timeout(
            Duration::from_secs(2),
            TcpStream::connect(("127.0.0.1", self.port())),
        )
        .await
        .context("connecting for INFO")??;
        stream
            .write_all(format!("INFO {section}\r\n").as_bytes())
            .await?;
        let read = async {
            // a bulk string: `$<len>\r\n<len bytes>\r\n`
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n") {
                stream.read_exact(&mut byte).await?;
                head.push(byte[0]);
            }
            let len: usize = std::str::from_utf8(&head)?
                .trim()
                .strip_prefix('$')
                .context("INFO did not answer a bulk string")?
                .parse()?;
            let mut body = vec![0u8; len + 2];
            stream.read_exact(&mut body).await?;
            body.truncate(len);
            anyhow::Ok(String::from_utf8(body)?)
        };
        timeout(Duration::from_secs(2), read)
            .await
            .context("reading INFO")?
    }

    /// Commands executed since start, by name (`INFO commandstats`),
    /// including those run inside scripts.
    pub async fn command_calls(&self) -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
        let text = self.info("commandstats").await?;
        let mut calls = std::collections::BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("cmdstat_") else {
                continue;
            };
            let Some((name, stats)) = rest.split_once(':') else {
                continue;
            };
            let n = stats
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            calls.insert(name.to_owned(), n);
        }
        Ok(calls)
    }

    /// `SIGSTOP`: it stops answering, connections stay open.
    pub fn pause(&self) {
        self.process.pause();
    }

    /// `SIGCONT`.
    pub fn resume(&self) {
        self.process.resume();
    }

    /// `SIGKILL` (its data is gone: no persistence).
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Kills it and starts it again, empty, on the same port.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.process.child = Self::spawn(self.port(), &self.process.dir)?;
        self.wait_ready().await
    }
}

/// A `mariadbd` of one's own: its own data directory (initialised by
/// `mariadb-install-db`, `root` without a password on 127.0.0.1), its own
/// port and socket. A restart keeps the data (crash recovery after a kill).
pub struct OwnMariadb {
    process: Process,
}

impl OwnMariadb {
    /// Initialises a data directory and starts the server; waits until it
    /// accepts connections.
    pub async fn start() -> anyhow::Result<Self> {
        let (port, dir) = Process::place("mariadb")?;
        let install = Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .args(root_user())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .context("running mariadb-install-db (is mariadb-server installed?)")?;
        if !install.status.success() {
            bail!(
                "mariadb-install-db failed: {}",
                String::from_utf8_lossy(&install.stderr)
            );
        }
        let child = Self::spawn(port, &dir)?;
        let server = Self {
            process: Process { child, port, dir },
        };
        server.wait_ready().await?;
        Ok(server)
    }

    fn spawn(port: u16, dir: &Path) -> anyhow::Result<Child> {
        let log = std::fs::File::create(dir.join("error.log")).context("the server log")?;
        Command::new("mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--socket={}", dir.join("mysqld.sock").display()))
            .arg(format!("--pid-file={}", dir.join("mysqld.pid").display()))
            .arg(format!("--port={port}"))
            .args([
                "--bind-address=127.0.0.1",
                "--skip-log-bin",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=64M",
                "--max-connections=500",
            ])
            .args(root_user())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting mariadbd (is mariadb-server installed?)")
    }

    pub fn port(&self) -> u16 {
        self.process.port
    }

    /// `mysql://root@127.0.0.1:<port>/<database>`.
    pub fn url(&self, database: &str) -> String {
        format!("mysql://root@127.0.0.1:{}/{database}", self.port())
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// True when it accepts a connection and sends its greeting within
    /// 500 ms (it listens only once crash recovery is over).
    pub async fn answers(&self) -> bool {
        let greet = async {
            let mut stream = TcpStream::connect(("127.0.0.1", self.port())).await.ok()?;
            let mut header = [0u8; 5];
            stream.read_exact(&mut header).await.ok()?;
            // protocol version 10 after the 4-byte packet header; 0xff is
            // an error packet ("too many connections", "shutting down")
            Some(header[4] == 10)
        };
        matches!(
            timeout(Duration::from_millis(500), greet).await,
            Ok(Some(true))
        )
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        if wait_until(Duration::from_secs(60), || self.answers()).await {
            Ok(())
        } else {
            let log =
                std::fs::read_to_string(self.process.dir.join("error.log")).unwrap_or_default();
            bail!(
                "own mariadbd on port {} did not start:\n{}",
                self.port(),
                log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
            )
        }
    }

    /// `SIGSTOP`: it stops answering, connections stay open.
    pub fn pause(&self) {
        self.process.pause();
    }

    /// `SIGCONT`.
    pub fn resume(&self) {
        self.process.resume();
    }

    /// `SIGKILL`: committed transactions survive (InnoDB's redo log), the
    /// rest is rolled back at the next start.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Kills it and starts it again on the same data and port; waits until
    /// crash recovery is over and it accepts connections.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.process.child = Self::spawn(self.port(), &self.process.dir)?;
        self.wait_ready().await
    }
}

/// `--user=root` when running as root (mariadbd refuses root otherwise).
fn root_user() -> Vec<String> {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if root {
        vec!["--user=root".to_owned()]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn own_redis_starts_pauses_and_restarts() {
        let mut redis = OwnRedis::start().await.unwrap();
        assert!(redis.answers().await);
        redis.pause();
        assert!(!redis.answers().await);
        redis.resume();
        assert!(redis.answers().await);
        redis.restart().await.unwrap();
        assert!(redis.answers().await);
    }

    #[cfg(feature = "mysql")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn own_mariadb_starts_pauses_and_restarts_with_its_data() {
        let mut maria = OwnMariadb::start().await.unwrap();
        let url = concert_mysql::DatabaseUrl::parse(&maria.url("own")).unwrap();
        concert_mysql::create_database_if_missing(&url)
            .await
            .unwrap();
        concert_mysql::run_migrations(&url).await.unwrap();
        maria.pause();
        assert!(!maria.answers().await);
        maria.resume();
        maria.restart().await.unwrap();
        // the data survived the kill
        assert_eq!(concert_mysql::run_migrations(&url).await.unwrap(), 0);
    }
}

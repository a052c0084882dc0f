//! A `redis-server` of one's own, on a free port, in a temporary directory,
//! without persistence: for tests that kill and restart Redis, and for lab
//! runs that count Redis commands exactly (nobody else's traffic). Only this
//! process is ever signalled, by its PID; dropping it kills it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use std::io::{Read, Write};
use std::net::TcpStream;

pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts one on a free port and waits until it answers `PING`.
    pub async fn start() -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .context("finding a free port")?;
        let dir = std::env::temp_dir().join(format!("concert-redis-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).context("creating a temporary directory")?;
        let mut server = Self {
            child: None,
            port,
            dir,
        };
        server.spawn().await?;
        Ok(server)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (is it installed?)")?;
        self.child = Some(child);
        for _ in 0..200 {
            if self.ping().await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("own redis-server on port {} did not answer", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// True when it answers `PING` within half a second.
    pub async fn ping(&self) -> bool {
        let port = self.port;
        let attempt = move || -> std::io::Result<bool> {
            let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            let timeout = Duration::from_millis(500);
            let mut stream = TcpStream::connect_timeout(&address, timeout)?;
            stream.set_read_timeout(Some(timeout))?;
            stream.set_write_timeout(Some(timeout))?;
            stream.write_all(b"PING\r\n")?;
            let mut reply = [0u8; 7];
            stream.read_exact(&mut reply)?;
            Ok(&reply == b"+PONG\r\n")
        };
        matches!(tokio::task::spawn_blocking(attempt).await, Ok(Ok(true)))
    }

    /// `INFO <section>`: the server's report, as text.
    pub async fn info(&self, section: &str) -> anyhow::Result<String> {
        let port = self.port;
        let command = format!("INFO {section}\r\n");
        let ask = move || -> anyhow::Result<String> {
            let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            let timeout = Duration::from_secs(2);
            let mut stream = TcpStream::connect_timeout(&address, timeout)?;
            stream.set_read_timeout(Some(timeout))?;
            stream.write_all(command.as_bytes())?;
            // a bulk string: `$<len>\r\n<len bytes>\r\n`
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n") {
                stream.read_exact(&mut byte)?;
                head.push(byte[0]);
            }
            let len: usize = std::str::from_utf8(&head)?
                .trim()
                .strip_prefix('$')
                .context("INFO did not answer a bulk string")?
                .parse()?;
            let mut body = vec![0u8; len + 2];
            stream.read_exact(&mut body)?;
            body.truncate(len);
            Ok(String::from_utf8(body)?)
        };
        tokio::task::spawn_blocking(ask).await?
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

    /// Kills it (`SIGKILL` to its PID) and reaps it: everything it held is
    /// gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again, empty, on the same port.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn().await
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

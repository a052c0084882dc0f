//! A TCP forwarder the chaos suite owns, between the app instances and a
//! server, that can delay every chunk of bytes (a slow network) on demand.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Forwards a local port to `127.0.0.1:<target>`.
pub struct DelayProxy {
    pub port: u16,
    delay_ms: Arc<AtomicU64>,
    /// Bumped to close every open connection.
    generation: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl DelayProxy {
    pub async fn start(target: u16) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the proxy")?;
        let port = listener.local_addr()?.port();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (generation, _) = watch::channel(0u64);
        let task = {
            let (delay_ms, generation) = (delay_ms.clone(), generation.clone());
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let delay_ms = delay_ms.clone();
                    let mut closed = generation.subscribe();
                    tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                            return;
                        };
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        let (cr, cw) = client.into_split();
                        let (sr, sw) = server.into_split();
                        tokio::select! {
                            _ = pump(cr, sw, &delay_ms) => {}
                            _ = pump(sr, cw, &delay_ms) => {}
                            _ = closed.changed() => {}
                        }
                    });
                }
            })
        };
        Ok(Self {
            port,
            delay_ms,
            generation,
            task,
        })
    }

    /// Delays every chunk forwarded from now on by `delay` (zero: none).
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Back to no delay.
    pub fn heal(&self) {
        self.set_delay(Duration::ZERO);
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.generation.send_modify(|g| *g += 1);
        self.task.abort();
    }
}

async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay_ms: &AtomicU64) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let delay = delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

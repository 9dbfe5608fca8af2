//! A TCP proxy between Herald and a database server that a test can cut:
//! every open connection is reset (SO_LINGER 0, so the peer sees
//! "Connection reset by peer") and new ones are refused until it is
//! restored. It simulates a database restart without touching the shared
//! server.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct DbProxy {
    addr: SocketAddr,
    down: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl DbProxy {
    /// Listens on 127.0.0.1 (random port) and forwards to `upstream` (host:port).
    pub async fn start(upstream: String) -> DbProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let down = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = {
            let down = down.clone();
            let connections = connections.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    if down.load(Ordering::SeqCst) {
                        reset(client);
                        continue;
                    }
                    let upstream = upstream.clone();
                    let task = tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(&upstream).await else {
                            reset(client);
                            return;
                        };
                        pipe(client, server).await;
                    });
                    let mut conns = connections.lock().unwrap();
                    conns.retain(|t| !t.is_finished());
                    conns.push(task);
                }
            })
        };
        DbProxy {
            addr,
            down,
            connections,
            accept,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Resets every open connection and refuses new ones until `restore`.
    pub fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        // Aborting a pipe task drops both sockets; `pipe` set SO_LINGER 0 on
        // them, so the peers get a reset, not a clean close.
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    pub fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }

    /// Cuts for `outage`, then restores.
    pub async fn outage(&self, outage: Duration) {
        self.cut();
        tokio::time::sleep(outage).await;
        self.restore();
    }
}

impl Drop for DbProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

/// Closes with a reset. SO_LINGER is deprecated in tokio because a non-zero
/// linger blocks on drop; a zero linger never blocks, it sends RST at once.
#[allow(deprecated)]
fn linger_zero(stream: &TcpStream) {
    let _ = stream.set_linger(Some(Duration::ZERO));
}

fn reset(stream: TcpStream) {
    linger_zero(&stream);
    drop(stream);
}

async fn pipe(mut client: TcpStream, mut server: TcpStream) {
    linger_zero(&client);
    linger_zero(&server);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}

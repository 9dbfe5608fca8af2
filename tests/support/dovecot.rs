//! A private Dovecot IMAP server per test: its own config file, passwd-file
//! (plain-text) authentication, Maildirs and logs in a temporary directory,
//! listening on loopback only (a plain port, and an implicit-TLS port with
//! a certificate of the test CA of `tls.rs`). The system's Dovecot is never
//! touched. `Dovecot::start` returns `None` (the test prints "skipped") only
//! when Dovecot is not installed and CI is not set; `.ci/run` installs it.
//!
//! Also `CuttingProxy`: a TCP proxy in front of the plain port that drops
//! the connection when the client sends a given IMAP command, to show what
//! Herald does when the server goes away mid-poll.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_imap::types::Fetch;
use futures::TryStreamExt;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::delivered::which;
use super::tls::{Cert, TestPki};

pub const USER: &str = "bounces";
pub const PASSWORD: &str = "imap-test-p4ss/word";

pub struct Dovecot {
    dir: TempDir,
    child: Child,
    pub imap_port: u16,
    pub imaps_port: u16,
    ca_file: PathBuf,
}

/// One message as the server holds it.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub uid: u32,
    pub flags: Vec<String>,
    pub body: Vec<u8>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn current_uid() -> u32 {
    let out = Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("numeric uid")
}

fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().expect("id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl Dovecot {
    /// Starts a fresh server with one user ([`USER`], [`PASSWORD`]) and an empty INBOX.
    pub async fn start() -> Option<Dovecot> {
        let Some(binary) = which("dovecot").or_else(|| {
            let sbin = PathBuf::from("/usr/sbin/dovecot");
            sbin.exists().then_some(sbin)
        }) else {
            assert!(
                std::env::var("CI").is_err(),
                "Dovecot is missing under CI: .ci/run installs dovecot-imapd"
            );
            eprintln!("skipped: Dovecot is not installed (apt-get install -y dovecot-imapd)");
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        // Dovecot's mail processes run as the mail user, who must reach the Maildirs.
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let (mail_uid, mail_gid, internal, login) = if current_uid() == 0 {
            (65534, 65534, "dovecot".to_owned(), "dovenull".to_owned())
        } else {
            let me = current_user();
            (current_uid(), current_uid(), me.clone(), me)
        };
        let mail = root.join("mail");
        std::fs::create_dir_all(&mail).expect("mail dir");
        if current_uid() == 0 {
            std::os::unix::fs::chown(&mail, Some(mail_uid), Some(mail_gid)).expect("chown mail");
        }
        let pki = TestPki::new();
        let ca_file = pki.write_ca_file(root);
        let (cert, key) = pki.write_server_pem(Cert::CaSigned, root);
        std::fs::write(root.join("passwd"), format!("{USER}:{{PLAIN}}{PASSWORD}\n"))
            .expect("passwd");
        let (imap_port, imaps_port) = (free_port(), free_port());
        let r = root.display();
        let config = format!(
            r#"instance_name = herald-test-{imap_port}
base_dir = {r}/run
state_dir = {r}/state
log_path = {r}/dovecot.log
protocols = imap
listen = 127.0.0.1
default_internal_user = {internal}
default_login_user = {login}
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = {mail_uid}
last_valid_uid = {mail_uid}
first_valid_gid = {mail_gid}
mail_location = maildir:{r}/mail/%u
namespace inbox {{
  inbox = yes
  separator = /
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {r}/passwd
}}
userdb {{
  driver = static
  args = uid={mail_uid} gid={mail_gid} home={r}/mail/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
"#,
            cert = cert.display(),
            key = key.display(),
        );
        let conf = root.join("dovecot.conf");
        std::fs::write(&conf, config).expect("dovecot.conf");
        let child = Command::new(binary)
            .arg("-F")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dovecot");
        let server = Dovecot {
            dir,
            child,
            imap_port,
            imaps_port,
            ca_file,
        };
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", imap_port)).await.is_ok()
                && TcpStream::connect(("127.0.0.1", imaps_port)).await.is_ok()
            {
                return Some(server);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("Dovecot did not start; its log:\n{}", server.log());
    }

    /// `imaps://bounces:…@127.0.0.1:PORT/MAILBOX` (TLS) or `imap://…` (plain).
    pub fn url(&self, tls: bool, mailbox: &str) -> String {
        let password = PASSWORD.replace('/', "%2F");
        if tls {
            format!(
                "imaps://{USER}:{password}@127.0.0.1:{}/{mailbox}",
                self.imaps_port
            )
        } else {
            format!(
                "imap://{USER}:{password}@127.0.0.1:{}/{mailbox}",
                self.imap_port
            )
        }
    }

    /// The PEM of the CA that signed the server's certificate (for `bounce.imap_ca_file`).
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    async fn session(&self) -> async_imap::Session<TcpStream> {
        let tcp = TcpStream::connect(("127.0.0.1", self.imap_port))
            .await
            .expect("connect to Dovecot");
        let mut client = async_imap::Client::new(tcp);
        client
            .read_response()
            .await
            .expect("greeting")
            .expect("greeting");
        client
            .login(USER, PASSWORD)
            .await
            .map_err(|(e, _)| e)
            .expect("test login")
    }

    /// Puts `raw` into `mailbox` with APPEND, as a mail client or an MTA's delivery would.
    pub async fn append(&self, mailbox: &str, raw: &[u8]) {
        let mut s = self.session().await;
        s.append(mailbox, None, None, raw).await.expect("APPEND");
        s.logout().await.expect("LOGOUT");
    }

    /// Every message of `mailbox` (empty when it does not exist), in UID order.
    pub async fn messages(&self, mailbox: &str) -> Vec<StoredMessage> {
        let mut s = self.session().await;
        let Ok(selected) = s.examine(mailbox).await else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if selected.exists > 0 {
            let fetched: Vec<Fetch> = s
                .fetch("1:*", "(UID FLAGS BODY.PEEK[])")
                .await
                .expect("FETCH")
                .try_collect()
                .await
                .expect("FETCH responses");
            for f in &fetched {
                out.push(StoredMessage {
                    uid: f.uid.expect("UID"),
                    flags: f.flags().map(|fl| format!("{fl:?}")).collect(),
                    body: f.body().unwrap_or_default().to_vec(),
                });
            }
        }
        s.logout().await.expect("LOGOUT");
        out.sort_by_key(|m| m.uid);
        out
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// A TCP proxy to a server that drops the connection (both ways, the command unsent)
/// the first `cuts` times the client sends a line containing `trigger`.
pub struct CuttingProxy {
    pub port: u16,
    connections: Arc<AtomicUsize>,
    cut: Arc<AtomicUsize>,
    accept: tokio::task::JoinHandle<()>,
}

impl CuttingProxy {
    pub async fn start(upstream_port: u16, trigger: &'static str, cuts: usize) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let connections = Arc::new(AtomicUsize::new(0));
        let cut = Arc::new(AtomicUsize::new(0));
        let accept = {
            let (connections, cut) = (connections.clone(), cut.clone());
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    connections.fetch_add(1, Ordering::SeqCst);
                    let cut = cut.clone();
                    tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)).await
                        else {
                            return;
                        };
                        relay(client, server, trigger, cuts, cut).await;
                    });
                }
            })
        };
        CuttingProxy {
            port,
            connections,
            cut,
            accept,
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Connections dropped so far.
    pub fn cuts(&self) -> usize {
        self.cut.load(Ordering::SeqCst)
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    trigger: &'static str,
    cuts: usize,
    cut: Arc<AtomicUsize>,
) {
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let down = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut server_rx, &mut client_tx).await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match client_rx.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let seen = String::from_utf8_lossy(&buf[..n]).contains(trigger);
        if seen
            && cut
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                    (c < cuts).then_some(c + 1)
                })
                .is_ok()
        {
            break;
        }
        if server_tx.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    down.abort();
}

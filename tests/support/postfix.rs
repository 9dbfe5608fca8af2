//! A private Postfix instance per test, never the system's: its own config
//! directory (`postfix -c DIR`), queue and data directories, loopback ports
//! only, no DNS (every next hop is `[127.0.0.1]:port` from a `texthash:`
//! transport map). Stopped when dropped.
//!
//! Two listeners: the relay Herald sends to (it accepts every recipient of
//! the domains it knows), and an "MX" for the domains whose users do not
//! exist, which refuses them with `550 5.1.1` at RCPT. The relay therefore
//! accepts a message, fails to hand it on, and sends a DSN to the envelope
//! sender, routed to `bounce_port`: exactly what happens when a real
//! recipient's server refuses mail after the relay said yes.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

pub struct PostfixOptions<'a> {
    /// Recipients in these domains are delivered (to Postfix's `discard:`).
    pub deliver_domains: &'a [&'a str],
    /// Recipients in these domains are refused with 550 5.1.1 after the
    /// relay accepted the message, so they bounce with a DSN.
    pub unknown_user_domains: &'a [&'a str],
    /// Where mail to this domain (the DSNs) goes: `[127.0.0.1]:bounce_port`.
    pub bounce_domain: &'a str,
    pub bounce_port: u16,
}

pub struct PostfixRelay {
    dir: TempDir,
    /// The relay Herald sends to.
    pub port: u16,
    /// The MX that refuses the unknown users.
    pub mx_port: u16,
}

impl PostfixRelay {
    /// Starts an instance, or `None` (after saying why) when Postfix is not
    /// installed or this is not root (Postfix's master must start as root).
    /// Under CI either is a failure, not a skip.
    pub fn start(options: PostfixOptions<'_>) -> Option<PostfixRelay> {
        super::delivered::require_tools(&["postfix", "postconf"], "postfix")?;
        if !is_root() {
            if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
                panic!("the Postfix tests start a private Postfix, which needs root");
            }
            eprintln!("skipped (a private Postfix must be started as root)");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("herald-postfix-")
            .tempdir()
            .expect("temp dir");
        let root = dir.path();
        // Postfix's daemons run as the `postfix` user and must reach the queue.
        set_mode(root, 0o755);
        for sub in ["etc", "queue", "data"] {
            std::fs::create_dir_all(root.join(sub)).expect("postfix dirs");
        }
        let chown = Command::new("chown")
            .arg("postfix")
            .arg(root.join("data"))
            .status()
            .expect("chown");
        assert!(chown.success(), "chown postfix {}", root.display());

        let port = free_port();
        let mx_port = free_port();
        let d = root.display();
        let relay_domains: Vec<&str> = options
            .deliver_domains
            .iter()
            .chain(options.unknown_user_domains)
            .copied()
            .collect();
        std::fs::write(
            root.join("etc/main.cf"),
            format!(
                "compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
meta_directory = /etc/postfix
myhostname = relay.herald-test.invalid
mydomain = herald-test.invalid
myorigin = $myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
mynetworks = 127.0.0.0/8
relay_domains = {relay}
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtp_dns_support_level = disabled
transport_maps = texthash:{d}/etc/transport
alias_maps =
alias_database =
local_recipient_maps =
biff = no
soft_bounce = no
maillog_file = {d}/maillog
maillog_file_prefixes = {d}
# Hand mail on at once: no batching delays in a test.
in_flow_delay = 0
",
                relay = relay_domains.join(", ")
            ),
        )
        .expect("main.cf");
        let mut transport = String::new();
        for domain in options.deliver_domains {
            transport.push_str(&format!("{domain} discard:\n"));
        }
        let mut unknown = String::new();
        for domain in options.unknown_user_domains {
            transport.push_str(&format!("{domain} smtp:[127.0.0.1]:{mx_port}\n"));
            unknown.push_str(&format!(
                "{domain} 550 5.1.1 User unknown in virtual mailbox table\n"
            ));
        }
        transport.push_str(&format!(
            "{} smtp:[127.0.0.1]:{}\n",
            options.bounce_domain, options.bounce_port
        ));
        // Nothing else leaves this instance, not even a DNS lookup.
        transport.push_str("* error:5.4.4 this test relay routes no other domain\n");
        std::fs::write(root.join("etc/transport"), transport).expect("transport");
        std::fs::write(root.join("etc/unknown"), unknown).expect("unknown users");
        // Only the services this test uses, none chrooted (a chroot would
        // need copies of /etc files in the queue directory).
        std::fs::write(
            root.join("etc/master.cf"),
            format!(
                "127.0.0.1:{port} inet n - n - - smtpd
127.0.0.1:{mx_port} inet n - n - - smtpd -o smtpd_recipient_restrictions=check_recipient_access,texthash:{d}/etc/unknown,reject -o smtpd_relay_restrictions=reject_unauth_destination
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"
            ),
        )
        .expect("master.cf");
        let relay = PostfixRelay { dir, port, mx_port };
        let out = Command::new("postfix")
            .arg("-c")
            .arg(relay.config_dir())
            .arg("start")
            .output()
            .expect("run postfix start");
        assert!(
            out.status.success(),
            "postfix -c {} start failed: {}{}\n{}",
            relay.config_dir().display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            relay.maillog()
        );
        relay.wait_listening();
        Some(relay)
    }

    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("etc")
    }

    /// `smtp://127.0.0.1:PORT`, for `smtp.url`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Postfix's own log of this instance.
    pub fn maillog(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }

    /// Log lines about deliveries to `to` (`to=<…>`), e.g. to count bounces.
    pub fn log_lines_to(&self, to: &str) -> Vec<String> {
        let needle = format!("to=<{to}>");
        self.maillog()
            .lines()
            .filter(|l| l.contains(&needle))
            .map(str::to_owned)
            .collect()
    }

    /// Messages still in the queue (incoming, active or deferred).
    pub fn queued(&self) -> usize {
        ["incoming", "active", "deferred"]
            .iter()
            .map(|q| count_files(&self.dir.path().join("queue").join(q)))
            .sum()
    }

    fn wait_listening(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "Postfix never listened on {}\n{}",
                self.port,
                self.maillog()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for PostfixRelay {
    fn drop(&mut self) {
        let _ = Command::new("postfix")
            .arg("-c")
            .arg(self.config_dir())
            .arg("stop")
            .output();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() { count_files(&path) } else { 1 }
        })
        .sum()
}

/// A loopback port nobody listens on now (the usual small race is harmless in tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

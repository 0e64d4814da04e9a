//! Connections to a local content-filter daemon (clamd for [`crate::antivirus`], spamd for
//! [`crate::antispam`]): the configured address, `"host:port"` or an absolute unix-socket
//! path, and a connect bounded in time. The protocols spoken over the connection belong to
//! those modules; this owns none of their bytes.
//!
//! Input it distrusts: the configured address (checked when parsed: a unix path must be
//! absolute and NUL-free, anything else a valid `"host:port"`).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Where a daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonAddr {
    /// `"host:port"`: an IP, `[IPv6]` or DNS name and a port.
    Tcp(String),
    /// An absolute unix socket path.
    Unix(PathBuf),
}

/// A byte stream to a daemon, TCP or unix.
pub trait DaemonStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> DaemonStream for T {}

/// An open connection to a daemon.
pub type Conn = Box<dyn DaemonStream>;

impl fmt::Display for DaemonAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DaemonAddr::Tcp(a) => f.write_str(a),
            DaemonAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl DaemonAddr {
    /// Parses a configured address; the error says what is wrong with it.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.starts_with('/') {
            if s.contains('\0') {
                return Err(format!("{s:?} contains a NUL byte"));
            }
            return Ok(DaemonAddr::Unix(PathBuf::from(s)));
        }
        crate::config::check_host_port(s)?;
        Ok(DaemonAddr::Tcp(s.to_owned()))
    }

    /// Connects within `limit`; the error is a sentence for the log (`connect: …`).
    pub async fn connect(&self, limit: Duration) -> Result<Conn, String> {
        let attempt = async {
            match self {
                DaemonAddr::Tcp(a) => TcpStream::connect(a.as_str()).await.map(|s| {
                    let _ = s.set_nodelay(true);
                    Box::new(s) as Conn
                }),
                #[cfg(unix)]
                DaemonAddr::Unix(p) => tokio::net::UnixStream::connect(p)
                    .await
                    .map(|s| Box::new(s) as Conn),
                #[cfg(not(unix))]
                DaemonAddr::Unix(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "unix sockets are not supported on this platform",
                )),
            }
        };
        match timeout(limit, attempt).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(format!("connect: {e}")),
            Err(_) => Err(format!("connect: timed out after {limit:?}")),
        }
    }
}

/// A daemon's reply bytes fit for a log line: lossy UTF-8, control characters escaped, at
/// most 200 characters.
pub fn printable(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .chars()
        .take(200)
        .flat_map(char::escape_default)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked_when_parsed() {
        assert_eq!(
            DaemonAddr::parse("127.0.0.1:783"),
            Ok(DaemonAddr::Tcp("127.0.0.1:783".into()))
        );
        assert_eq!(
            DaemonAddr::parse("/run/spamd.sock"),
            Ok(DaemonAddr::Unix("/run/spamd.sock".into()))
        );
        assert!(DaemonAddr::parse("spamd-socket").is_err());
        assert!(DaemonAddr::parse("/run/a\0b").is_err());
        assert_eq!(
            DaemonAddr::parse("/run/s").map(|a| a.to_string()),
            Ok("unix:/run/s".to_string())
        );
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_sentence() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap().to_string();
        drop(l);
        let e = DaemonAddr::parse(&a)
            .unwrap()
            .connect(Duration::from_secs(2))
            .await
            .err()
            .unwrap();
        assert!(e.starts_with("connect: "), "{e}");
    }
}

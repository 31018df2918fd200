//! The floor under the CPU cost of one status poll: minimal clients that wake every interval and
//! make one HTTP request on a kept-alive connection, for `scripts/bench.py --poll-cpu` to
//! measure beside dmstrack and the official SDK.
//!
//! ```text
//! poll_floor MODE URL POLLS INTERVAL_MS
//!   MODE  sleep    the timer wake alone, no request
//!         socket   a hand-written HTTP/1.1 GET on a tokio TcpStream (reads up to Content-Length)
//!         hyper    hyper's HTTP/1 connection (`client::conn::http1`) with its connection task
//!         reqwest  a reqwest::Client as dmstrack builds one (no proxy lookup, no redirects)
//! ```
//!
//! Each runs on a current-thread tokio runtime, as the daemon does, and does nothing with the
//! answer but read it, so the difference between these and dmstrack is what dmstrack's own
//! work (signing, scheduling, state, metrics) costs. The bench script times the whole process
//! (wait4) for a few and for many polls and takes the difference per poll, as for dmstrack.

use std::time::Duration;

use http_body_util::BodyExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

#[derive(Debug, Clone, Copy)]
enum Mode {
    Sleep,
    Socket,
    Hyper,
    Reqwest,
}

fn usage() -> ! {
    eprintln!("usage: poll_floor sleep|socket|hyper|reqwest URL POLLS INTERVAL_MS");
    std::process::exit(2)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, url, polls, interval] = args.as_slice() else {
        usage()
    };
    let mode = match mode.as_str() {
        "sleep" => Mode::Sleep,
        "socket" => Mode::Socket,
        "hyper" => Mode::Hyper,
        "reqwest" => Mode::Reqwest,
        _ => usage(),
    };
    let url = reqwest::Url::parse(url)?;
    let polls: u32 = polls.parse()?;
    let interval = Duration::from_millis(interval.parse()?);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(mode, url, polls, interval))
}

async fn run(mode: Mode, url: reqwest::Url, polls: u32, interval: Duration) -> anyhow::Result<()> {
    let mut client = Client::new(mode, &url).await?;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    for _ in 0..polls {
        ticker.tick().await;
        client.request(&url).await?;
    }
    Ok(())
}

/// One kept-alive connection per mode (reconnected when the server closes it).
enum Client {
    Sleep,
    Socket {
        address: String,
        stream: TcpStream,
        buffer: Vec<u8>,
    },
    Hyper {
        address: String,
        sender: hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    },
    Reqwest(reqwest::Client),
}

impl Client {
    async fn new(mode: Mode, url: &reqwest::Url) -> anyhow::Result<Self> {
        let host = url.host_str().unwrap_or("127.0.0.1");
        let address = format!("{host}:{}", url.port_or_known_default().unwrap_or(80));
        Ok(match mode {
            Mode::Sleep => Self::Sleep,
            Mode::Socket => Self::Socket {
                stream: connect(&address).await?,
                address,
                buffer: Vec::with_capacity(16 * 1024),
            },
            Mode::Hyper => Self::Hyper {
                sender: hyper_connect(&address).await?,
                address,
            },
            Mode::Reqwest => Self::Reqwest(
                reqwest::Client::builder()
                    .no_proxy()
                    .redirect(reqwest::redirect::Policy::none())
                    .build()?,
            ),
        })
    }

    async fn request(&mut self, url: &reqwest::Url) -> anyhow::Result<()> {
        let target = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        match self {
            Self::Sleep => {}
            Self::Socket {
                address,
                stream,
                buffer,
            } => {
                let request = format!(
                    "GET {target} HTTP/1.1\r\nhost: {address}\r\naccept: application/json\r\n\r\n"
                );
                if !socket_exchange(stream, buffer, request.as_bytes()).await? {
                    *stream = connect(address).await?;
                    if !socket_exchange(stream, buffer, request.as_bytes()).await? {
                        anyhow::bail!("the server closed a new connection without answering");
                    }
                }
            }
            Self::Hyper { address, sender } => {
                if sender.ready().await.is_err() {
                    *sender = hyper_connect(address).await?;
                }
                let request = hyper::Request::get(target)
                    .header(hyper::header::HOST, address.as_str())
                    .header(hyper::header::ACCEPT, "application/json")
                    .body(http_body_util::Empty::new())?;
                let response = sender.send_request(request).await?;
                response.into_body().collect().await?;
            }
            Self::Reqwest(client) => {
                client.get(url.clone()).send().await?.bytes().await?;
            }
        }
        Ok(())
    }
}

async fn connect(address: &str) -> anyhow::Result<TcpStream> {
    let stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn hyper_connect(
    address: &str,
) -> anyhow::Result<hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>> {
    let io = hyper_util::rt::TokioIo::new(connect(address).await?);
    let (sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// Sends one request and reads its whole answer (headers, then `Content-Length` bytes). False
/// when the server had closed the connection before answering.
async fn socket_exchange(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    request: &[u8],
) -> anyhow::Result<bool> {
    if stream.write_all(request).await.is_err() {
        return Ok(false);
    }
    buffer.clear();
    let mut chunk = [0u8; 8192];
    loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(false);
        }
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .map(|value| value.trim().parse::<usize>())
                .transpose()?
                .unwrap_or(0);
            if buffer.len() >= end + 4 + length {
                return Ok(true);
            }
        }
    }
}

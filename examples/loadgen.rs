//! Load generator for deskboot, and for static servers holding the same bytes.
//!
//! Loopback only; every run is bounded by a count (`--phones` x `--rounds`)
//! and a time (`--duration`). `--boot-over` spreads the phones' boots over
//! that many seconds instead of starting them all at once.
//!
//! ```sh
//! export DESKBOOT_ADMIN_TOKEN=...        # or --token
//! # 2,000 users and Yealink T46S phones (MACs 0015650xxxxx), in one CSV import:
//! cargo run --release --example loadgen -- --setup 2000
//! # The same bytes as plain files, for nginx or a TFTP daemon (no load run):
//! cargo run --release --example loadgen -- --static-dir /tmp/static --phones 2000
//! # 2,000 phones, 100 at a time, each fetching y000000000066.cfg then <mac>.cfg:
//! cargo run --release --example loadgen -- --phones 2000 --concurrency 100 \
//!     --mode tftp --tftp 127.0.0.1:6969 --blksize 1428 --server-pid "$(pidof deskboot)" --json
//! ```
//!
//! `--mode` is `http-keepalive`, `http-close` (one connection per request) or
//! `tftp` (RRQ with blksize and tsize, lock-step ACKs, retransmission on
//! timeout). `--unknown` asks for MACs that are not in the store
//! (0015659xxxxx): the MAC file must then be "not found". `--check-dir DIR`
//! compares every body with the file of the same name in DIR.
//! `--also-http A,B` splits an HTTP run over several nodes sharing one
//! store, phone by phone.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use tokio::net::UdpSocket;

/// The common file of the Yealink T46S, which every phone asks for first.
const COMMON_FILE: &str = "y000000000066.cfg";
const MODEL: &str = "yealink-t46s";
/// Provisioned MACs are 0015650 + 5 hex digits; unknown ones 0015659 + 5,
/// so both keep Yealink's OUI and the server takes them for T46S files.
const KNOWN_PREFIX: &str = "0015650";
const UNKNOWN_PREFIX: &str = "0015659";
const MAX_DEVICES: usize = 0x10_0000;
/// How long an admin request (the --setup import) may take: a server on
/// PostgreSQL gives an administrator's change ten minutes, and imports
/// 100,000 phones in about two on a busy 2-core machine (BENCHMARKS.md).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(600);
/// Each source address of an HTTP run gets its own client and pool.
const MAX_HTTP_SOURCES: u32 = 1024;
/// Linux reports process CPU time in USER_HZ ticks, 100 on every mainstream
/// architecture; reading sysconf would need the libc crate.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    HttpKeepalive,
    HttpClose,
    Tftp,
}

#[derive(Debug, Parser)]
#[command(about = "Load generator for deskboot (loopback only)")]
struct Args {
    /// Phones' HTTP address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// Other nodes' HTTP addresses (comma-separated), sharing the store
    /// of --http's: phone i boots from the (i mod N)th of --http and these.
    #[arg(long, value_delimiter = ',')]
    also_http: Vec<SocketAddr>,
    /// TFTP address.
    #[arg(long, default_value = "127.0.0.1:6969")]
    tftp: SocketAddr,
    /// Admin API base URL.
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    admin: String,
    /// Admin token (for --setup and --static-dir).
    #[arg(long, env = "DESKBOOT_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Create N users and N Yealink T46S phones through one CSV import.
    #[arg(long, value_name = "N")]
    setup: Option<usize>,
    /// The provisioning URL stored by --setup [default: http://<--http>].
    /// Fixing it makes HTTP, TFTP and the admin preview render the same bytes.
    #[arg(long)]
    provisioning_url: Option<String>,
    /// Write the common file and the MAC file of --setup (or --phones) phones
    /// into DIR through the admin preview, for static servers; no load run.
    #[arg(long, value_name = "DIR")]
    static_dir: Option<PathBuf>,
    /// Simulated phones (0: no load run).
    #[arg(long, default_value_t = 0)]
    phones: usize,
    /// Times every phone boots.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Phones booting at once.
    #[arg(long, default_value_t = 100)]
    concurrency: usize,
    #[arg(long, value_enum, default_value = "http-keepalive")]
    mode: Mode,
    /// TFTP block size asked for.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u16).range(8..=65464))]
    blksize: u16,
    /// Ask for MACs that are not provisioned.
    #[arg(long)]
    unknown: bool,
    /// Skip the common file: each phone asks only for its MAC file, as a
    /// scanner's guesses do.
    #[arg(long)]
    mac_file_only: bool,
    /// The phones' (first) source address, towards an IPv4 server.
    #[arg(long, default_value = "127.0.0.1")]
    source: Ipv4Addr,
    /// Spread the phones over this many source addresses, counting up from
    /// --source (loopback answers from all of 127.0.0.0/8): phone i asks
    /// from the (i mod N)th, so a scan comes from many hosts at once. At
    /// most 1,024 over HTTP, which needs a client per address.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=65536))]
    sources: u32,
    /// No phone starts booting after this many seconds.
    #[arg(long, default_value_t = 120.0)]
    duration: f64,
    /// Phones start booting evenly over this many seconds, as when PoE
    /// switches power their ports one after the other, instead of all at
    /// once; --concurrency still caps how many boot at a time.
    #[arg(long, default_value_t = 0.0)]
    boot_over: f64,
    /// TFTP retransmission timeout; HTTP requests get (retries + 1) times it.
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
    /// TFTP retransmissions before a transfer fails.
    #[arg(long, default_value_t = 5)]
    retries: u32,
    /// The server's processes (comma-separated): RSS and CPU are summed.
    #[arg(long, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// Compare every body received with DIR/<name>.
    #[arg(long, value_name = "DIR")]
    check_dir: Option<PathBuf>,
    /// A name for this run in the report.
    #[arg(long, default_value = "")]
    label: String,
    /// Also print the result as one JSON line.
    #[arg(long)]
    json: bool,
    /// Print a markdown table of the JSON lines in FILE (from --json runs,
    /// labelled by server), with ratios of --baseline to each other server.
    #[arg(long, value_name = "FILE")]
    table: Option<PathBuf>,
    /// The label the ratios are taken from.
    #[arg(long, default_value = "deskboot")]
    baseline: String,
    /// Client runtime threads; 1 leaves the other core to the server.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    // reqwest speaks TLS through rustls, whose crypto provider is chosen once.
    deskboot::transport::tls::install_crypto_provider();
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if let Some(file) = &args.table {
        print!("{}", table(file, &args.baseline)?);
        return Ok(());
    }
    if let Some(n) = args.setup {
        setup(&args, n).await?;
    }
    if let Some(dir) = &args.static_dir {
        // Exporting is a step of its own: --phones then counts files, not a load.
        let n = args.setup.unwrap_or(args.phones);
        return export(&args, dir, n).await;
    }
    if args.phones > 0 {
        let report = load(&args).await?;
        println!("{}", report.human());
        if args.json {
            println!("{}", report.json());
        }
    }
    Ok(())
}

fn mac(i: usize, unknown: bool) -> String {
    let prefix = if unknown {
        UNKNOWN_PREFIX
    } else {
        KNOWN_PREFIX
    };
    format!("{prefix}{i:05x}")
}

fn check_count(n: usize) -> Result<()> {
    if n >= MAX_DEVICES {
        bail!(
            "at most {} phones (the MAC scheme has 5 hex digits)",
            MAX_DEVICES - 1
        );
    }
    Ok(())
}

fn admin_client(args: &Args) -> Result<(reqwest::Client, String)> {
    let token = args
        .token
        .clone()
        .context("an admin token is needed: --token or DESKBOOT_ADMIN_TOKEN")?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(ADMIN_TIMEOUT)
        .build()?;
    Ok((client, format!("Bearer {token}")))
}

/// Global settings, then users and phones in one CSV import: one request
/// and one transaction, instead of 2N API calls.
async fn setup(args: &Args, n: usize) -> Result<()> {
    check_count(n)?;
    let (client, auth) = admin_client(args)?;
    let base = args.admin.trim_end_matches('/');
    let url = args
        .provisioning_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", args.http));
    let settings = serde_json::json!({
        "sip_server": "pbx.example.com",
        "ntp_server": "pool.ntp.org",
        "time_zone": "Europe/Paris",
        "utc_offset": "+01:00",
        "provisioning_url": url,
    });
    let response = client
        .put(format!("{base}/api/v1/settings"))
        .header("Authorization", &auth)
        .json(&settings)
        .send()
        .await
        .context("PUT /api/v1/settings")?;
    if !response.status().is_success() {
        bail!(
            "PUT /api/v1/settings: {}: {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
    }
    let mut csv =
        String::from("extension,firstname,lastname,email,sip_username,sip_password,mac,model\n");
    for i in 0..n {
        csv.push_str(&format!(
            "{},First{i},Last{i},,,,{},{MODEL}\n",
            100_000 + i,
            mac(i, false)
        ));
    }
    let started = Instant::now();
    let response = client
        .post(format!("{base}/api/v1/import"))
        .header("Authorization", &auth)
        .header("Content-Type", "text/csv")
        .body(csv)
        .send()
        .await
        .context("POST /api/v1/import")?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if !status.is_success() {
        let short: String = body.chars().take(500).collect();
        bail!("POST /api/v1/import: {status}: {short}");
    }
    eprintln!(
        "setup: {n} users and phones imported in {:.2}s: {}",
        started.elapsed().as_secs_f64(),
        body.trim()
    );
    Ok(())
}

/// Writes the bytes the server renders, so a static server can be given
/// exactly what deskboot sends.
async fn export(args: &Args, dir: &Path, n: usize) -> Result<()> {
    check_count(n)?;
    if n == 0 {
        bail!("--static-dir needs --phones N or --setup N");
    }
    let (client, auth) = admin_client(args)?;
    let base = args.admin.trim_end_matches('/').to_string();
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let started = Instant::now();
    let fetch = |client: reqwest::Client, auth: String, base: String, i: usize, name: String| async move {
        let url = format!("{base}/api/v1/devices/{}/files/{name}", mac(i, false));
        let response = client
            .get(&url)
            .header("Authorization", auth)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        if !response.status().is_success() {
            bail!("GET {url}: {}", response.status());
        }
        Ok::<_, anyhow::Error>((name, response.bytes().await?.to_vec()))
    };
    let (name, bytes) = fetch(
        client.clone(),
        auth.clone(),
        base.clone(),
        0,
        COMMON_FILE.to_string(),
    )
    .await?;
    std::fs::write(dir.join(&name), &bytes)?;
    let mut pending = tokio::task::JoinSet::new();
    let mut total = bytes.len();
    for i in 0..n {
        if pending.len() >= args.concurrency
            && let Some(done) = pending.join_next().await
        {
            let (name, bytes): (String, Vec<u8>) = done??;
            total += bytes.len();
            std::fs::write(dir.join(name), &bytes)?;
        }
        pending.spawn(fetch(
            client.clone(),
            auth.clone(),
            base.clone(),
            i,
            format!("{}.cfg", mac(i, false)),
        ));
    }
    while let Some(done) = pending.join_next().await {
        let (name, bytes) = done??;
        total += bytes.len();
        std::fs::write(dir.join(name), &bytes)?;
    }
    eprintln!(
        "static: {} files ({total} bytes) written to {} in {:.2}s",
        n + 1,
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// What one fetch got.
enum Outcome {
    Body(Vec<u8>),
    NotFound,
    Failed(String),
}

/// Counters shared by all workers.
#[derive(Default)]
struct Counters {
    retransmits: AtomicU64,
    duplicates: AtomicU64,
    /// RRQs that got no answer at all from a local port that had finished
    /// another transfer shortly before: a server that keys transfers by the
    /// peer address may still be holding the old one and drop the new RRQ.
    reused_port_stalls: AtomicU64,
    /// When each local port last finished a transfer.
    port_last_used: std::sync::Mutex<HashMap<u16, Instant>>,
}

/// How recent a port's previous transfer must be to count as a reuse.
const PORT_REUSE_WINDOW: Duration = Duration::from_secs(2);

/// Per-worker results, merged at the end.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    ok: u64,
    not_found: u64,
    failed: u64,
    bytes: u64,
    errors: Vec<String>,
}

struct Client {
    mode: Mode,
    /// One HTTP client per source address, in the order of `sources` (none
    /// for TFTP).
    http: Vec<reqwest::Client>,
    sources: Vec<IpAddr>,
    /// The nodes' HTTP addresses: --http, then --also-http.
    http_addrs: Vec<SocketAddr>,
    tftp_addr: SocketAddr,
    blksize: u16,
    timeout: Duration,
    retries: u32,
    counters: Counters,
}

impl Client {
    /// Fetches `name` from the `source`th source address, over HTTP from
    /// the `node`th node.
    async fn fetch(&self, source: usize, node: usize, name: &str, mac: &str) -> Outcome {
        match self.mode {
            Mode::HttpKeepalive | Mode::HttpClose => self.http_get(source, node, name, mac).await,
            Mode::Tftp => {
                match tftp_get(
                    self.sources[source],
                    self.tftp_addr,
                    name,
                    self.blksize,
                    self.timeout,
                    self.retries,
                    &self.counters,
                )
                .await
                {
                    Ok(t) => {
                        self.counters
                            .retransmits
                            .fetch_add(t.retransmits, Ordering::Relaxed);
                        self.counters
                            .duplicates
                            .fetch_add(t.duplicates, Ordering::Relaxed);
                        t.outcome
                    }
                    Err(e) => Outcome::Failed(format!("{e:#}")),
                }
            }
        }
    }

    async fn http_get(&self, source: usize, node: usize, name: &str, mac: &str) -> Outcome {
        let mut request = self.http[source]
            .get(format!("http://{}/{name}", self.http_addrs[node]))
            // What a T46S sends; deskboot reads model and firmware from it.
            .header(
                "User-Agent",
                format!("Yealink SIP-T46S 66.86.0.15 {}", colon_mac(mac)),
            );
        if self.mode == Mode::HttpClose {
            request = request.header("Connection", "close");
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return Outcome::Failed(format!("http: {e}")),
        };
        match response.status().as_u16() {
            200 => match response.bytes().await {
                Ok(b) => Outcome::Body(b.to_vec()),
                Err(e) => Outcome::Failed(format!("http body: {e}")),
            },
            404 => Outcome::NotFound,
            s => Outcome::Failed(format!("http status {s}")),
        }
    }
}

fn colon_mac(mac: &str) -> String {
    mac.as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

struct TftpResult {
    outcome: Outcome,
    retransmits: u64,
    duplicates: u64,
}

/// One RRQ, octet mode, asking for `blksize` and `tsize`. The server
/// answers from a new port (its TID), which every later packet must match.
async fn tftp_get(
    local: IpAddr,
    server: SocketAddr,
    name: &str,
    blksize: u16,
    timeout: Duration,
    retries: u32,
    counters: &Counters,
) -> Result<TftpResult> {
    // --source is an IPv4 address; an IPv6 server is asked from ::1.
    let local = if server.is_ipv4() {
        local
    } else {
        IpAddr::V6(Ipv6Addr::LOCALHOST)
    };
    let socket = UdpSocket::bind((local, 0)).await?;
    let port = socket.local_addr()?.port();
    let reused = counters
        .port_last_used
        .lock()
        .ok()
        .and_then(|ports| ports.get(&port).copied())
        .is_some_and(|t| t.elapsed() < PORT_REUSE_WINDOW);
    let finish = |outcome, retransmits, duplicates| {
        if let Ok(mut ports) = counters.port_last_used.lock() {
            ports.insert(port, Instant::now());
        }
        Ok(TftpResult {
            outcome,
            retransmits,
            duplicates,
        })
    };
    let mut rrq = vec![0, 1];
    for part in [name, "octet", "blksize", &blksize.to_string(), "tsize", "0"] {
        rrq.extend_from_slice(part.as_bytes());
        rrq.push(0);
    }
    let mut last_sent = rrq;
    socket.send_to(&last_sent, server).await?;
    let mut peer: Option<SocketAddr> = None;
    // Until an OACK says otherwise the server may be ignoring our options.
    let mut block_size = 512usize;
    let mut tsize: Option<usize> = None;
    let mut expected: u16 = 1;
    let mut body = Vec::new();
    let mut buf = vec![0u8; usize::from(blksize).max(512) + 4];
    let (mut tries, mut retransmits, mut duplicates) = (0u32, 0u64, 0u64);
    let result = finish;
    loop {
        let (n, from) = match tokio::time::timeout(timeout, socket.recv_from(&mut buf)).await {
            Err(_) => {
                if tries >= retries {
                    return result(
                        Outcome::Failed(format!("tftp: timed out at block {expected}")),
                        retransmits,
                        duplicates,
                    );
                }
                if peer.is_none() && tries == 0 && reused {
                    counters.reused_port_stalls.fetch_add(1, Ordering::Relaxed);
                }
                tries += 1;
                retransmits += 1;
                socket.send_to(&last_sent, peer.unwrap_or(server)).await?;
                continue;
            }
            Ok(received) => received?,
        };
        if from.ip() != server.ip() || peer.is_some_and(|p| p != from) {
            continue;
        }
        peer = Some(from);
        let packet = &buf[..n];
        if packet.len() < 4 {
            continue;
        }
        let opcode = u16::from_be_bytes([packet[0], packet[1]]);
        let number = u16::from_be_bytes([packet[2], packet[3]]);
        match opcode {
            // OACK: only valid before the first block.
            6 if expected == 1 && body.is_empty() => {
                let fields: Vec<&[u8]> = packet[2..].split(|b| *b == 0).collect();
                for pair in fields.chunks(2) {
                    let [key, value] = pair else { continue };
                    let key = String::from_utf8_lossy(key).to_ascii_lowercase();
                    let value: Option<usize> =
                        std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
                    match (key.as_str(), value) {
                        ("blksize", Some(v)) if v <= usize::from(blksize) => block_size = v,
                        ("blksize", _) => {
                            return result(
                                Outcome::Failed("tftp: bad blksize in OACK".into()),
                                retransmits,
                                duplicates,
                            );
                        }
                        ("tsize", v) => tsize = v,
                        _ => {}
                    }
                }
                last_sent = vec![0, 4, 0, 0];
                tries = 0;
                socket.send_to(&last_sent, from).await?;
            }
            3 if number == expected => {
                let data = &packet[4..];
                body.extend_from_slice(data);
                last_sent = vec![0, 4, packet[2], packet[3]];
                tries = 0;
                socket.send_to(&last_sent, from).await?;
                if data.len() < block_size {
                    let outcome = match tsize {
                        Some(t) if t != body.len() => Outcome::Failed(format!(
                            "tftp: tsize said {t} bytes, got {}",
                            body.len()
                        )),
                        _ => Outcome::Body(body),
                    };
                    return result(outcome, retransmits, duplicates);
                }
                expected = expected.wrapping_add(1);
            }
            // The server resent a block we have: our ACK was lost or late.
            3 if number == expected.wrapping_sub(1) => {
                duplicates += 1;
                socket.send_to(&last_sent, from).await?;
            }
            5 if number == 1 => return result(Outcome::NotFound, retransmits, duplicates),
            5 => {
                let message = String::from_utf8_lossy(&packet[4..]);
                let message = message.trim_end_matches('\0');
                return result(
                    Outcome::Failed(format!("tftp error {number}: {message}")),
                    retransmits,
                    duplicates,
                );
            }
            _ => {}
        }
    }
}

/// CPU ticks and RSS of the server's processes.
#[derive(Debug, Clone, Copy, Default)]
struct ProcSample {
    ticks: u64,
    rss_kb: u64,
}

fn sample(pids: &[u32]) -> Result<ProcSample> {
    let mut total = ProcSample::default();
    for pid in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status"))?;
        total.rss_kb += status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0);
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("reading /proc/{pid}/stat"))?;
        // The command name may hold spaces and parentheses; fields count
        // from after its last ')'. utime, stime, cutime, cstime are fields
        // 14 to 17: reaped children (in.tftpd forks) count too.
        let after = stat.rsplit_once(')').map(|(_, s)| s).unwrap_or("");
        let fields: Vec<&str> = after.split_whitespace().collect();
        for i in 11..15 {
            total.ticks += fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(total)
}

/// Datagrams the kernel dropped because a UDP socket's receive buffer was
/// full, machine-wide: on loopback a burst of RRQs overflows the server's
/// listening socket long before anything else.
fn udp_rcvbuf_errors() -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next()?, udp.next()?);
    let column = names.split_whitespace().position(|n| n == "RcvbufErrors")?;
    values.split_whitespace().nth(column)?.parse().ok()
}

fn self_ticks() -> u64 {
    sample(&[std::process::id()]).map(|s| s.ticks).unwrap_or(0)
}

async fn load(args: &Args) -> Result<Report> {
    check_count(args.phones)?;
    let timeout = Duration::from_millis(args.timeout_ms);
    if args.mode != Mode::Tftp && args.sources > MAX_HTTP_SOURCES {
        bail!("at most {MAX_HTTP_SOURCES} --sources over HTTP");
    }
    if args.mode == Mode::Tftp && !args.also_http.is_empty() {
        bail!("--also-http splits HTTP runs only");
    }
    let sources: Vec<IpAddr> = (0..args.sources)
        .map(|i| {
            u32::from(args.source)
                .checked_add(i)
                .map(|a| IpAddr::V4(Ipv4Addr::from(a)))
                .context("--source + --sources runs past 255.255.255.255")
        })
        .collect::<Result<_>>()?;
    let http = sources
        .iter()
        .take(if args.mode == Mode::Tftp {
            0
        } else {
            sources.len()
        })
        .map(|&address| {
            let mut http = reqwest::Client::builder()
                .no_proxy()
                .timeout(timeout * (args.retries + 1));
            if args.http.is_ipv4() {
                http = http.local_address(address);
            }
            if args.mode == Mode::HttpClose {
                http = http.pool_max_idle_per_host(0);
            }
            Ok(http.build()?)
        })
        .collect::<Result<_>>()?;
    let client = Arc::new(Client {
        mode: args.mode,
        http,
        sources,
        http_addrs: std::iter::once(args.http)
            .chain(args.also_http.iter().copied())
            .collect(),
        tftp_addr: args.tftp,
        blksize: args.blksize,
        timeout,
        retries: args.retries,
        counters: Counters::default(),
    });
    let expected: Arc<HashMap<String, Vec<u8>>> = Arc::new(match &args.check_dir {
        Some(dir) => {
            let mut files = HashMap::new();
            let mut names = vec![COMMON_FILE.to_string()];
            if !args.unknown {
                names.extend((0..args.phones).map(|i| format!("{}.cfg", mac(i, false))));
            }
            for name in names {
                let path = dir.join(&name);
                let bytes =
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                files.insert(name, bytes);
            }
            files
        }
        None => HashMap::new(),
    });

    let before = sample(&args.server_pid)?;
    let client_before = self_ticks();
    let drops_before = udp_rcvbuf_errors();
    let total = args.phones.saturating_mul(args.rounds);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.duration.max(0.0));
    let boot_over = Duration::from_secs_f64(args.boot_over.max(0.0));
    let done = Arc::new(AtomicBool::new(false));
    let peak_rss = Arc::new(AtomicU64::new(before.rss_kb));
    let watcher = {
        let (pids, done, peak) = (args.server_pid.clone(), done.clone(), peak_rss.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) && !pids.is_empty() {
                if let Ok(s) = sample(&pids) {
                    peak.fetch_max(s.rss_kb, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency.min(total.max(1)) {
        let (client, next, expected) = (client.clone(), next.clone(), expected.clone());
        let (phones, unknown, mac_file_only) = (args.phones, args.unknown, args.mac_file_only);
        workers.spawn(async move {
            let mut tally = Tally::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let due = started + boot_over.mul_f64(i as f64 / total as f64);
                if due.max(Instant::now()) >= deadline {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                let source = i % client.sources.len();
                let node = i % client.http_addrs.len();
                let mac = mac(i % phones, unknown);
                let mac_file = format!("{mac}.cfg");
                let files = [(COMMON_FILE, true), (mac_file.as_str(), !unknown)];
                let files = if mac_file_only {
                    &files[1..]
                } else {
                    &files[..]
                };
                for &(name, want_found) in files {
                    let t0 = Instant::now();
                    let outcome = client.fetch(source, node, name, &mac).await;
                    let elapsed = t0.elapsed();
                    let error = match (outcome, want_found) {
                        (Outcome::Body(body), true) => {
                            tally.bytes += body.len() as u64;
                            match expected.get(name) {
                                Some(want) if *want != body => {
                                    Some(format!("{name}: bytes differ from the static file"))
                                }
                                _ => None,
                            }
                        }
                        (Outcome::Body(_), false) => Some(format!("{name}: served, unknown MAC")),
                        (Outcome::NotFound, false) => {
                            tally.not_found += 1;
                            None
                        }
                        (Outcome::NotFound, true) => Some(format!("{name}: not found")),
                        (Outcome::Failed(e), _) => Some(format!("{name}: {e}")),
                    };
                    match error {
                        None => {
                            tally.ok += 1;
                            tally.latencies_us.push(elapsed.as_micros() as u64);
                        }
                        Some(e) => {
                            tally.failed += 1;
                            if tally.errors.len() < 3 {
                                tally.errors.push(e);
                            }
                        }
                    }
                }
            }
            tally
        });
    }
    let mut all = Tally::default();
    while let Some(tally) = workers.join_next().await {
        let tally = tally?;
        all.latencies_us.extend(tally.latencies_us);
        all.ok += tally.ok;
        all.not_found += tally.not_found;
        all.failed += tally.failed;
        all.bytes += tally.bytes;
        if all.errors.len() < 5 {
            all.errors.extend(tally.errors);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    watcher.await?;
    let after = sample(&args.server_pid)?;
    for e in &all.errors {
        eprintln!("error: {e}");
    }
    all.latencies_us.sort_unstable();
    let percentile = |p: usize| -> f64 {
        let v = &all.latencies_us;
        if v.is_empty() {
            return 0.0;
        }
        v[(v.len() * p / 100).min(v.len() - 1)] as f64 / 1000.0
    };
    Ok(Report {
        label: args.label.clone(),
        mode: args.mode,
        blksize: args.blksize,
        unknown: args.unknown,
        mac_file_only: args.mac_file_only,
        concurrency: args.concurrency,
        phones: args.phones,
        rounds: args.rounds,
        transfers: all.ok,
        not_found: all.not_found,
        failed: all.failed,
        bytes: all.bytes,
        seconds: elapsed,
        p50_ms: percentile(50),
        p99_ms: percentile(99),
        retransmits: client.counters.retransmits.load(Ordering::Relaxed),
        duplicates: client.counters.duplicates.load(Ordering::Relaxed),
        reused_port_stalls: client.counters.reused_port_stalls.load(Ordering::Relaxed),
        udp_rcvbuf_drops: match (drops_before, udp_rcvbuf_errors()) {
            (Some(before), Some(after)) => after.saturating_sub(before),
            _ => 0,
        },
        server: (!args.server_pid.is_empty()).then(|| ServerUse {
            rss_kb: after.rss_kb,
            peak_rss_kb: peak_rss.load(Ordering::Relaxed).max(after.rss_kb),
            cpu_seconds: after.ticks.saturating_sub(before.ticks) as f64 / CLOCK_TICKS_PER_SEC,
        }),
        client_cpu_seconds: self_ticks().saturating_sub(client_before) as f64 / CLOCK_TICKS_PER_SEC,
    })
}

struct ServerUse {
    rss_kb: u64,
    peak_rss_kb: u64,
    cpu_seconds: f64,
}

struct Report {
    label: String,
    mode: Mode,
    blksize: u16,
    unknown: bool,
    mac_file_only: bool,
    concurrency: usize,
    phones: usize,
    rounds: usize,
    /// Files answered as expected (a body, or not-found for an unknown MAC).
    transfers: u64,
    not_found: u64,
    failed: u64,
    bytes: u64,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
    retransmits: u64,
    duplicates: u64,
    reused_port_stalls: u64,
    udp_rcvbuf_drops: u64,
    server: Option<ServerUse>,
    client_cpu_seconds: f64,
}

impl Report {
    fn mode_name(&self) -> String {
        match self.mode {
            Mode::HttpKeepalive => "http-keepalive".into(),
            Mode::HttpClose => "http-close".into(),
            Mode::Tftp => format!("tftp/{}", self.blksize),
        }
    }

    fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.transfers as f64 / self.seconds
        } else {
            0.0
        }
    }

    fn human(&self) -> String {
        let mut line = format!(
            "{}{}{} c={} phones={}: {} transfers in {:.2}s = {:.0}/s, {} failed, p50 {:.2} ms, p99 {:.2} ms, {} retransmits, {} duplicate blocks",
            if self.label.is_empty() {
                String::new()
            } else {
                format!("{} ", self.label)
            },
            self.mode_name(),
            if self.unknown { " unknown" } else { "" },
            self.concurrency,
            self.phones,
            self.transfers,
            self.seconds,
            self.rate(),
            self.failed,
            self.p50_ms,
            self.p99_ms,
            self.retransmits,
            self.duplicates,
        );
        if self.reused_port_stalls > 0 {
            line.push_str(&format!(
                " ({} first RRQs unanswered from a local port reused within {}s)",
                self.reused_port_stalls,
                PORT_REUSE_WINDOW.as_secs()
            ));
        }
        if self.udp_rcvbuf_drops > 0 {
            line.push_str(&format!(
                ", {} UDP datagrams dropped on full receive buffers",
                self.udp_rcvbuf_drops
            ));
        }
        if let Some(s) = &self.server {
            line.push_str(&format!(
                ", server RSS {:.1} MiB (peak {:.1}), server CPU {:.2}s ({:.0} us/transfer)",
                s.rss_kb as f64 / 1024.0,
                s.peak_rss_kb as f64 / 1024.0,
                s.cpu_seconds,
                self.cpu_per_transfer_us(s),
            ));
        }
        line.push_str(&format!(", client CPU {:.2}s", self.client_cpu_seconds));
        line
    }

    fn cpu_per_transfer_us(&self, s: &ServerUse) -> f64 {
        let attempts = self.transfers + self.failed;
        if attempts == 0 {
            0.0
        } else {
            s.cpu_seconds * 1e6 / attempts as f64
        }
    }

    fn json(&self) -> String {
        let server = self.server.as_ref();
        serde_json::json!({
            "label": self.label,
            "mode": self.mode_name(),
            "blksize": self.blksize,
            "unknown": self.unknown,
            "mac_file_only": self.mac_file_only,
            "concurrency": self.concurrency,
            "phones": self.phones,
            "rounds": self.rounds,
            "transfers": self.transfers,
            "not_found": self.not_found,
            "failed": self.failed,
            "bytes": self.bytes,
            "seconds": self.seconds,
            "transfers_per_sec": self.rate(),
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "retransmits": self.retransmits,
            "duplicate_blocks": self.duplicates,
            "reused_port_stalls": self.reused_port_stalls,
            "udp_rcvbuf_drops": self.udp_rcvbuf_drops,
            "server_rss_kb": server.map(|s| s.rss_kb),
            "server_peak_rss_kb": server.map(|s| s.peak_rss_kb),
            "server_cpu_seconds": server.map(|s| s.cpu_seconds),
            "server_cpu_us_per_transfer": server.map(|s| self.cpu_per_transfer_us(s)),
            "client_cpu_seconds": self.client_cpu_seconds,
        })
        .to_string()
    }
}

/// The results of several runs, one row per server and case, each other
/// server compared with the baseline measured in the same case.
fn table(file: &Path, baseline: &str) -> Result<String> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut cases: Vec<(String, Vec<serde_json::Value>)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let run: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not a JSON line", file.display(), n + 1))?;
        let flag = |key: &str, text: &'static str| {
            if run[key].as_bool().unwrap_or(false) {
                text
            } else {
                ""
            }
        };
        let case = format!(
            "{}{}{} c={} x{}",
            run["mode"].as_str().unwrap_or("?"),
            flag("unknown", " unknown MACs"),
            flag("mac_file_only", ", MAC files only"),
            run["concurrency"],
            run["rounds"],
        );
        match cases.iter_mut().find(|(c, _)| *c == case) {
            Some((_, runs)) => runs.push(run),
            None => cases.push((case, vec![run])),
        }
    }
    let num = |run: &serde_json::Value, key: &str| run[key].as_f64().unwrap_or(f64::NAN);
    // A run without --server-pid has no CPU or RSS to show.
    let fixed = |v: f64, decimals: usize| {
        if v.is_finite() {
            format!("{v:.decimals$}")
        } else {
            "-".into()
        }
    };
    let ratio = |a: f64, b: f64| {
        if a.is_finite() && b.is_finite() && b > 0.0 {
            format!("{:.2}", a / b)
        } else {
            "-".into()
        }
    };
    let mut out = String::from(
        "| case | server | transfers/s | ÷ | p50 ms | p99 ms | ÷ | failed | retransmits | reused-port stalls / UDP rcvbuf drops | CPU us/transfer | ÷ | peak RSS MiB | ÷ |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (case, runs) in &cases {
        let base = runs.iter().find(|r| r["label"] == baseline);
        for run in runs {
            let is_base = run["label"] == baseline;
            let vs = |key: &str| match base {
                Some(b) if !is_base => ratio(num(b, key), num(run, key)),
                _ => String::new(),
            };
            out.push_str(&format!(
                "| {case} | {} | {:.0} | {} | {:.2} | {:.2} | {} | {} | {} | {} / {} | {} | {} | {} | {} |\n",
                run["label"].as_str().unwrap_or("?"),
                num(run, "transfers_per_sec"),
                vs("transfers_per_sec"),
                num(run, "p50_ms"),
                num(run, "p99_ms"),
                vs("p99_ms"),
                run["failed"],
                run["retransmits"],
                run["reused_port_stalls"],
                run["udp_rcvbuf_drops"],
                fixed(num(run, "server_cpu_us_per_transfer"), 0),
                vs("server_cpu_us_per_transfer"),
                fixed(num(run, "server_peak_rss_kb") / 1024.0, 1),
                vs("server_peak_rss_kb"),
            ));
        }
    }
    Ok(out)
}

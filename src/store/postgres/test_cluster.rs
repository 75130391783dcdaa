//! A throwaway PostgreSQL cluster, for tests only: the store's suite and
//! the integration tests run against a real database, never a mock.
//!
//! Public so the integration tests (a separate crate) can use it; nothing
//! in the server calls it. It panics on any failure: a test without its
//! database cannot go on, and the panic says why.
//!
//! A cluster lives in a temporary directory, on a free loopback port with
//! its socket beside it, and is stopped when dropped. PostgreSQL refuses to
//! run as root, so as root (CI) its programs run as the `postgres` user
//! Debian's package creates. A static cluster is never dropped: a watchdog
//! process stops it and removes its directory once the test process is gone.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Clusters started by this process, for unique directories.
static STARTED: AtomicU64 = AtomicU64::new(0);

/// A running PostgreSQL cluster.
pub struct TestCluster {
    /// The directory holding its data, socket and log.
    dir: PathBuf,
    /// PostgreSQL's programs (`initdb`, `pg_ctl`, `createdb`, `psql`).
    bin: PathBuf,
    /// The loopback port it listens on.
    port: u16,
    /// Databases created so far, for unique names.
    databases: AtomicU64,
}

impl TestCluster {
    /// One cluster for the whole test process, started on first use; each
    /// test takes a database of its own on it ([`TestCluster::database`]).
    pub fn shared() -> &'static TestCluster {
        static SHARED: OnceLock<TestCluster> = OnceLock::new();
        SHARED.get_or_init(TestCluster::start)
    }

    /// A cluster of its own, for a test that stops or restarts it.
    pub fn start() -> TestCluster {
        let bin = postgres_bin();
        let n = STARTED.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("deskboot-pg-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the cluster's directory");
        if running_as_root() {
            run(Command::new("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(&dir));
        }
        let cluster = TestCluster {
            port: free_port(),
            dir,
            bin,
            databases: AtomicU64::new(0),
        };
        let data = cluster.data();
        run(cluster
            .as_postgres("initdb")
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data));
        cluster.watch_over();
        cluster.resume();
        cluster
    }

    /// A new empty database on the cluster: its URL.
    pub fn database(&self) -> String {
        let name = format!("t{}", self.databases.fetch_add(1, Ordering::SeqCst));
        run(Command::new(self.bin.join("createdb"))
            .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(self.port.to_string())
            .arg(&name));
        self.url(&name)
    }

    /// The URL of a database on the cluster.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Runs SQL on the database at `url` (what a test tampers with).
    pub fn sql(&self, url: &str, sql: &str) -> String {
        run(Command::new(self.bin.join("psql")).args([
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
            url,
            "-c",
            sql,
        ]))
    }

    /// Stops the cluster at once, as a crash would.
    pub fn stop(&self) {
        run(self
            .as_postgres("pg_ctl")
            .args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(self.data()));
    }

    /// Starts the cluster again (after [`TestCluster::stop`]), on the same port.
    pub fn resume(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300",
            self.port,
            self.dir.display()
        );
        run(self
            .as_postgres("pg_ctl")
            .args(["start", "-w", "-o", &options, "-l"])
            .arg(self.dir.join("log"))
            .arg("-D")
            .arg(self.data()));
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// One of PostgreSQL's programs, run as the `postgres` user when we are root.
    fn as_postgres(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if running_as_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    /// Starts a process that stops the cluster and removes its directory
    /// once this process has ended, however it ended.
    fn watch_over(&self) {
        let stop = self.as_postgres("pg_ctl");
        let mut line: Vec<String> = std::iter::once(stop.get_program())
            .chain(stop.get_args())
            .map(|part| shell_quoted(&part.to_string_lossy()))
            .collect();
        line.extend(
            ["stop", "-m", "immediate", "-D"]
                .iter()
                .map(|part| part.to_string()),
        );
        line.push(shell_quoted(&self.data().to_string_lossy()));
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            stop = line.join(" "),
            dir = shell_quoted(&self.dir.to_string_lossy()),
        );
        // In the background of a shell that ends at once: the watchdog
        // outlives this process, and no child of ours is left unwaited.
        run(Command::new("sh").args(["-c", &format!("({script}) >/dev/null 2>&1 &")]));
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let _ = self
            .as_postgres("pg_ctl")
            .args(["stop", "-m", "immediate", "-D"])
            .arg(self.data())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The directory of the newest PostgreSQL installed.
fn postgres_bin() -> PathBuf {
    let mut installed: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    installed.sort();
    if let Some((_, bin)) = installed.pop() {
        return bin;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|dir| dir.join("initdb").exists())
        .expect("PostgreSQL is not installed (no initdb in /usr/lib/postgresql/*/bin or on PATH): scripts/test installs it")
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|me| me.uid() == 0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}

fn shell_quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Runs a command to its end; its output, or a panic with what it said.
fn run(command: &mut Command) -> String {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{:?}: {e}", command.get_program()));
    assert!(
        output.status.success(),
        "{:?} {:?} failed: {}{}",
        command.get_program(),
        command.get_args().collect::<Vec<_>>(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

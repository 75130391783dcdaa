//! Render workers: child processes that render uploaded templates, so a
//! render over its budget can be stopped (why: [`crate::render`], "The
//! render budget").
//!
//! A thread that renders an upload keeps one worker, `deskboot
//! render-worker` (this same program), and talks to it over a Unix socket
//! pair: the sources of the templates in force first (and again only when
//! they change), then one job per render, the template's name and the
//! phone's view as JSON. The answer may cost the worker at most
//! [`RENDER_TIME`] of CPU time; past that the thread kills the worker, and
//! the render fails as over budget. CPU time, not time on the clock: on a
//! loaded server (a boot storm, a build beside it) a worker may wait for a
//! core, and a good template must not fail for that. So that a thread never
//! waits without end, a render is also stopped, over budget the same way,
//! once it has taken [`RENDER_WALL_TIME`] on the clock. A worker caps its
//! own memory at [`WORKER_MEMORY`]: an allocation past it aborts the
//! worker, which the thread sees as the socket closing. Either way the
//! thread's next upload render starts a fresh worker. In case no one is
//! left to kill it, a worker also ends itself when a render outlives twice
//! [`RENDER_WALL_TIME`] or when its server goes away.
//!
//! There are as many workers as threads that have rendered an upload (the
//! render threads, one per core, and the blocking threads that check
//! administrators' changes); each ends with its thread.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, parent_id};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::time::{ClockId, clock_getcpuclockid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tera::{Context, Tera};

use crate::render::{self, Limit, RenderError, TemplateSet};

/// How much CPU time one render of an upload may take. A phone's file
/// renders in about 0.1 ms (BENCHMARKS.md, `render_device_only`): ten
/// thousand times that is a template that does not end, not a slow one.
pub const RENDER_TIME: Duration = Duration::from_secs(1);

/// How long one render of an upload may take on the clock, whatever CPU
/// time its worker was given: a worker starved this long by a loaded
/// machine is stopped too, so the thread waiting for it is not held.
pub const RENDER_WALL_TIME: Duration = Duration::from_secs(10);

/// The least time a thread waits before it looks at its worker's CPU time
/// again, so that a render near its budget does not make it spin.
const CPU_CHECK_EVERY: Duration = Duration::from_millis(10);

/// The memory a worker may have for its data. It holds every template
/// (a few MiB compiled) and one phone's view and file; a template that
/// needs more is building something huge.
pub const WORKER_MEMORY: u64 = 256 << 20;

/// The command-line word that makes `deskboot` a render worker.
pub const WORKER_COMMAND: &str = "render-worker";

/// How long a worker may take to start and compile the templates in force:
/// far more than it needs, since compiling is bounded and the server has
/// compiled the same set already.
const LOAD_TIME: Duration = Duration::from_secs(30);

/// How often a worker checks that its render has not outlived the budget
/// and that its server is still there.
const WATCH_EVERY: Duration = Duration::from_millis(100);

/// The largest frame either side accepts. The largest real ones are a
/// template set (the built-ins are under 1 MiB) and the view of a phone
/// that lists a directory of many thousand users.
const MAX_FRAME: usize = 64 << 20;

/// Why a worker could not render, whatever the template.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The worker program could not be started.
    #[error("cannot start the render worker {}: {error}", program.display())]
    Start {
        /// The program.
        program: PathBuf,
        /// What failed.
        error: io::Error,
    },
    /// Talking to the worker failed.
    #[error("the render worker's socket failed: {0}")]
    Io(io::Error),
    /// The worker answered something its protocol does not say.
    #[error("the render worker answered out of turn")]
    Protocol,
    /// The worker ended while it compiled the templates.
    #[error("the render worker ended while it loaded the templates ({0})")]
    Lost(String),
    /// The worker took more than [`LOAD_TIME`] to compile the templates.
    #[error("the render worker took more than {} s to load the templates", LOAD_TIME.as_secs())]
    SlowLoad,
}

/// Where uploads render: workers run `<program> render-worker`.
#[derive(Debug, Clone)]
pub struct Sandbox {
    program: PathBuf,
}

impl Sandbox {
    /// Workers run `program`, a deskboot binary. Tests name the one Cargo
    /// built: theirs is the test harness.
    pub fn new(program: impl Into<PathBuf>) -> Sandbox {
        Sandbox {
            program: program.into(),
        }
    }

    /// Workers run this very program: `/proc/self/exe` is still the running
    /// binary once an upgrade has replaced its file.
    pub fn this_binary() -> Sandbox {
        Sandbox::new("/proc/self/exe")
    }

    /// Renders `template` of `set` for `view` on this thread's worker,
    /// starting one if needed, within the render budget.
    pub(crate) fn render(
        &self,
        set: &TemplateSet,
        template: &str,
        view: &impl Serialize,
    ) -> Result<Vec<u8>, RenderError> {
        let job = Job {
            set: set.id(),
            template,
            view,
        };
        let job =
            serde_json::to_vec(&job).map_err(|e| RenderError::Other(format!("{template}: {e}")))?;
        WORKER.with_borrow_mut(|kept| {
            // One that ended while idle (killed by hand, say) must not pass
            // for this template's failure.
            let usable = kept.take_if(|w| w.program == self.program && w.running());
            *kept = None;
            let mut worker = match usable {
                Some(worker) => worker,
                None => Worker::start(&self.program)?,
            };
            if worker.loaded != Some(set.id()) {
                worker.load(set)?;
            }
            let over_budget = |limit| RenderError::OverBudget {
                template: template.to_string(),
                limit,
            };
            match worker.exchange(Frame::Render, &job, Allowance::RENDER) {
                Ok((Frame::Done, body)) => {
                    *kept = Some(worker);
                    Ok(body)
                }
                Ok((Frame::Failed, error)) => {
                    *kept = Some(worker);
                    Err(decode(&error))
                }
                Ok(_) | Err(Broken::Protocol) => Err(WorkerError::Protocol.into()),
                Err(Broken::TimedOut) => {
                    let ended = worker.end();
                    tracing::warn!(template, worker = %ended, "a render ran out of time: its worker was stopped");
                    Err(over_budget(Limit::Time))
                }
                Err(Broken::Closed) => {
                    let ended = worker.end();
                    tracing::warn!(template, worker = %ended, "a render's worker ended, out of memory or crashed");
                    Err(over_budget(Limit::Memory))
                }
                Err(Broken::Io(e)) => Err(WorkerError::Io(e).into()),
            }
        })
    }
}

thread_local! {
    /// This thread's worker, started by its first render of an upload.
    static WORKER: RefCell<Option<Worker>> = const { RefCell::new(None) };
}

/// A running worker and the socket to it.
struct Worker {
    program: PathBuf,
    child: Child,
    socket: UnixStream,
    /// The [`TemplateSet`] it has compiled.
    loaded: Option<u64>,
}

/// How long an exchange waits for the worker's answer.
#[derive(Debug, Clone, Copy)]
struct Allowance {
    /// The CPU time the worker may spend on it, when that is counted.
    cpu: Option<Duration>,
    /// The time on the clock, whatever CPU time the worker got.
    wall: Duration,
}

impl Allowance {
    /// A render: the render budget.
    const RENDER: Allowance = Allowance {
        cpu: Some(RENDER_TIME),
        wall: RENDER_WALL_TIME,
    };
    /// Compiling the templates, bounded by the clock alone.
    const LOAD: Allowance = Allowance {
        cpu: None,
        wall: LOAD_TIME,
    };
}

/// An exchange's [`Allowance`] being used up.
struct Allowed {
    started: Instant,
    wall: Duration,
    cpu: Option<CpuAllowed>,
}

/// The CPU part of an [`Allowed`]: the worker's CPU clock, what it read
/// when the exchange started, and how much more it may read.
struct CpuAllowed {
    clock: ClockId,
    at_start: Duration,
    allowed: Duration,
}

impl CpuAllowed {
    /// The CPU time the worker has spent since the exchange started.
    fn spent(&self) -> Option<Duration> {
        let now = cpu_time(self.clock)?;
        Some(now.saturating_sub(self.at_start))
    }
}

/// The CPU time used so far by the process whose clock `clock` is; none
/// once it cannot be read (the worker has ended: its socket says so).
fn cpu_time(clock: ClockId) -> Option<Duration> {
    clock.now().ok().map(Duration::from)
}

impl Allowed {
    /// Starts using `allowance` for `child`. Without a readable CPU clock
    /// the clock on the wall alone bounds the exchange.
    fn start(allowance: Allowance, child: &Child) -> Allowed {
        let cpu = allowance.cpu.and_then(|allowed| {
            let pid = Pid::from_raw(i32::try_from(child.id()).ok()?);
            let clock = clock_getcpuclockid(pid).ok()?;
            Some(CpuAllowed {
                clock,
                at_start: cpu_time(clock)?,
                allowed,
            })
        });
        Allowed {
            started: Instant::now(),
            wall: allowance.wall,
            cpu,
        }
    }

    /// How long to wait for the answer before looking again; none once
    /// the allowance is used up. A worker renders on one thread, so it
    /// cannot spend more CPU time than passes on the clock: waiting for
    /// what is left of its CPU time never overshoots it.
    fn next_wait(&self) -> Option<Duration> {
        let wall_left = self.wall.saturating_sub(self.started.elapsed());
        if wall_left.is_zero() {
            return None;
        }
        let Some(cpu) = &self.cpu else {
            return Some(wall_left);
        };
        let cpu_left = match cpu.spent() {
            Some(spent) => cpu.allowed.saturating_sub(spent),
            None => wall_left,
        };
        if cpu_left.is_zero() {
            return None;
        }
        Some(wall_left.min(cpu_left.max(CPU_CHECK_EVERY)))
    }
}

/// How an exchange with a worker failed.
enum Broken {
    /// No answer within its [`Allowance`].
    TimedOut,
    /// The worker closed its end: it ended.
    Closed,
    /// The answer made no sense.
    Protocol,
    /// The socket failed.
    Io(io::Error),
}

impl From<io::Error> for Broken {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Broken::TimedOut,
            io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::UnexpectedEof => Broken::Closed,
            _ => Broken::Io(e),
        }
    }
}

impl Worker {
    fn start(program: &Path) -> Result<Worker, WorkerError> {
        let (socket, theirs) = UnixStream::pair().map_err(WorkerError::Io)?;
        let theirs = OwnedFd::from(theirs);
        let input = theirs.try_clone().map_err(WorkerError::Io)?;
        // Both socket ends are close-on-exec, so a worker started by another
        // thread at the same time does not keep this one's end open.
        let child = Command::new(program)
            .arg0("deskboot")
            .arg(WORKER_COMMAND)
            .stdin(Stdio::from(input))
            .stdout(Stdio::from(theirs))
            .spawn()
            .map_err(|error| WorkerError::Start {
                program: program.to_path_buf(),
                error,
            })?;
        Ok(Worker {
            program: program.to_path_buf(),
            child,
            socket,
            loaded: None,
        })
    }

    /// Has the worker compile `set`.
    fn load(&mut self, set: &TemplateSet) -> Result<(), RenderError> {
        let templates: Vec<(&str, &str)> = set.sources().collect();
        let load = Load {
            set: set.id(),
            templates,
        };
        let load = serde_json::to_vec(&load).map_err(|e| RenderError::Other(e.to_string()))?;
        match self.exchange(Frame::Load, &load, Allowance::LOAD) {
            Ok((Frame::Done, _)) => {
                self.loaded = Some(set.id());
                Ok(())
            }
            Ok((Frame::Failed, error)) => Err(decode(&error)),
            Ok(_) | Err(Broken::Protocol) => Err(WorkerError::Protocol.into()),
            Err(Broken::TimedOut) => Err(WorkerError::SlowLoad.into()),
            Err(Broken::Closed) => Err(WorkerError::Lost(self.end()).into()),
            Err(Broken::Io(e)) => Err(WorkerError::Io(e).into()),
        }
    }

    /// Sends one frame and waits for the answer, within `allowance`.
    fn exchange(
        &mut self,
        kind: Frame,
        payload: &[u8],
        allowance: Allowance,
    ) -> Result<(Frame, Vec<u8>), Broken> {
        let allowed = Allowed::start(allowance, &self.child);
        self.socket.set_write_timeout(Some(allowance.wall))?;
        write_frame(&mut self.socket, kind, payload)?;
        let mut head = [0; HEAD];
        read_within(&mut self.socket, &mut head, &allowed)?;
        let (kind, len) = parse_head(head).ok_or(Broken::Protocol)?;
        let mut body = vec![0; len];
        read_within(&mut self.socket, &mut body, &allowed)?;
        Ok((kind, body))
    }

    /// Whether the worker has not ended.
    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops the worker if it still runs; says how it ended.
    fn end(&mut self) -> String {
        // Fails only once the worker has been waited for: nothing to stop.
        let _ = self.child.kill();
        match self.child.wait() {
            Ok(status) => status.to_string(),
            Err(e) => e.to_string(),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.end();
    }
}

/// Fills `buf` from `socket`, unless `allowed` is used up first.
fn read_within(socket: &mut UnixStream, buf: &mut [u8], allowed: &Allowed) -> Result<(), Broken> {
    let mut filled = 0;
    while filled < buf.len() {
        let wait = allowed.next_wait().ok_or(Broken::TimedOut)?;
        socket.set_read_timeout(Some(wait))?;
        match socket.read(&mut buf[filled..]) {
            Ok(0) => return Err(Broken::Closed),
            Ok(n) => filled += n,
            // The wait is over: look at the allowance again.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// What a frame carries: the first byte of its head, followed by the
/// payload's length (4 bytes, little-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    /// To the worker: a [`Load`].
    Load = 1,
    /// To the worker: a [`Job`].
    Render = 2,
    /// From the worker: the rendered file (empty after a load).
    Done = 3,
    /// From the worker: a [`RenderError`] as JSON.
    Failed = 4,
}

/// The length of a frame's head.
const HEAD: usize = 5;

fn parse_head(head: [u8; HEAD]) -> Option<(Frame, usize)> {
    let kind = match head[0] {
        1 => Frame::Load,
        2 => Frame::Render,
        3 => Frame::Done,
        4 => Frame::Failed,
        _ => return None,
    };
    let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
    let len = usize::try_from(len).ok().filter(|len| *len <= MAX_FRAME)?;
    Some((kind, len))
}

fn write_frame(out: &mut impl Write, kind: Frame, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|_| payload.len() <= MAX_FRAME)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    let mut head = [kind as u8, 0, 0, 0, 0];
    head[1..].copy_from_slice(&len.to_le_bytes());
    out.write_all(&head)?;
    out.write_all(payload)?;
    out.flush()
}

/// The templates to compile: a [`TemplateSet`] on the wire.
#[derive(Serialize, Deserialize)]
struct Load<T> {
    set: u64,
    templates: T,
}

/// One render: `view` is a [`render::FileView`] on the wire.
#[derive(Serialize, Deserialize)]
struct Job<S, V> {
    set: u64,
    template: S,
    view: V,
}

/// A render's error, as a worker sends it.
fn encode(error: RenderError) -> Vec<u8> {
    serde_json::to_vec(&error).unwrap_or_else(|_| {
        // Only the server's own failures do not serialize; say what it was.
        let error = RenderError::Other(error.to_string());
        serde_json::to_vec(&error).unwrap_or_default()
    })
}

/// A worker's error, as the server reads it.
fn decode(payload: &[u8]) -> RenderError {
    serde_json::from_slice(payload).unwrap_or_else(|e| {
        RenderError::Other(format!("the render worker's error is unreadable: {e}"))
    })
}

/// `deskboot render-worker`: renders what the server sends on standard
/// input, answering on standard output, until the server closes them.
pub fn serve_worker() -> ExitCode {
    match getrlimit(Resource::RLIMIT_DATA) {
        Ok((soft, _)) if soft <= WORKER_MEMORY => {}
        _ => return restart_with_memory_limit(),
    }
    let clock = Instant::now();
    let rendering = Arc::new(AtomicU64::new(IDLE));
    watch(Arc::clone(&rendering), clock);
    let mut input = io::stdin().lock();
    let mut output = io::stdout().lock();
    let mut loaded: Option<(u64, Tera)> = None;
    loop {
        let (kind, payload) = match read_frame(&mut input) {
            Ok(Some(frame)) => frame,
            Ok(None) => return ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("deskboot {WORKER_COMMAND}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let answer = match kind {
            Frame::Load => load(&payload).map(|set| {
                loaded = Some(set);
                Vec::new()
            }),
            Frame::Render => {
                rendering.store(millis_since(clock), Ordering::Relaxed);
                let rendered = render_job(&payload, loaded.as_ref());
                rendering.store(IDLE, Ordering::Relaxed);
                rendered
            }
            Frame::Done | Frame::Failed => Err(RenderError::Other(
                "a worker answers, it is not answered".into(),
            )),
        };
        let sent = match answer {
            Ok(body) => write_frame(&mut output, Frame::Done, &body),
            Err(error) => write_frame(&mut output, Frame::Failed, &encode(error)),
        };
        if let Err(e) = sent {
            eprintln!("deskboot {WORKER_COMMAND}: {e}");
            return ExitCode::FAILURE;
        }
    }
}

/// Sets [`WORKER_MEMORY`] and starts the worker again under it. The
/// allocator reserved its arena (a GiB, counted as data though unused) as
/// the process started, before any limit could be set; started under the
/// limit, it reserves no more than that.
fn restart_with_memory_limit() -> ExitCode {
    if let Err(e) = setrlimit(Resource::RLIMIT_DATA, WORKER_MEMORY, WORKER_MEMORY) {
        eprintln!("deskboot {WORKER_COMMAND}: cannot limit its memory: {e}");
        return ExitCode::FAILURE;
    }
    let mut args = std::env::args_os();
    let mut again = Command::new("/proc/self/exe");
    if let Some(name) = args.next() {
        again.arg0(name);
    }
    let error = again.args(args).exec();
    eprintln!("deskboot {WORKER_COMMAND}: cannot start again: {error}");
    ExitCode::FAILURE
}

/// What the watched clock holds between renders.
const IDLE: u64 = 0;

/// Milliseconds since `clock`, never [`IDLE`].
fn millis_since(clock: Instant) -> u64 {
    u64::try_from(clock.elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Ends the worker when its render outlives twice [`RENDER_WALL_TIME`]
/// (its server should have killed it by then) or when its server has gone
/// (it now has another parent).
fn watch(rendering: Arc<AtomicU64>, clock: Instant) {
    let server = parent_id();
    let most = u64::try_from((2 * RENDER_WALL_TIME).as_millis()).unwrap_or(u64::MAX);
    thread::spawn(move || {
        loop {
            thread::sleep(WATCH_EVERY);
            if parent_id() != server {
                std::process::exit(0);
            }
            let since = rendering.load(Ordering::Relaxed);
            if since != IDLE && millis_since(clock).saturating_sub(since) > most {
                std::process::abort();
            }
        }
    });
}

/// Reads one frame; None when the input is closed between frames.
fn read_frame(input: &mut impl Read) -> io::Result<Option<(Frame, Vec<u8>)>> {
    let mut head = [0; HEAD];
    match input.read(&mut head[..1])? {
        0 => return Ok(None),
        _ => input.read_exact(&mut head[1..])?,
    }
    let (kind, len) = parse_head(head)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not a frame"))?;
    let mut payload = vec![0; len];
    input.read_exact(&mut payload)?;
    Ok(Some((kind, payload)))
}

fn load(payload: &[u8]) -> Result<(u64, Tera), RenderError> {
    let load: Load<Vec<(String, String)>> =
        serde_json::from_slice(payload).map_err(|e| RenderError::Other(e.to_string()))?;
    Ok((load.set, render::compile(load.templates)?))
}

fn render_job(payload: &[u8], loaded: Option<&(u64, Tera)>) -> Result<Vec<u8>, RenderError> {
    let job: Job<String, serde_json::Value> =
        serde_json::from_slice(payload).map_err(|e| RenderError::Other(e.to_string()))?;
    let Some((_, tera)) = loaded.filter(|(set, _)| *set == job.set) else {
        return Err(RenderError::Other(
            "the job's templates are not loaded".into(),
        ));
    };
    let context = Context::from_serialize(&job.view)?;
    catch_unwind(AssertUnwindSafe(|| {
        render::render_with(tera, &job.template, &context)
    }))
    .unwrap_or_else(|_| {
        Err(RenderError::Other(format!(
            "{}: the render panicked",
            job.template
        )))
    })
}

//! Instructions per record on every thread, counted by callgrind (issue 16).
//!
//! The child emits `WARM_UP` events and then `n` more under one path; the driver runs it
//! under `valgrind --tool=callgrind --separate-threads=yes` with `n` events and with none,
//! and reads every thread's totals from the per-thread files (`<out>-01`, `<out>-02`, …).
//! The difference between the two runs is what the `n` events cost, so the setup, the
//! warm-up and the shutdown cancel out:
//!
//! - the calling thread (valgrind's thread 1, the main thread, which emits every event):
//!   its difference over `n`, per *emitted* event;
//! - every other thread (the sink's worker, its runtime's threads, the peer's worker or
//!   tasks): the difference of their sum over the difference of the records *delivered*
//!   (lines that reached the file, entries the receiver counted), per delivered record.
//!
//! Each thread's file is named after the functions it ran ([`role`]), so the split can be
//! checked; the child also prints the names of its threads (`/proc/self/task/*/comm`).
//! The Loki paths push to the counting receiver (`compare serve`), a process of its own
//! that is not run under valgrind.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use sinkwatch::{FileSink, LokiSink, SinkLayer};
use tracing_subscriber::layer::SubscriberExt as _;

use crate::common::{emit, print_result};
use crate::report::Run;

const WARM_UP: u64 = 100;

/// The paths measured, in the order they are reported.
pub const PATHS: [&str; 5] = ["noop", "file", "appender", "loki", "tracing-loki"];

pub fn label(path: &str) -> &'static str {
    match path {
        "noop" => "floor: a no-op layer (tracing's dispatch and field visiting)",
        "file" => "sinkwatch `SinkLayer` → default `FileSink`",
        "appender" => "fmt JSON layer → tracing-appender `non_blocking` (default)",
        "loki" => "sinkwatch `SinkLayer` → default `LokiSink`",
        "tracing-loki" => "tracing-loki (defaults)",
        _ => "?",
    }
}

/// The peer each sinkwatch path is compared with.
pub fn peer(path: &str) -> Option<&'static str> {
    match path {
        "file" => Some("appender"),
        "loki" => Some("tracing-loki"),
        _ => None,
    }
}

/// The child: emits under the chosen path, lets the writer finish, and prints the records
/// delivered (where the child can count them) and its threads' names.
pub fn run(path: &str, n: u64, dir: &Path) {
    let delivered = match path {
        "noop" => {
            let d = tracing::Dispatch::new(tracing_subscriber::registry().with(NoopLayer));
            emit_all(&d, n);
            Some(0)
        }
        "file" => Some(file(n, dir)),
        "appender" => Some(appender(n, dir)),
        "loki" => {
            loki(n);
            None
        }
        "tracing-loki" => {
            tracing_loki(n);
            None
        }
        other => panic!("unknown callgrind path {other}"),
    };
    let names = NAMES.get().cloned().unwrap_or_else(thread_names);
    let mut fields = vec![("threads", names.into())];
    if let Some(d) = delivered {
        fields.push(("delivered", d.into()));
    }
    print_result(&fields);
}

fn file(n: u64, dir: &Path) -> u64 {
    let sink = FileSink::builder(dir).build().expect("the file sink");
    let d =
        tracing::Dispatch::new(tracing_subscriber::registry().with(SinkLayer::new(sink.clone())));
    emit_all(&d, n);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(sink.flush()).expect("flush");
    rt.block_on(sink.shutdown(Duration::from_secs(60)))
        .stats
        .delivered
}

/// tracing-appender over `rolling::never`, its writer wrapped to count the lines its
/// worker wrote (one increment per `write`), so the child waits until every line is in
/// the file before it drops the guard (whose drop waits at most about a second, less than
/// a worker under valgrind may need).
fn appender(n: u64, dir: &Path) -> u64 {
    let written = Arc::new(LineCount::default());
    let file = Counted {
        inner: tracing_appender::rolling::never(dir, "app.log"),
        count: written.clone(),
        target: WARM_UP + n,
    };
    let (writer, guard) = tracing_appender::non_blocking(file);
    let d = tracing::Dispatch::new(
        tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().json().with_writer(writer)),
    );
    emit_all(&d, n);
    let lines = written.wait_for(WARM_UP + n, Duration::from_secs(120));
    drop(guard);
    lines
}

fn loki(n: u64) {
    let url = std::env::var("SINKWATCH_BENCH_URL").expect("SINKWATCH_BENCH_URL");
    let sink = LokiSink::builder(url)
        .label("service_name", "bench")
        .build()
        .expect("the Loki sink");
    let d =
        tracing::Dispatch::new(tracing_subscriber::registry().with(SinkLayer::new(sink.clone())));
    emit_all(&d, n);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(sink.flush()).expect("flush");
    rt.block_on(sink.shutdown(Duration::from_secs(60)));
}

/// tracing-loki with its defaults, its task on a two-thread runtime as in the Loki group.
fn tracing_loki(n: u64) {
    let url = std::env::var("SINKWATCH_BENCH_URL").expect("SINKWATCH_BENCH_URL");
    let rt = crate::common::runtime();
    let url = tracing_loki::url::Url::parse(&url).expect("the receiver's URL");
    let (layer, controller, task) = tracing_loki::builder()
        .label("service_name", "bench")
        .expect("a label")
        .build_controller_url(url)
        .expect("tracing-loki");
    let handle = rt.spawn(task);
    let d = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    emit_all(&d, n);
    rt.block_on(async {
        controller.shutdown().await;
        let _ = handle.await;
    });
}

/// Lines written so far, and a wake-up for the thread waiting for all of them.
#[derive(Default)]
struct LineCount {
    lines: AtomicU64,
    lock: Mutex<()>,
    reached: Condvar,
}

impl LineCount {
    /// Waits until `target` lines are written or `limit` has passed; returns the count.
    fn wait_for(&self, target: u64, limit: Duration) -> u64 {
        let until = Instant::now() + limit;
        let mut guard = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            let lines = self.lines.load(Ordering::Acquire);
            let now = Instant::now();
            if lines >= target || now >= until {
                return lines;
            }
            guard = self
                .reached
                .wait_timeout(guard, until - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }
}

/// A writer that counts the lines written through it (a `write` ending in a newline).
struct Counted<W> {
    inner: W,
    count: Arc<LineCount>,
    target: u64,
}

impl<W: std::io::Write> std::io::Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        if n == buf.len() && buf.last() == Some(&b'\n') {
            let lines = self.count.lines.fetch_add(1, Ordering::AcqRel) + 1;
            if lines == self.target {
                // Under the lock, so the waiter cannot miss it between its check and wait.
                let _guard = self.count.lock.lock();
                self.count.reached.notify_all();
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The thread names, read right after the last event (while every worker is alive).
static NAMES: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Emits the warm-up and `n` events under `dispatch`, then notes the thread names.
fn emit_all(dispatch: &tracing::Dispatch, n: u64) {
    tracing::dispatcher::with_default(dispatch, || (0..WARM_UP + n).for_each(emit));
    let _ = NAMES.set(thread_names());
}

/// The names of this process's threads, in the order of their thread ids.
fn thread_names() -> String {
    let mut tasks: Vec<(u64, String)> = std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let e = e.ok()?;
            let tid = e.file_name().to_str()?.parse().ok()?;
            let name = std::fs::read_to_string(e.path().join("comm")).ok()?;
            Some((tid, name.trim().to_owned()))
        })
        .collect();
    tasks.sort();
    tasks
        .into_iter()
        .map(|(_, name)| name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A layer that only visits the event's fields into a buffer on the stack.
struct NoopLayer;

struct StackBuf {
    buf: [u8; 512],
    len: usize,
}

impl StackBuf {
    fn put(&mut self, bytes: &[u8]) {
        let end = (self.len + bytes.len()).min(self.buf.len());
        self.buf[self.len..end].copy_from_slice(&bytes[..end - self.len]);
        self.len = end;
    }
}

impl std::fmt::Write for StackBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.put(s.as_bytes());
        Ok(())
    }
}

/// Copies each value's bytes (no number formatting: the floor is dispatch and visiting);
/// only `Debug` values (the message) go through `fmt`.
impl tracing::field::Visit for StackBuf {
    fn record_u64(&mut self, _: &tracing::field::Field, value: u64) {
        self.put(&value.to_ne_bytes());
    }

    fn record_f64(&mut self, _: &tracing::field::Field, value: f64) {
        self.put(&value.to_ne_bytes());
    }

    fn record_bool(&mut self, _: &tracing::field::Field, value: bool) {
        self.put(&[u8::from(value)]);
    }

    fn record_str(&mut self, _: &tracing::field::Field, value: &str) {
        self.put(value.as_bytes());
    }

    fn record_debug(&mut self, _: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self, "{value:?}");
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for NoopLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut buf = StackBuf {
            buf: [0; 512],
            len: 0,
        };
        event.record(&mut buf);
        std::hint::black_box(&buf);
    }
}

/// One thread of a callgrind run.
#[derive(Debug, Clone)]
pub struct Thread {
    /// Valgrind's thread number (the `-NN` of its file); 1 is the main thread.
    pub number: u32,
    /// What it is, from the functions it ran.
    pub role: &'static str,
    pub instructions: u64,
}

/// One child run under callgrind.
#[derive(Debug, Clone)]
struct Profile {
    threads: Vec<Thread>,
    delivered: u64,
    /// The child's thread names (`/proc/self/task/*/comm`, by thread id).
    names: String,
}

/// Names a thread after the functions in its callgrind file (first match wins).
fn role(number: u32, text: &str) -> &'static str {
    let has = |needle: &str| text.contains(needle);
    if number == 1 {
        return "calling thread (main)";
    }
    if has("tokio::runtime::scheduler::multi_thread::worker") {
        return if has("tracing_loki::BackgroundTask") {
            "tokio runtime worker (ran tracing-loki's task)"
        } else {
            "tokio runtime worker"
        };
    }
    if has("tokio::runtime::blocking::pool::Inner::run") {
        return if has("sinkwatch::sink::file") {
            "tokio blocking pool (the file sink's maintenance)"
        } else {
            "tokio blocking pool"
        };
    }
    if has("tracing_appender::worker") {
        return "tracing-appender worker";
    }
    if has("sinkwatch::deadline::run") {
        return "sinkwatch deadline timer";
    }
    // A sink's own thread runs its worker future with `block_on` on a current-thread runtime.
    let block_on = has("tokio::runtime::scheduler::current_thread::CoreGuard::block_on");
    if block_on && has("sinkwatch::sink::file") {
        return "sinkwatch file worker";
    }
    if block_on && has("sinkwatch::sink::loki") {
        return "sinkwatch Loki worker";
    }
    if has("sinkwatch::layer::report_refused") {
        return "sinkwatch reporter";
    }
    "other"
}

/// Runs one child under callgrind (with a counting receiver for the Loki paths).
fn profile(path: &str, n: u64) -> Option<Profile> {
    let scratch = tempfile::tempdir().ok()?;
    let keep = std::env::var_os("SINKWATCH_BENCH_CG_DIR").map(std::path::PathBuf::from);
    let out_dir = keep.clone().unwrap_or_else(|| scratch.path().to_owned());
    std::fs::create_dir_all(&out_dir).ok()?;
    let stem = format!("{path}-{n}.cg");
    let out_file = out_dir.join(&stem);
    let receiver = matches!(path, "loki" | "tracing-loki").then(crate::Receiver::start);
    let mut cmd = Command::new("valgrind");
    cmd.arg("--tool=callgrind")
        .arg("--separate-threads=yes")
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(std::env::current_exe().ok()?)
        .args(["child", "cg", path, &n.to_string()])
        .stderr(std::process::Stdio::null());
    if let Some(r) = &receiver {
        cmd.env("SINKWATCH_BENCH_URL", &r.url);
    }
    let out = cmd.output().ok()?;
    let mut run: Run = crate::parse_result(&out.stdout);
    if let Some(r) = receiver {
        r.stop(&mut run);
    }
    if !out.status.success() {
        eprintln!("  callgrind {path} {n}: the child failed");
        return None;
    }
    let mut threads = Vec::new();
    for entry in std::fs::read_dir(&out_dir).ok()?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(number) = name
            .strip_prefix(&stem)
            .and_then(|s| s.strip_prefix('-'))
            .and_then(|s| s.parse().ok())
        else {
            continue;
        };
        let text = std::fs::read_to_string(entry.path()).ok()?;
        let instructions = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("totals:")
                    .or_else(|| l.strip_prefix("summary:"))
            })
            .and_then(|v| v.split_whitespace().next()?.parse().ok())?;
        threads.push(Thread {
            number,
            role: role(number, &text),
            instructions,
        });
    }
    threads.sort_by_key(|t| t.number);
    let get = |k: &str| run.get(k).and_then(serde_json::Value::as_u64);
    Some(Profile {
        threads,
        delivered: get("delivered").unwrap_or(0),
        names: run
            .get("threads")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_owned(),
    })
}

/// What `n` records cost on one path.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Instructions on the calling thread per emitted event.
    pub caller: f64,
    /// Instructions on every other thread per delivered record.
    pub workers: f64,
    /// Records delivered by the `n` events (the difference of the two runs).
    pub delivered: u64,
    /// Per role: instructions per delivered record (per emitted event for the caller),
    /// and the thread numbers that had it in the run with `n` events.
    pub roles: Vec<(&'static str, f64, Vec<u32>)>,
    /// The child's thread names in the run with `n` events.
    pub names: String,
}

impl Measured {
    /// Calling thread plus workers: what one record costs the process.
    pub fn all(&self) -> f64 {
        self.caller + self.workers
    }
}

/// Instructions per record on every thread, per path and round (interleaved, as the
/// other groups); a round where valgrind failed for a path has no entry for it.
///
/// `SINKWATCH_BENCH_CG_PATHS` (comma-separated, e.g. `noop,loki`) measures only those
/// paths, for quick looks while profiling; the full report needs them all.
pub fn measure(n: u64, rounds: usize) -> Vec<(&'static str, Vec<Measured>)> {
    let only = std::env::var("SINKWATCH_BENCH_CG_PATHS").ok();
    let mut results: Vec<(&'static str, Vec<Measured>)> = PATHS
        .iter()
        .filter(|p| {
            only.as_deref()
                .is_none_or(|o| o.split(',').any(|x| x == **p))
        })
        .map(|&p| (p, Vec::new()))
        .collect();
    for round in 1..=rounds {
        for (path, runs) in &mut results {
            eprintln!("callgrind round {round} of {rounds}: {path}");
            let with = profile(path, n);
            let without = profile(path, 0);
            let Some(m) = with.zip(without).map(|(w, z)| compare(n, &w, &z)) else {
                eprintln!("  valgrind failed");
                continue;
            };
            eprintln!("  threads: {}", m.names);
            for (role, per, numbers) in &m.roles {
                eprintln!("  {role} (threads {numbers:?}): {per:.0} per record");
            }
            runs.push(m);
        }
    }
    results
}

fn compare(n: u64, with: &Profile, without: &Profile) -> Measured {
    let sum = |p: &Profile, f: &dyn Fn(&Thread) -> bool| -> u64 {
        p.threads
            .iter()
            .filter(|t| f(t))
            .map(|t| t.instructions)
            .sum()
    };
    let delivered = with.delivered.saturating_sub(without.delivered);
    let per_delivered = |x: u64, z: u64| x.saturating_sub(z) as f64 / delivered.max(1) as f64;
    let main = |t: &Thread| t.number == 1;
    let caller = sum(with, &main).saturating_sub(sum(without, &main)) as f64 / n.max(1) as f64;
    let workers = per_delivered(sum(with, &|t| !main(t)), sum(without, &|t| !main(t)));
    let mut roles: Vec<(&'static str, f64, Vec<u32>)> = Vec::new();
    for t in &with.threads {
        if roles.iter().any(|r| r.0 == t.role) {
            continue;
        }
        let of_role = |x: &Thread| x.role == t.role;
        let per = if main(t) {
            caller
        } else {
            per_delivered(sum(with, &of_role), sum(without, &of_role))
        };
        let numbers = with
            .threads
            .iter()
            .filter(|x| of_role(x))
            .map(|x| x.number)
            .collect();
        roles.push((t.role, per, numbers));
    }
    Measured {
        caller,
        workers,
        delivered,
        roles,
        names: with.names.clone(),
    }
}

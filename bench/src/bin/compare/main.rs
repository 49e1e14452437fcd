//! Issues 9 and 16's measurements in one run: sinkwatch side by side with tracing-appender,
//! tracing-loki, a `serde_json` floor and tracing's own dispatch.
//!
//! ```text
//! cargo run --release -p sinkwatch-bench --bin compare -- all
//! cargo run --release -p sinkwatch-bench --bin compare -- file loki --rounds 3
//! ```
//!
//! Groups: `file`, `loki`, `memory`, `callgrind` (`all` = every one). Each scenario runs in
//! its own child process (this binary, `child …`), so its peak RSS (`VmHWM`, printed by the
//! child) is its own; the rounds interleave the scenarios so a change of load on the shared
//! machine falls on all of them alike. Prints one Markdown table per group (medians with
//! min–max over the rounds) and the ratios of every round; progress goes to stderr.
//!
//! Sizes: `SINKWATCH_BENCH_FILE_N` (1,000,000), `SINKWATCH_BENCH_LOKI_N` (200,000) and
//! `SINKWATCH_BENCH_LOKI_LONG_N` (1,000,000: the Loki group runs both lengths),
//! `SINKWATCH_BENCH_MEM_N` (200,000), `SINKWATCH_BENCH_CG_N` (50,000).
//! `SINKWATCH_BENCH_CG_DIR` keeps the callgrind files there (for `callgrind_annotate`).
//! `SINKWATCH_BENCH_CG_PATHS` (e.g. `noop,loki`) measures only those callgrind paths.

mod callgrind;
mod common;
mod file;
mod loki;
mod memory;
mod receiver;
mod report;

use std::io::BufRead as _;
use std::process::{Command, Stdio};

use common::env_u64;
use report::Run;

const FILE_SCENARIOS: [&str; 8] = [
    "floor",
    "sinkwatch-1t",
    "appender-lossy-1t",
    "appender-lossless-1t",
    "sinkwatch-2t",
    "appender-lossy-2t",
    "appender-lossless-2t",
    "sinkwatch-gzip-1t",
];
const LOKI_SCENARIOS: [&str; 3] = ["sinkwatch", "sinkwatch-disk", "tracing-loki"];
const MEMORY_SCENARIOS: [&str; 2] = ["sinkwatch", "appender"];
const GROUPS: [&str; 4] = ["file", "loki", "memory", "callgrind"];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("child") {
        return child(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("serve") {
        return receiver::serve_counting();
    }
    let mut rounds = 5;
    let mut groups = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rounds" => {
                rounds = it
                    .next()
                    .and_then(|r| r.parse().ok())
                    .expect("--rounds takes a number");
            }
            "all" => groups.extend(GROUPS),
            other => {
                if let Some(g) = GROUPS.iter().find(|g| **g == other) {
                    groups.push(*g);
                } else {
                    eprintln!("unknown argument {other}; use: all | file | loki | memory | callgrind [--rounds N]");
                    std::process::exit(2);
                }
            }
        }
    }
    if groups.is_empty() {
        groups.extend(GROUPS);
    }
    drive(&groups, rounds);
}

fn drive(groups: &[&str], rounds: usize) {
    let file_n = env_u64("SINKWATCH_BENCH_FILE_N", 1_000_000);
    let loki_n = env_u64("SINKWATCH_BENCH_LOKI_N", 200_000);
    let mem_n = env_u64("SINKWATCH_BENCH_MEM_N", 200_000);
    let loki_long_n = env_u64("SINKWATCH_BENCH_LOKI_LONG_N", 1_000_000);
    let cg_n = env_u64("SINKWATCH_BENCH_CG_N", 50_000);
    let mut file_runs: Vec<Vec<Run>> = vec![Vec::new(); FILE_SCENARIOS.len()];
    // Two run lengths: delivered/s depends on it (see docs/performance.md).
    let loki_lengths = [loki_n, loki_long_n];
    let mut loki_runs: Vec<Vec<Vec<Run>>> =
        vec![vec![Vec::new(); LOKI_SCENARIOS.len()]; loki_lengths.len()];
    let mut mem_runs: Vec<Vec<Run>> = vec![Vec::new(); MEMORY_SCENARIOS.len()];
    for round in 1..=rounds {
        eprintln!("round {round} of {rounds}");
        if groups.contains(&"file") {
            for (s, runs) in FILE_SCENARIOS.iter().zip(&mut file_runs) {
                runs.push(run_child("file", s, file_n, false));
            }
        }
        if groups.contains(&"loki") {
            for (n, by_scenario) in loki_lengths.iter().zip(&mut loki_runs) {
                for (s, runs) in LOKI_SCENARIOS.iter().zip(by_scenario) {
                    runs.push(run_child("loki", s, *n, true));
                }
            }
        }
        if groups.contains(&"memory") {
            for (s, runs) in MEMORY_SCENARIOS.iter().zip(&mut mem_runs) {
                runs.push(run_child("memory", s, mem_n, false));
            }
        }
    }
    println!("# sinkwatch against its peers ({rounds} interleaved rounds; median, min–max)\n");
    if groups.contains(&"file") {
        report::file(&FILE_SCENARIOS, &file_runs, file_n);
    }
    if groups.contains(&"loki") {
        for (n, runs) in loki_lengths.iter().zip(&loki_runs) {
            report::loki(&LOKI_SCENARIOS, runs, *n);
        }
    }
    if groups.contains(&"memory") {
        report::memory(&MEMORY_SCENARIOS, &mem_runs, mem_n);
    }
    if groups.contains(&"callgrind") {
        report::callgrind(&callgrind::measure(cg_n, rounds), cg_n);
    }
}

/// Runs one scenario in a child process (against a counting receiver in another when
/// `receiver`) and returns its result fields, with the receiver's counts merged in.
fn run_child(group: &str, scenario: &str, n: u64, receiver: bool) -> Run {
    let exe = std::env::current_exe().expect("this binary's path");
    let mut child = Command::new(&exe);
    child.args(["child", group, scenario, &n.to_string()]);
    let server = receiver.then(|| {
        let server = Receiver::start();
        child.env("SINKWATCH_BENCH_URL", &server.url);
        server
    });
    let out = child.output().expect("a scenario's child process");
    let mut run = parse_result(&out.stdout);
    if !out.status.success() || run.is_empty() {
        eprintln!(
            "  {group}/{scenario} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if let Some(server) = server {
        server.stop(&mut run);
    }
    eprintln!(
        "  {group}/{scenario} {}",
        serde_json::Value::Object(run.clone())
    );
    run
}

/// The `RESULT {json}` line a child printed, or an empty run.
fn parse_result(stdout: &[u8]) -> Run {
    String::from_utf8_lossy(stdout)
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or_default()
}

/// A counting receiver (`compare serve`) in a process of its own, never measured.
pub(crate) struct Receiver {
    process: std::process::Child,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    /// Its base URL, for `SINKWATCH_BENCH_URL`.
    pub(crate) url: String,
}

impl Receiver {
    pub(crate) fn start() -> Self {
        let exe = std::env::current_exe().expect("this binary's path");
        let mut process = Command::new(&exe)
            .arg("serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the counting receiver");
        let stdout = process.stdout.take().expect("its stdout");
        let mut lines = std::io::BufReader::new(stdout).lines();
        let url = lines.next().and_then(Result::ok).unwrap_or_default();
        let url = url.trim_start_matches("URL ").to_owned();
        Receiver {
            process,
            lines,
            url,
        }
    }

    /// Stops the receiver (closing its stdin) and merges its counts into `run`:
    /// `delivered`, `requests`, `wire_bytes`, and the wall-clock times (ns since the epoch)
    /// of the first and the last request that carried entries.
    pub(crate) fn stop(mut self, run: &mut Run) {
        drop(self.process.stdin.take());
        let line = self.lines.next().and_then(Result::ok).unwrap_or_default();
        let _ = self.process.wait();
        let nums: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        if let [entries, requests, bytes, first, last] = nums[..] {
            run.insert("delivered".into(), entries.into());
            run.insert("requests".into(), requests.into());
            run.insert("wire_bytes".into(), bytes.into());
            run.insert("first_entry_unix_ns".into(), first.into());
            run.insert("last_entry_unix_ns".into(), last.into());
        }
    }
}

/// A scenario's child process: `child <group> <scenario> <n>`.
fn child(args: &[String]) {
    let [group, scenario, n] = args else {
        panic!("child <group> <scenario> <n>");
    };
    let n: u64 = n.parse().expect("a count");
    let base = std::env::var_os("SINKWATCH_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let dir = tempfile::tempdir_in(base).expect("a temporary directory");
    match group.as_str() {
        "file" => file::run(scenario, n, dir.path()),
        "loki" => loki::run(scenario, n, dir.path()),
        "memory" => memory::run(scenario, n, dir.path()),
        "cg" => callgrind::run(scenario, n, dir.path()),
        other => panic!("unknown group {other}"),
    }
}

//! The driver's tables: Markdown, medians with min–max over the rounds, and the ratios of
//! every round (each ratio compares two scenarios of the same round).

/// One child's result fields.
pub type Run = serde_json::Map<String, serde_json::Value>;

fn get(r: &Run, k: &str) -> f64 {
    r.get(k).and_then(serde_json::Value::as_f64).unwrap_or(0.0)
}

/// Median, min and max of `f` over the runs that produced a result.
fn stat(runs: &[Run], f: impl Fn(&Run) -> f64) -> Option<(f64, f64, f64)> {
    stat_of(runs.iter().filter(|r| !r.is_empty()).map(f))
}

/// Median, min and max of some values.
fn stat_of(values: impl Iterator<Item = f64>) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        f64::midpoint(v[v.len() / 2 - 1], v[v.len() / 2])
    };
    Some((median, v[0], v[v.len() - 1]))
}

/// `1234567.0` → `1,234,567`.
fn thousands(x: f64) -> String {
    #[allow(clippy::cast_possible_truncation)]
    let digits = (x.round() as i64).to_string();
    let (sign, digits) = digits
        .strip_prefix('-')
        .map_or(("", digits.as_str()), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

/// A cell: `median (min–max)`, or the median alone when every round agreed.
fn cell(s: Option<(f64, f64, f64)>, fmt: impl Fn(f64) -> String) -> String {
    match s {
        None => "—".into(),
        Some((m, lo, hi)) if fmt(lo) == fmt(hi) => fmt(m),
        Some((m, lo, hi)) => format!("{} ({}–{})", fmt(m), fmt(lo), fmt(hi)),
    }
}

fn count(x: f64) -> String {
    thousands(x)
}

fn ns(x: f64) -> String {
    if x >= 10_000.0 {
        format!("{:.1} µs", x / 1000.0)
    } else {
        format!("{} ns", thousands(x))
    }
}

fn mib(kib: f64) -> String {
    format!("{:.1} MiB", kib / 1024.0)
}

fn ratio(x: f64) -> String {
    format!("{x:.2}")
}

/// Prints `a / b` for every round, and their median.
fn ratios(runs: &[Vec<Run>], names: &[&str], pairs: &[(&str, &str)], f: impl Fn(&Run) -> f64) {
    let find = |n: &str| names.iter().position(|x| *x == n);
    for (a, b) in pairs {
        let (Some(ia), Some(ib)) = (find(a), find(b)) else {
            continue;
        };
        let per_round: Vec<f64> = runs[ia]
            .iter()
            .zip(&runs[ib])
            .filter(|(x, y)| !x.is_empty() && !y.is_empty() && f(y) > 0.0)
            .map(|(x, y)| f(x) / f(y))
            .collect();
        let listed: Vec<String> = per_round.iter().map(|x| ratio(*x)).collect();
        let as_runs: Vec<Run> = per_round
            .iter()
            .map(|x| {
                let mut r = Run::new();
                r.insert("x".into(), (*x).into());
                r
            })
            .collect();
        println!(
            "- {a} / {b}: **{}** (rounds: {})",
            cell(stat(&as_runs, |r| get(r, "x")), |x| format!("{x:.2}×")),
            listed.join(", ")
        );
    }
}

fn file_rate(r: &Run) -> f64 {
    get(r, "written") / get(r, "elapsed_us").max(1.0) * 1e6
}

pub fn file(names: &[&str], runs: &[Vec<Run>], n: u64) {
    println!(
        "## File: {} `info!` events (message + 5 fields), one thread or two\n",
        thousands(n as f64)
    );
    println!("| scenario | lines/s, all written | lines written | dropped, counted | lost, unreported | line | caller p50 | caller p99 | peak RSS |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, rs) in names.iter().zip(runs) {
        if rs.is_empty() {
            continue;
        }
        println!(
            "| {name} | {} | {} | {} | {} | {} B | {} | {} | {} |",
            cell(stat(rs, file_rate), count),
            cell(stat(rs, |r| get(r, "written")), count),
            cell(stat(rs, |r| get(r, "dropped")), count),
            cell(stat(rs, |r| get(r, "lost_unreported")), count),
            cell(stat(rs, |r| get(r, "line_bytes")), count),
            cell(stat(rs, |r| get(r, "p50_ns")), ns),
            cell(stat(rs, |r| get(r, "p99_ns")), ns),
            cell(stat(rs, |r| get(r, "peak_kib")), mib),
        );
    }
    println!("\nThroughput ratios (lines/s all written), per round:\n");
    ratios(
        runs,
        names,
        &[
            ("sinkwatch-1t", "appender-lossy-1t"),
            ("sinkwatch-1t", "appender-lossless-1t"),
            ("sinkwatch-1t", "floor"),
            ("sinkwatch-2t", "appender-lossy-2t"),
            ("sinkwatch-2t", "appender-lossless-2t"),
            ("sinkwatch-gzip-1t", "appender-lossless-1t"),
            ("sinkwatch-gzip-1t", "floor"),
        ],
        file_rate,
    );
    println!("\nCaller p50 ratios, per round:\n");
    ratios(
        runs,
        names,
        &[
            ("sinkwatch-1t", "appender-lossy-1t"),
            ("sinkwatch-2t", "appender-lossy-2t"),
        ],
        |r| get(r, "p50_ns"),
    );
    let mismatch = names
        .iter()
        .zip(runs)
        .filter(|(name, _)| name.starts_with("sinkwatch"))
        .flat_map(|(_, rs)| rs)
        .filter(|r| (get(r, "events_dropped") - get(r, "dropped")).abs() > 0.5)
        .count();
    println!(
        "\nsinkwatch runs whose `records_dropped` events disagree with `SinkStats::dropped`: {mismatch}\n"
    );
}

/// Entries the receiver counted over the time from the child's first event to the
/// receiver's last counted entry (both wall clock): when the entries had arrived.
fn loki_rate_received(r: &Run) -> f64 {
    let span_ns = get(r, "last_entry_unix_ns") - get(r, "started_unix_ns");
    get(r, "delivered") / span_ns.max(1.0) * 1e9
}

/// Entries the receiver counted over the time from the first event until the client said
/// it was done (sinkwatch: `flush()` resolved; tracing-loki: its task finished after its
/// controller's shutdown).
fn loki_rate_client(r: &Run) -> f64 {
    get(r, "delivered") / get(r, "elapsed_us").max(1.0) * 1e6
}

pub fn loki(names: &[&str], runs: &[Vec<Run>], n: u64) {
    println!(
        "## Loki: a burst of {} events to a counting receiver (own process, answers 204)\n",
        thousands(n as f64)
    );
    println!("| client | delivered/s, until the last entry arrived | delivered/s, until the client was done | delivered | dropped, reported | lost, unreported | wire bytes/entry | requests | emitting took | caller p50 | caller p99 | peak RSS |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (name, rs) in names.iter().zip(runs) {
        if rs.is_empty() {
            continue;
        }
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(stat(rs, loki_rate_received), count),
            cell(stat(rs, loki_rate_client), count),
            cell(stat(rs, |r| get(r, "delivered")), count),
            cell(stat(rs, |r| get(r, "dropped")), count),
            cell(
                stat(rs, |r| (get(r, "emitted")
                    - get(r, "delivered")
                    - get(r, "dropped"))
                .max(0.0)),
                count
            ),
            cell(
                stat(rs, |r| get(r, "wire_bytes") / get(r, "delivered").max(1.0)),
                |x| format!("{x:.1}")
            ),
            cell(stat(rs, |r| get(r, "requests")), count),
            cell(stat(rs, |r| get(r, "emit_us")), |x| format!(
                "{} ms",
                thousands(x / 1000.0)
            )),
            cell(stat(rs, |r| get(r, "p50_ns")), ns),
            cell(stat(rs, |r| get(r, "p99_ns")), ns),
            cell(stat(rs, |r| get(r, "peak_kib")), mib),
        );
    }
    println!("\nDelivered/s ratio, per round, until the last entry arrived:\n");
    ratios(
        runs,
        names,
        &[
            ("sinkwatch", "tracing-loki"),
            ("sinkwatch-disk", "sinkwatch"),
        ],
        loki_rate_received,
    );
    println!("\nDelivered/s ratio, per round, until the client was done:\n");
    ratios(
        runs,
        names,
        &[
            ("sinkwatch", "tracing-loki"),
            ("sinkwatch-disk", "sinkwatch"),
        ],
        loki_rate_client,
    );
    println!(
        "\nPeak RSS ratio, per round (issue 15 wants the disk buffer at most 2× tracing-loki):\n"
    );
    ratios(
        runs,
        names,
        &[
            ("sinkwatch", "tracing-loki"),
            ("sinkwatch-disk", "tracing-loki"),
        ],
        |r| get(r, "peak_kib"),
    );
    println!();
}

pub fn memory(names: &[&str], runs: &[Vec<Run>], n: u64) {
    println!(
        "## Memory per queued record: RSS growth with {} records waiting, over the JSON line length\n",
        thousands(n as f64)
    );
    println!(
        "| writer | consumer | records queued | bytes/record | JSON line | ratio (target ≤ 1.5) |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, rs) in names.iter().zip(runs) {
        if rs.is_empty() {
            continue;
        }
        let consumer = if *name == "sinkwatch" {
            "`LokiSink`, receiver never answers"
        } else {
            "`non_blocking`, writer blocked"
        };
        println!(
            "| {name} | {consumer} | {} | {} B | {} B | {} |",
            cell(stat(rs, |r| get(r, "queued")), count),
            cell(stat(rs, |r| get(r, "bytes_per_record")), count),
            cell(stat(rs, |r| get(r, "line_bytes")), count),
            cell(stat(rs, |r| get(r, "ratio")), ratio),
        );
    }
    println!();
}

pub fn callgrind(results: &[(&str, Vec<crate::callgrind::Measured>)], n: u64) {
    use crate::callgrind::{label, peer, Measured};
    let rounds = results.iter().map(|r| r.1.len()).max().unwrap_or(0);
    println!(
        "## Instructions per record, every thread (callgrind, {} events; run with them − run without; {rounds} rounds)\n",
        thousands(n as f64)
    );
    let find = |path: &str| -> &[Measured] {
        results
            .iter()
            .find(|(p, _)| *p == path)
            .map_or(&[], |r| &r.1[..])
    };
    // Ratios within a round: round i of one path against round i of the other.
    let per_round = |a: &[Measured], b: &[Measured], f: &dyn Fn(&Measured, &Measured) -> f64| {
        stat_of(a.iter().zip(b).map(|(x, y)| f(x, y)))
    };
    let times = |x: f64| format!("{x:.2}×");
    println!("| path | calling thread, per event | other threads, per delivered record | all threads | all threads / peer | calling thread / floor | delivered |");
    println!("|---|---|---|---|---|---|---|");
    for (path, runs) in results {
        if runs.is_empty() {
            println!("| {} | valgrind failed | | | | | |", label(path));
            continue;
        }
        let vs_peer = peer(path).map_or_else(
            || "—".into(),
            |p| cell(per_round(runs, find(p), &|x, y| x.all() / y.all()), times),
        );
        let vs_floor = if *path == "noop" {
            "1.00×".into()
        } else {
            cell(
                per_round(runs, find("noop"), &|x, y| x.caller / y.caller),
                times,
            )
        };
        let delivered = if *path == "noop" {
            "—".into()
        } else {
            cell(stat_of(runs.iter().map(|m| m.delivered as f64)), count)
        };
        println!(
            "| {} | {} | {} | {} | {vs_peer} | {vs_floor} | {delivered} |",
            label(path),
            cell(stat_of(runs.iter().map(|m| m.caller)), count),
            cell(stat_of(runs.iter().map(|m| m.workers)), count),
            cell(stat_of(runs.iter().map(Measured::all)), count),
        );
    }
    println!("\nPer thread, last round (valgrind's thread numbers; each role named after the functions its threads ran):\n");
    println!("| path | role | threads | instructions per record |");
    println!("|---|---|---|---|");
    for (path, runs) in results {
        let Some(m) = runs.last() else { continue };
        for (role, per, numbers) in &m.roles {
            let numbers: Vec<String> = numbers.iter().map(u32::to_string).collect();
            println!(
                "| {path} | {role} | {} | {} |",
                numbers.join(", "),
                count(*per)
            );
        }
    }
    println!("\nThread names in each child, right after its last event (`/proc/self/task/*/comm`, by thread id):\n");
    for (path, runs) in results {
        if let Some(m) = runs.last() {
            println!("- {path}: {}", m.names);
        }
    }
    println!();
}

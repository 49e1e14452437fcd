//! The driver's tables: Markdown, medians with min–max over the rounds, and the ratios of
//! every round (each ratio compares two scenarios of the same round).

/// One child's result fields.
pub type Run = serde_json::Map<String, serde_json::Value>;

fn get(r: &Run, k: &str) -> f64 {
    r.get(k).and_then(serde_json::Value::as_f64).unwrap_or(0.0)
}

/// Median, min and max of `f` over the runs that produced a result.
fn stat(runs: &[Run], f: impl Fn(&Run) -> f64) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = runs.iter().filter(|r| !r.is_empty()).map(f).collect();
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

fn loki_rate(r: &Run) -> f64 {
    get(r, "delivered") / get(r, "elapsed_us").max(1.0) * 1e6
}

pub fn loki(names: &[&str], runs: &[Vec<Run>], n: u64) {
    println!(
        "## Loki: a burst of {} events to a counting receiver (own process, answers 204)\n",
        thousands(n as f64)
    );
    println!("| client | delivered/s | delivered | dropped, reported | lost, unreported | wire bytes/entry | requests | caller p50 | caller p99 | peak RSS |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (name, rs) in names.iter().zip(runs) {
        if rs.is_empty() {
            continue;
        }
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(stat(rs, loki_rate), count),
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
            cell(stat(rs, |r| get(r, "p50_ns")), ns),
            cell(stat(rs, |r| get(r, "p99_ns")), ns),
            cell(stat(rs, |r| get(r, "peak_kib")), mib),
        );
    }
    println!("\nDelivered/s ratio, per round:\n");
    ratios(runs, names, &[("sinkwatch", "tracing-loki")], loki_rate);
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

pub fn callgrind(results: &[(&str, Option<f64>)], n: u64) {
    println!(
        "## Calling thread: instructions per event (callgrind, main thread only, {} events)\n",
        thousands(n as f64)
    );
    let floor = results.iter().find(|(p, _)| *p == "noop").and_then(|r| r.1);
    println!("| path | instructions/event | over the dispatch floor |");
    println!("|---|---|---|");
    for (path, per) in results {
        let over = match (per, floor) {
            (Some(p), Some(f)) if *path != "noop" => thousands(p - f),
            _ => "—".into(),
        };
        println!(
            "| {} | {} | {over} |",
            crate::callgrind::label(path),
            per.map_or_else(|| "valgrind failed".into(), thousands)
        );
    }
    println!();
}

//! A Loki-compatible receiver for local development: point any Loki client at it.
//!
//! ```text
//! cargo run -p sinkwatch-examples --example loki_receiver -- --listen 127.0.0.1:3100 [--auth]
//! ```
//!
//! It prints each accepted entry and each rejected request with Loki's error text. Ctrl-C stops it.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use sinkwatch::testing::LokiReceiver;

const USAGE: &str = "usage: loki_receiver [--listen ADDR] [--auth]

  --listen ADDR  address to listen on (default 127.0.0.1:3100)
  --auth         require X-Scope-OrgID, as Loki's auth_enabled (default: off, tenant \"fake\")";

struct Args {
    listen: SocketAddr,
    auth: bool,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut out = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 3100)),
        auth: false,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--auth" => out.auth = true,
            "--listen" => {
                let value = args
                    .next()
                    .ok_or("--listen needs an address, e.g. 127.0.0.1:3100")?;
                out.listen = value
                    .parse()
                    .map_err(|e| format!("--listen {value}: {e} (expected IP:PORT)"))?;
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(out)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(msg) => {
            if !msg.is_empty() {
                eprintln!("error: {msg}");
            }
            eprintln!("{USAGE}");
            return if msg.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
    let receiver = match LokiReceiver::builder()
        .listen(args.listen)
        .auth(args.auth)
        .start()
        .await
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "error: {e}: {}",
                std::error::Error::source(&e).map_or(String::new(), ToString::to_string)
            );
            return ExitCode::FAILURE;
        }
    };
    println!(
        "Loki receiver listening on {} (auth {})",
        receiver.push_url(),
        if args.auth { "on" } else { "off" }
    );
    // Runs until Ctrl-C ends the process: the receiver holds nothing that needs saving, so
    // the default signal handling is enough (and tokio's `signal` feature, with its
    // dependencies, stays out of the examples' build).
    report(&receiver).await;
    ExitCode::SUCCESS
}

/// Prints what each request did, as it completes.
async fn report(receiver: &LokiReceiver) {
    let (mut requests_seen, mut entries_seen) = (0, 0);
    loop {
        // A long real-time wait: the loop wakes as soon as a request is handled.
        if receiver
            .wait_for_requests(requests_seen + 1, Duration::from_secs(3600))
            .await
            .is_err()
        {
            continue;
        }
        let entries = receiver.entries();
        for e in &entries[entries_seen..] {
            let meta: Vec<String> = e
                .structured_metadata
                .iter()
                .map(|(k, v)| format!("{k}={v:?}"))
                .collect();
            println!(
                "[{}] {} {} {} {}",
                e.tenant,
                e.stream,
                e.timestamp_ns,
                e.line,
                meta.join(" ")
            );
        }
        entries_seen = entries.len();
        let requests = receiver.requests();
        for r in &requests[requests_seen..] {
            if !r.error.is_empty() || r.status == 0 {
                println!("{} {} -> {} {}", r.method, r.path, r.status, r.error);
            }
        }
        requests_seen = requests.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, String> {
        parse_args(list.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn parses_listen_and_auth() {
        let a = args(&["--listen", "127.0.0.1:9999", "--auth"]).unwrap();
        assert_eq!(a.listen, "127.0.0.1:9999".parse().unwrap());
        assert!(a.auth);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(args(&["--listen"]).is_err());
        assert!(args(&["--listen", "nope"]).is_err());
        assert!(args(&["--verbose"]).is_err());
    }
}

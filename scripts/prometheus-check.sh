#!/usr/bin/env bash
# Scrapes the `prometheus` example with a real Prometheus (Debian's package, 2.42) and
# checks what PromQL says against the SinkStats the example printed; lints a scrape with
# `promtool check metrics`. Not part of .ci/run (it installs a package and takes a minute).
#
#   bash scripts/prometheus-check.sh
#
# Installs `prometheus` (and curl, jq) with apt-get when missing, without starting the
# Debian service: this script runs the binary itself, with its own configuration and a
# temporary data directory, on free loopback ports, and stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n=== %s ===\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

# ----- tools -----
missing=()
command -v prometheus >/dev/null || missing+=(prometheus)
command -v curl >/dev/null || missing+=(curl)
command -v jq >/dev/null || missing+=(jq)
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    # The package's maintainer scripts start its service unless policy-rc.d says no.
    made_policy=""
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    [[ -n "$made_policy" ]] && rm -f /usr/sbin/policy-rc.d
fi
prometheus --version 2>&1 | head -1

# ----- build first, so the timings below are the run's, not the compiler's -----
say "building the example"
cargo build -q -p sinkwatch-examples --features prometheus --example prometheus
example="$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)/debug/examples/prometheus"

# ----- everything this script starts is stopped on exit -----
work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# A loopback port nothing listens on.
free_port() {
    local port
    for _ in $(seq 1 200); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    fail "no free port found"
}

# Polls `$@` until it succeeds, every 0.2 s, for at most $timeout seconds (an external
# process's progress: there is no event to await from a shell).
wait_until() {
    local what="$1" timeout="$2"
    shift 2
    local deadline=$((SECONDS + timeout))
    until "$@"; do
        ((SECONDS < deadline)) || fail "timed out after ${timeout}s waiting for $what"
        sleep 0.2
    done
}

exporter_port="$(free_port)"
prom_port="$(free_port)"
[[ "$exporter_port" != "$prom_port" ]] || prom_port=$((prom_port + 1))

cat > "$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - "$(pwd)/docs/prometheus-alerts.yml"
scrape_configs:
  - job_name: sinkwatch
    static_configs:
      - targets: ["127.0.0.1:${exporter_port}"]
EOF

say "starting Prometheus on 127.0.0.1:${prom_port}, scraping 127.0.0.1:${exporter_port} every second"
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
    --web.listen-address="127.0.0.1:${prom_port}" > "$work/prometheus.log" 2>&1 &
pids+=($!)
api="http://127.0.0.1:${prom_port}/api/v1"
wait_until "Prometheus to be ready" 60 curl -sf "http://127.0.0.1:${prom_port}/-/ready" -o /dev/null
# Its target discovery hands targets over only every few seconds: wait until it scrapes
# (the example's port is still closed: health "down"), so it watches the whole scenario.
has_target() {
    curl -sf "$api/targets" | jq -e '.data.activeTargets[] | select(.lastScrape != "0001-01-01T00:00:00Z")' >/dev/null
}
wait_until "Prometheus to pick up its target" 60 has_target

say "running the example"
"$example" --listen "127.0.0.1:${exporter_port}" --serve-for 120 > "$work/example.out" 2>&1 &
pids+=($!)
example_pid=$!
wait_until "the example's scenario (see $work/example.out)" 120 grep -q '^done:' "$work/example.out"
cat "$work/example.out"
done_at="$(date +%s)"

# One PromQL instant query; prints the value of its single result (empty if none).
query() {
    curl -sf -G "$api/query" --data-urlencode "query=$1" \
        | jq -r 'if .data.result | length == 1 then .data.result[0].value[1] else "" end'
}
scraped_since_done() {
    local t
    t="$(query 'timestamp(up{job="sinkwatch"})')"
    [[ -n "$t" ]] && (( ${t%.*} >= done_at + 2 ))
}
wait_until "two scrapes after the scenario ended" 30 scraped_since_done
kill -0 "$example_pid" 2>/dev/null || fail "the example exited before the final scrapes"

checks=0
expect() {
    local what="$1" promql="$2" want="$3" got
    got="$(query "$promql")"
    if [[ "$got" != "$want" ]]; then
        fail "$what: $promql is '${got}', the example printed $want"
    fi
    printf '  ok  %-58s = %s\n' "$promql" "$got"
    checks=$((checks + 1))
}
expect_positive() {
    local promql="$1" got
    got="$(query "$promql")"
    [[ -n "$got" ]] && awk -v v="$got" 'BEGIN { exit !(v > 0) }' \
        || fail "$promql is '${got}', expected more than 0"
    printf '  ok  %-58s = %s (> 0)\n' "$promql" "$got"
    checks=$((checks + 1))
}

say "PromQL against the printed SinkStats"
loki_sink=""
while read -r _ sink accepted delivered dropped refused; do
    s="${sink#sink=}"
    expect "$s accepted" "sinkwatch_records_accepted_total{sink=\"$s\"}" "${accepted#accepted=}"
    expect "$s delivered" "sinkwatch_records_delivered_total{sink=\"$s\"}" "${delivered#delivered=}"
    expect "$s dropped" "sum(sinkwatch_records_dropped_total{sink=\"$s\"}) or vector(0)" "${dropped#dropped=}"
    expect "$s refused" "sinkwatch_records_refused_total{sink=\"$s\"}" "${refused#refused=}"
    expect "$s pending" "sinkwatch_records_accepted_total{sink=\"$s\"} - sinkwatch_records_delivered_total - on(sink) (sum by (sink) (sinkwatch_records_dropped_total) or sum by (sink) (sinkwatch_records_accepted_total) * 0)" 0
    expect "$s queue" "sinkwatch_queue_records{sink=\"$s\"}" 0
    [[ "$s" == loki-* ]] && loki_sink="$s"
done < <(grep '^stats ' "$work/example.out")
[[ -n "$loki_sink" ]] || fail "the example printed no Loki sink"

say "PromQL against the statuses the receiver answered"
while read -r _ sink status count; do
    s="${sink#sink=}"
    expect "$s ${status}" "sinkwatch_push_requests_total{sink=\"$s\",${status/=/=\"}\"}" "${count#count=}"
done < <(grep '^requests ' "$work/example.out")

say "what the scenario must have moved"
file_sink="$(grep '^stats sink=file' "$work/example.out" | sed 's/^stats sink=\([^ ]*\).*/\1/')"
expect_positive "sum(sinkwatch_rotations_total{sink=\"$file_sink\"})"
expect_positive "sinkwatch_compressions_total{sink=\"$file_sink\"}"
expect_positive "sinkwatch_retention_removed_total{sink=\"$file_sink\"}"
expect_positive "sinkwatch_bytes_written_total{sink=\"$file_sink\"}"
expect_positive "sinkwatch_push_requests_total{sink=\"$loki_sink\",status=\"error\"}"
expect_positive "sinkwatch_push_retries_total{sink=\"$loki_sink\"}"
expect_positive "sinkwatch_records_dropped_total{sink=\"$loki_sink\",reason=\"retries_exhausted\"}"
expect_positive "sinkwatch_records_dropped_total{sink=\"$loki_sink\",reason=\"rejected\"}"
expect_positive "sinkwatch_push_bytes_total{sink=\"$loki_sink\"}"
expect_positive "max_over_time(sinkwatch_queue_records{sink=\"$loki_sink\"}[5m])"
expect_positive "histogram_quantile(0.99, sum by (le) (rate(sinkwatch_push_duration_seconds_bucket{sink=\"$loki_sink\"}[5m])))"
expect_positive "sum(increase(sinkwatch_records_accepted_total[5m]))"

say "the example alert rules, evaluated by this Prometheus"
expect_positive "count(ALERTS{alertname=\"SinkwatchRecordsDropped\",alertstate=\"firing\",sink=\"$loki_sink\"})"
expect_positive "count(ALERTS{alertname=\"SinkwatchPushRetrying\",sink=\"$loki_sink\"})"
expect "no drop alert for the file sink" "count(ALERTS{alertname=\"SinkwatchRecordsDropped\",sink=\"$file_sink\"}) or vector(0)" 0

say "every query of docs/prometheus-dashboard.json runs (Grafana's variables filled in)"
while IFS= read -r expr; do
    promql="${expr//\$__rate_interval/1m}"
    promql="${promql//\$__range/5m}"
    promql="${promql//\$sink/.*}"
    answer="$(curl -s -G "$api/query" --data-urlencode "query=$promql")"
    [[ "$(jq -r .status <<<"$answer")" == success ]] \
        || fail "dashboard query does not run: $promql: $(jq -r .error <<<"$answer")"
    checks=$((checks + 1))
done < <(jq -r '.panels[] | .targets[]? | .expr' docs/prometheus-dashboard.json)
printf '  ok  %s queries\n' "$(jq '[.panels[] | .targets[]?] | length' docs/prometheus-dashboard.json)"

say "promtool check metrics on a scrape"
curl -sf "http://127.0.0.1:${exporter_port}/metrics" > "$work/scrape.txt"
if ! promtool check metrics < "$work/scrape.txt"; then
    fail "promtool check metrics found problems (above)"
fi
printf '  ok  %s lines, no problems\n' "$(wc -l < "$work/scrape.txt")"

say "promtool check rules docs/prometheus-alerts.yml"
promtool check rules docs/prometheus-alerts.yml

printf '\nprometheus-check: %d PromQL checks passed, promtool clean\n' "$checks"

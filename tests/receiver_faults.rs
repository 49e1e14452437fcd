//! The receiver's fault injection: scripted statuses, delays, dropped connections, and going
//! down and coming back on the same port.
//!
//! Every test installs the global subscriber first, though only one awaits an event: the
//! tests share a process, and a receiver event hit first without the global subscriber can
//! cache its callsite as uninteresting for the whole process (tokio-rs/tracing#3611), so
//! the test that waits for it would time out.
#![cfg(all(feature = "testing", feature = "loki"))]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sinkwatch::testing::{Fault, LokiReceiver};

const WAIT: Duration = Duration::from_secs(30);

fn body() -> String {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(r#"{{"streams":[{{"stream":{{"a":"b"}},"values":[["{ts}","line {ts}"]]}}]}}"#)
}

/// A fresh connection per request, so a stopped receiver never meets a pooled connection.
async fn push(r: &LokiReceiver) -> reqwest::Result<reqwest::Response> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?
        .post(r.push_url())
        .header("content-type", "application/json")
        .body(body())
        .send()
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn scripted_statuses_are_answered_in_order_then_normal_handling() {
    sinkwatch::testing::init();
    let r = LokiReceiver::start().await.unwrap();
    r.push_faults([
        Fault::status(429).retry_after("2"),
        Fault::status(500),
        Fault::status(503).body("ingester unavailable"),
        Fault::status(413),
    ]);
    let mut seen = Vec::new();
    for _ in 0..5 {
        let resp = push(&r).await.unwrap();
        let retry = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        seen.push((resp.status().as_u16(), retry, resp.text().await.unwrap()));
    }
    assert_eq!(
        seen,
        [
            (429, Some("2".to_owned()), "Too Many Requests\n".to_owned()),
            (500, None, "Internal Server Error\n".to_owned()),
            (503, None, "ingester unavailable\n".to_owned()),
            (413, None, "Payload Too Large\n".to_owned()),
            (204, None, String::new()),
        ]
    );
    // Only the request that was handled normally stored its entry.
    assert_eq!(r.entry_count(), 1);
    assert_eq!(r.pending_faults(), 0);
    let faults: Vec<bool> = r.requests().iter().map(|q| q.fault).collect();
    assert_eq!(faults, [true, true, true, true, false]);
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_after_can_be_any_text() {
    sinkwatch::testing::init();
    let r = LokiReceiver::start().await.unwrap();
    r.push_fault(Fault::status(429).retry_after("Wed, 21 Oct 2015 07:28:00 GMT"));
    let resp = push(&r).await.unwrap();
    assert_eq!(
        resp.headers()["retry-after"],
        "Wed, 21 Oct 2015 07:28:00 GMT"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cleared_faults_are_not_used() {
    sinkwatch::testing::init();
    let r = LokiReceiver::start().await.unwrap();
    r.push_fault(Fault::status(500));
    r.clear_faults();
    assert_eq!(push(&r).await.unwrap().status(), 204);
}

#[tokio::test(flavor = "multi_thread")]
async fn delayed_answers_take_at_least_the_delay() {
    sinkwatch::testing::init();
    let r = LokiReceiver::start().await.unwrap();
    let delay = Duration::from_millis(300);
    r.push_faults([Fault::delay(delay), Fault::status(503).delayed(delay)]);
    let start = Instant::now();
    assert_eq!(push(&r).await.unwrap().status(), 204);
    assert!(start.elapsed() >= delay);
    let start = Instant::now();
    assert_eq!(push(&r).await.unwrap().status(), 503);
    assert!(start.elapsed() >= delay);
}

#[tokio::test(flavor = "multi_thread")]
async fn latency_slows_every_request_until_turned_off() {
    sinkwatch::testing::init();
    let r = LokiReceiver::start().await.unwrap();
    r.set_latency(Duration::from_millis(200));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let err = client
        .post(r.push_url())
        .header("content-type", "application/json")
        .body(body())
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    r.set_latency(Duration::ZERO);
    let start = Instant::now();
    assert_eq!(push(&r).await.unwrap().status(), 204);
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread")]
async fn dropped_connection_gives_the_client_a_transport_error() {
    sinkwatch::testing::init();
    let r = LokiReceiver::start().await.unwrap();
    r.push_fault(Fault::drop_connection());
    let err = push(&r).await.unwrap_err();
    assert!(!err.is_status(), "{err}");
    r.wait_for_requests(1, WAIT).await.unwrap();
    let req = &r.requests()[0];
    assert_eq!((req.status, req.fault), (0, true));
    assert_eq!(r.entry_count(), 0);
    // The next request is handled normally.
    assert_eq!(push(&r).await.unwrap().status(), 204);
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_refuses_connections_and_restart_comes_back_on_the_same_port() {
    sinkwatch::testing::init();
    let r = LokiReceiver::start().await.unwrap();
    let addr = r.addr();
    assert_eq!(push(&r).await.unwrap().status(), 204);
    r.stop().await;
    assert!(!r.is_running());
    let err = push(&r).await.unwrap_err();
    assert!(err.is_connect(), "{err}");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    r.restart().await.unwrap();
    assert!(r.is_running());
    assert_eq!(r.addr(), addr);
    assert_eq!(push(&r).await.unwrap().status(), 204);
    // Records survive the outage.
    assert_eq!(r.entry_count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_cuts_a_request_in_progress() {
    sinkwatch::testing::init();
    let r = LokiReceiver::start().await.unwrap();
    r.push_fault(Fault::delay(Duration::from_secs(600)));
    let url = r.push_url();
    let pending = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .header("content-type", "application/json")
            .body(body())
            .send()
            .await
    });
    // Go down under the request once it has arrived (and is held by the delay).
    r.wait_for_arrivals(1, WAIT).await.unwrap();
    r.stop().await;
    assert!(pending.await.unwrap().is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_the_receiver_closes_its_port() {
    sinkwatch::testing::init();
    let r = LokiReceiver::start().await.unwrap();
    let addr = r.addr();
    let closed = r.closed();
    drop(r);
    // The abort is asynchronous: wait for the serving task to be gone, then check.
    tokio::time::timeout(WAIT, closed)
        .await
        .expect("the port stayed open");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_gives_up_during_a_delay_is_still_recorded_and_reported() {
    use sinkwatch::testing::{self, Matcher};
    use tokio::io::AsyncWriteExt;
    testing::init();
    let events = testing::watch();
    let r = LokiReceiver::start().await.unwrap();
    r.push_fault(Fault::delay(Duration::from_secs(600)));
    let body = body();
    let request = format!(
        "POST /loki/api/v1/push HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut client = tokio::net::TcpStream::connect(r.addr()).await.unwrap();
    client.write_all(request.as_bytes()).await.unwrap();
    r.wait_for_arrivals(1, WAIT).await.unwrap();
    // The client gives up while the request is held by the delay.
    drop(client);
    let event = events
        .wait(Matcher::sink_event(
            r.id(),
            sinkwatch::testing::receiver_request::NAME,
        ))
        .await;
    // On a timeout, say what the receiver recorded: the request, or not.
    let event = event.unwrap_or_else(|e| panic!("{e}\nrecorded: {:?}", r.requests()));
    assert_eq!(event.u64("status"), Some(204), "{event}");
    assert_eq!(event.u64("accepted"), Some(1), "{event}");
    let requests = r.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!((requests[0].status, requests[0].client_gone), (204, true));
    assert_eq!(r.entry_count(), 1);
}

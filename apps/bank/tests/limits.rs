//! The limits of `bank serve` against clients that are slow, silent or too many, over
//! real sockets to the real binary: each test shortens one limit with its flag and
//! checks the server lets go of the client while others keep being served.

use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;

use common::Server;

fn sqlite(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("bank.db").display())
}

fn address(server: &Server) -> String {
    server.base.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection or `deadline` passes: what it sent,
/// and whether it closed.
async fn read_until_closed(stream: &mut TcpStream, deadline: Instant) -> (String, bool) {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&received).into_owned(), true),
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
            Err(_) => return (String::from_utf8_lossy(&received).into_owned(), false),
        }
    }
}

/// One complete request on a fresh connection; the status line's code.
async fn status_of(address: &str, request: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(address).await.ok()?;
    stream.write_all(request.as_bytes()).await.ok()?;
    let (answer, _) = read_until_closed(&mut stream, Instant::now() + Duration::from_secs(10)).await;
    answer.split(' ').nth(1)?.parse().ok()
}

const HEALTH: &str = "GET /health HTTP/1.1\r\nhost: bank\r\nconnection: close\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_are_closed_after_the_header_timeout_while_others_are_served() {
    let dir = tempfile::tempdir().expect("dir");
    let server = Server::start_with(&sqlite(&dir), &["--header-timeout", "2"]);
    let address = address(&server);
    let started = Instant::now();
    let mut stalled = Vec::new();
    for _ in 0..300 {
        let mut stream = TcpStream::connect(&address).await.expect("connect");
        stream.write_all(b"POST /api/accounts HTTP/1.1\r\nhost: bank\r\ncontent-le").await.expect("half a head");
        stalled.push(stream);
    }
    // While they hang, the server answers everyone else.
    for _ in 0..5 {
        let (status, _) = server.get("/health").await;
        assert_eq!(status, 200);
    }
    assert!(server.open(100).await.len() > 10, "an account opens during the siege");
    let deadline = started + Duration::from_secs(12);
    for (i, stream) in stalled.iter_mut().enumerate() {
        let (_, closed) = read_until_closed(stream, deadline).await;
        assert!(closed, "half-sent request {i} was still open {:?} after it started", started.elapsed());
    }
    // The timer, not an accident, closed them: none went before the timeout.
    assert!(started.elapsed() >= Duration::from_millis(1900), "closed after {:?}", started.elapsed());
    assert_eq!(server.get("/health").await.0, 200);
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_answered_503_and_the_place_frees_on_close() {
    let dir = tempfile::tempdir().expect("dir");
    let server = Server::start_with(&sqlite(&dir), &["--max-connections", "20"]);
    let address = address(&server);
    // Twenty kept-alive connections, each with one answered request: all twenty are held.
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut stream = TcpStream::connect(&address).await.expect("connect");
        stream.write_all(b"GET /health HTTP/1.1\r\nhost: bank\r\n\r\n").await.expect("request");
        let mut buffer = [0u8; 1024];
        let n = stream.read(&mut buffer).await.expect("answer");
        assert!(buffer[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buffer[..n]));
        held.push(stream);
    }
    let mut refused = TcpStream::connect(&address).await.expect("connect");
    refused.write_all(HEALTH.as_bytes()).await.expect("request");
    let (answer, closed) = read_until_closed(&mut refused, Instant::now() + Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains(r#""errors":{"message":"too many connections"#), "{answer}");
    assert!(closed, "the refused connection is closed");
    held.pop();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match status_of(&address, HEALTH).await {
            Some(200) => break,
            other => assert!(Instant::now() < deadline, "a freed place is not reused: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_after_the_idle_timeout() {
    let dir = tempfile::tempdir().expect("dir");
    let server = Server::start_with(&sqlite(&dir), &["--idle-timeout", "1", "--header-timeout", "30"]);
    let mut stream = TcpStream::connect(address(&server)).await.expect("connect");
    stream.write_all(b"GET /health HTTP/1.1\r\nhost: bank\r\n\r\n").await.expect("request");
    let mut buffer = [0u8; 1024];
    let n = stream.read(&mut buffer).await.expect("answer");
    assert!(buffer[..n].starts_with(b"HTTP/1.1 200"));
    let answered = Instant::now();
    let (_, closed) = read_until_closed(&mut stream, answered + Duration::from_secs(10)).await;
    assert!(closed, "the idle connection is still open");
    let after = answered.elapsed();
    assert!(after >= Duration::from_millis(900) && after < Duration::from_secs(8), "closed after {after:?}");
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_finishes_gets_408_after_the_request_timeout() {
    let dir = tempfile::tempdir().expect("dir");
    let server = Server::start_with(&sqlite(&dir), &["--request-timeout", "1"]);
    let mut stream = TcpStream::connect(address(&server)).await.expect("connect");
    let head =
        "POST /api/accounts HTTP/1.1\r\nhost: bank\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n";
    stream.write_all(head.as_bytes()).await.expect("head");
    stream.write_all(br#"{"account": "#).await.expect("part of the body");
    let sent = Instant::now();
    let (answer, _) = read_until_closed(&mut stream, sent + Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains(r#"{"errors":{"message":"request timeout"}}"#), "with the JSON error body: {answer:?}");
    assert!(sent.elapsed() >= Duration::from_millis(900), "answered after {:?}", sent.elapsed());
    assert_eq!(server.get("/health").await.0, 200);
    server.terminate();
}

#[test]
fn a_limit_of_zero_is_refused_at_start() {
    for (flag, value) in [("--max-connections", "0"), ("--header-timeout", "0"), ("--idle-timeout", "-1")] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_bank"))
            .args(["serve", "--listen", "127.0.0.1:0", "--database", "sqlite:///nonexistent-dir/bank.db"])
            .arg(format!("{flag}={value}"))
            .output()
            .expect("run bank");
        assert!(!output.status.success(), "{flag} {value} accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(flag.trim_start_matches('-')), "{flag}: {stderr}");
    }
}

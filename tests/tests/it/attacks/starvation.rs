//! Attack 6: a flood of connections that send a partial request head (or nothing) and sit
//! there. The node must keep answering `/health`, cap the flood, and close the idle
//! connections once the header-read timeout passes. The flood's 20 addresses may hold 1,200
//! connections against a cap of 1,000: a client holding none still gets in, by evicting the
//! oldest connection of the client holding the most (before eviction it was refused, and this
//! test failed whenever the flood filled the cap before its connections timed out). About 2,000 connections against lowered
//! caps (this machine's file limits would not take 20,000), from 20 loopback addresses so the
//! per-client cap alone does not stop them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use meridian_tests::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const CLIENT_ADDRESSES: u8 = 20;
const CONNECTIONS_PER_ADDRESS: usize = 100;
const CONNECTIONS_MAX: usize = 1000;
const PER_CLIENT_MAX: usize = 60;
const HEADER_READ_TIMEOUT_SECS: u64 = 2;

/// Opens the flood; returns the connections the node did not close at once.
async fn flood(target: SocketAddr) -> Vec<tokio::net::TcpStream> {
    let mut open = Vec::new();
    for client in 0..CLIENT_ADDRESSES {
        let source = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 1, 10 + client)), 0);
        for _ in 0..CONNECTIONS_PER_ADDRESS {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(source).unwrap();
            let Ok(mut stream) = socket.connect(target).await else {
                continue;
            };
            // A partial head: never finished.
            if stream
                .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
                .await
                .is_ok()
            {
                open.push(stream);
            }
        }
    }
    open
}

/// Whether the node has closed `stream` (EOF or reset), checked without blocking long.
async fn closed(stream: &mut tokio::net::TcpStream) -> bool {
    let mut buffer = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buffer)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[test]
fn idle_connections_cannot_starve_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let node = Daemon::node(
        dir,
        "n",
        &[
            (
                "MERIDIAN_HTTP_CONNECTIONS_MAX",
                &CONNECTIONS_MAX.to_string(),
            ),
            (
                "MERIDIAN_HTTP_CONNECTIONS_PER_CLIENT_MAX",
                &PER_CLIENT_MAX.to_string(),
            ),
            (
                "MERIDIAN_HTTP_HEADER_READ_TIMEOUT_SECS",
                &HEADER_READ_TIMEOUT_SECS.to_string(),
            ),
        ],
    );
    let target: SocketAddr = node.address.parse().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let mut streams = runtime.block_on(flood(target));
    let flood_took = started.elapsed();

    // While the flood holds its connections, /health answers.
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let asked = Instant::now();
        let answer = node.get("/health");
        assert_eq!(answer.status, 200);
        slowest = slowest.max(asked.elapsed());
    }
    println!(
        "flood of {} connections opened in {flood_took:?}; slowest /health under it: {slowest:?}",
        usize::from(CLIENT_ADDRESSES) * CONNECTIONS_PER_ADDRESS
    );
    assert!(slowest < Duration::from_secs(1), "/health took {slowest:?}");
    let refused = node.metric("meridian_http_connections_refused_per_client_total")
        + node.metric("meridian_http_connections_refused_max_total");
    let attempted = usize::from(CLIENT_ADDRESSES) * CONNECTIONS_PER_ADDRESS;
    let admitted = usize::from(CLIENT_ADDRESSES) * PER_CLIENT_MAX;
    assert!(
        refused >= (attempted - admitted) as f64,
        "{refused} connections refused; expected at least {}",
        attempted - admitted
    );
    assert!(node.metric("meridian_http_connections_open") <= CONNECTIONS_MAX as f64);

    // Past the header-read timeout every partial connection has been closed by the node.
    std::thread::sleep(Duration::from_secs(HEADER_READ_TIMEOUT_SECS + 1));
    let still_open = runtime.block_on(async {
        let mut still_open = 0;
        for stream in &mut streams {
            if !closed(stream).await {
                still_open += 1;
            }
        }
        still_open
    });
    assert_eq!(still_open, 0, "partial heads still held after the timeout");
    assert!(node.metric("meridian_http_connections_open") <= 1.0);
    // Every admitted flood connection ended in an error (the header-read timeout) or was
    // evicted to make room for a client holding fewer (this test's own requests, and later
    // flood addresses). The counts depend on timing (connections that time out during the
    // flood free their places for later ones), so compare with what the node says it
    // accepted; this test's own requests (ten /health, eight /metrics) are the only
    // connections that ended cleanly.
    let accepted = node.metric("meridian_http_connections_accepted_total");
    let errors = node.metric("meridian_http_connection_errors_total");
    let evicted = node.metric("meridian_http_connections_evicted_total");
    assert!(
        accepted >= CONNECTIONS_MAX as f64 * 0.9,
        "only {accepted} connections accepted"
    );
    assert!(
        errors + evicted >= accepted - 25.0,
        "{errors} errors and {evicted} evictions of {accepted} accepted connections"
    );
    drop(streams);
    // And the node goes on serving.
    assert_eq!(node.get("/health").status, 200);
}

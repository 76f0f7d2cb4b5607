//! Large bodies stream through Runway both ways with flat memory. Its own test binary (not in `it/`), so
//! the process's peak RSS reflects this test alone.

#[path = "it/support/mod.rs"]
mod support;

use serde_json::json;
use support::*;

const AUD: &str = "stream";

fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_upload_and_download_stream_with_bounded_memory() {
    let pki = Pki::generate();
    let key = SigningKey::ec("k1");
    let idp = TestIdp::start(jwks(&[&key])).await;
    let upstream = EchoUpstream::start(&pki).await;
    let config = format!(
        "{}{}{}",
        base_config(&pki, &upstream.url()).replace("[admin]", "max_body_bytes = 0\n\n[admin]"),
        issuer_block("ci", "oidc", &idp.issuer(), AUD, ""),
        open_route("all", "/", "ci")
    );
    let runway = Runway::start(&pki, &config).await;
    runway.wait_ready().await;
    let client = TestClient::new(&pki);
    let token = key.mint(&claims(&idp.issuer(), AUD, json!({})));

    // Warm up every path once so allocator arenas and pools exist before the baseline.
    let warm = client.post_streaming(&runway.url("/up"), Some(&token), 1 << 20).await;
    assert_eq!(warm.status, 200);
    let baseline = rss_kib("VmRSS:");

    const UPLOAD: u64 = 512 * 1024 * 1024;
    let res = client.post_streaming(&runway.url("/up"), Some(&token), UPLOAD).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let echo = res.json();
    assert_eq!(echo["body_len"], UPLOAD, "every byte reached Kong");
    assert_eq!(echo["body_sha256"], streaming_body_sha256(UPLOAD), "unaltered");
    let upload_peak = rss_kib("VmHWM:");
    let grown_mib = upload_peak.saturating_sub(baseline) / 1024;
    eprintln!("baseline RSS {} MiB, peak {} MiB after a 512 MiB upload", baseline / 1024, upload_peak / 1024);
    assert!(grown_mib < 48, "memory grew by {grown_mib} MiB during the upload: the body is being buffered");

    const DOWNLOAD: u64 = 64 * 1024 * 1024;
    let res = client.get(&runway.url(&format!("/stream/{DOWNLOAD}")), Some(&token)).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body.len() as u64, DOWNLOAD);
    drop(res);
    // The test client buffers the 64 MiB download itself; Runway and the upstream must stream it.
    let peak = rss_kib("VmHWM:");
    let grown_mib = peak.saturating_sub(upload_peak) / 1024;
    assert!(grown_mib < 64 + 32, "memory grew by {grown_mib} MiB during the download");
}

//! Hot reload (contract §8) and overload: `POST /reload` and SIGHUP apply a new config atomically, refuse a
//! broken one while the old keeps serving, lose no request under traffic, carry issuer keys and used token
//! ids across, pick up renewed certificates from disk without a signal; requests above the in-flight bound are
//! shed with 503; SIGTERM lets a slow request finish.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::pki::Usage;
use crate::support::*;
use serde_json::json;

const AUD: &str = "https://deploy.example.com";

fn config_with(b: &Backends, routes: &str) -> String {
    format!(
        "{}{}{}",
        base_config(&b.pki, &b.upstream.url()),
        issuer_block("gitlab", "gitlab", &b.idp.issuer(), AUD, ""),
        routes
    )
}

#[tokio::test]
async fn reload_applies_a_new_config_and_refuses_a_broken_one() {
    let b = Backends::start().await;
    let runway = Runway::start(&b.pki, &config_with(&b, &open_route("one", "/one", "gitlab"))).await;
    runway.wait_ready().await;
    let client = TestClient::new(&b.pki);
    let token = b.key.mint(&claims(&b.idp.issuer(), AUD, json!({})));
    assert_eq!(client.get(&runway.url("/one"), Some(&token)).await.status, 200);
    assert_eq!(client.get(&runway.url("/two"), Some(&token)).await.status, 404);

    runway.rewrite_config(&config_with(&b, &open_route("two", "/two", "gitlab")));
    let (status, body) = runway.reload().await;
    assert_eq!((status, body["reloaded"].as_bool(), body["generation"].as_u64()), (200, Some(true), Some(2)));
    assert_eq!(client.get(&runway.url("/two"), Some(&token)).await.status, 200, "the new route serves");
    assert_eq!(client.get(&runway.url("/one"), Some(&token)).await.status, 404, "the old route is gone");

    // Each broken config is refused with the key at fault; the running one keeps serving.
    let good = config_with(&b, &open_route("two", "/two", "gitlab"));
    let broken = [
        (config_with(&b, &open_route("three", "/three", "gitlub")), "routes[0].allow[0].issuer"),
        (good.replace("[server]\n", "[server]\nmax_conections = 5\n"), "max_conections"),
        (good.replace(&b.pki.server_cert.display().to_string(), "/nonexistent/server.pem"), "server.tls_cert"),
        (good.replace("listen = \"127.0.0.1:0\"\ntls_cert", "listen = \"127.0.0.1:1\"\ntls_cert"), "server.listen"),
        ("[server\n".to_string(), "runway.toml"),
    ];
    for (text, key) in &broken {
        runway.rewrite_config(text);
        let (status, body) = runway.reload().await;
        assert_eq!(status, 422, "{key}: {body}");
        assert_eq!((body["reloaded"].as_bool(), body["generation"].as_u64()), (Some(false), Some(2)));
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains(key), "the error names {key}: {error}");
        assert_eq!(client.get(&runway.url("/two"), Some(&token)).await.status, 200, "old config still serves");
    }
    assert_eq!(runway.metric("runway_config_reloads_total", &[("result", "ok")]).await.unwrap_or(0.0), 1.0);
    assert_eq!(
        runway.metric("runway_config_reloads_total", &[("result", "error")]).await.unwrap_or(0.0),
        broken.len() as f64
    );
    let (status, _) = runway.admin_get("/reload").await;
    assert_eq!(status, 405, "a reload is a POST");

    // An issuer the new config drops leaves no key series behind.
    assert_eq!(runway.metric("runway_jwks_keys", &[("issuer", "gitlab")]).await.unwrap_or(0.0), 1.0);
    let anonymous = "\n[[routes]]\nname = \"status\"\npath_prefix = \"/status\"\nanonymous = true\n";
    runway.rewrite_config(&format!("{}{anonymous}", base_config(&b.pki, &b.upstream.url())));
    assert_eq!(runway.reload().await.0, 200);
    let (_, metrics) = runway.admin_get("/metrics").await;
    let stale: Vec<&str> = metrics.lines().filter(|l| l.starts_with("runway_jwks") && l.contains("gitlab")).collect();
    assert!(stale.is_empty(), "key series of a removed issuer remain: {stale:?}");
    assert_eq!(client.get(&runway.url("/status"), None).await.status, 200);
}

#[tokio::test]
async fn reload_under_continuous_traffic_loses_no_request() {
    let b = Backends::start().await;
    // Two configs that both allow the traffic; the second also maps a claim to a header, so we can see which
    // one answered.
    let plain = config_with(&b, &open_route("deploy", "/deploy", "gitlab"));
    let mapped = plain.replace(
        "audiences = [\"https://deploy.example.com\"]\n",
        "audiences = [\"https://deploy.example.com\"]\n[issuers.headers]\n\"X-Runway-Team\" = \"team\"\n",
    );
    let runway = Runway::start(&b.pki, &plain).await;
    runway.wait_ready().await;
    let token = b.key.mint(&claims(&b.idp.issuer(), AUD, json!({"team": "platform"})));
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..6 {
        // Half HTTP/1.1 keep-alive, half h2 (many streams on one connection across the swap).
        let client = if i % 2 == 0 { TestClient::new(&b.pki) } else { TestClient::http2(&b.pki) };
        let (url, token) = (runway.url(&format!("/deploy/{i}")), token.clone());
        let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
        clients.spawn(async move {
            let mut last_team = None;
            while !stop.load(Ordering::Relaxed) {
                let response = client.get(&url, Some(&token)).await;
                sent.fetch_add(1, Ordering::Relaxed);
                if response.status != 200 {
                    failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("failed during reload: {} {}", response.status, response.text());
                }
                last_team = response.json()["headers"]["x-runway-team"][0].as_str().map(str::to_string);
            }
            last_team
        });
    }
    const RELOADS: u64 = 12;
    for n in 0..RELOADS {
        tokio::time::sleep(Duration::from_millis(150)).await;
        runway.rewrite_config(if n % 2 == 0 { &mapped } else { &plain });
        let (status, body) = runway.reload().await;
        assert_eq!(status, 200, "{body}");
    }
    // The last config (RELOADS is even: `plain`) was followed by one more `mapped`.
    runway.rewrite_config(&mapped);
    assert_eq!(runway.reload().await.0, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let teams: Vec<Option<String>> = clients.join_all().await;
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("{sent} requests across {} reloads", RELOADS + 1);
    assert_eq!(failed, 0, "no request may fail because of a reload ({sent} sent)");
    assert!(sent > 100, "traffic kept flowing during the reloads: {sent}");
    assert!(teams.iter().all(|t| t.as_deref() == Some("platform")), "every connection runs the newest config");
    assert_eq!(
        runway.metric("runway_config_reloads_total", &[("result", "ok")]).await.unwrap_or(0.0),
        (RELOADS + 1) as f64
    );
}

#[tokio::test]
async fn renewed_certificates_are_picked_up_from_disk_without_a_signal() {
    let b = Backends::start().await;
    // The files cert-manager would manage: the listener's pair and Runway's client pair towards Kong.
    let (server_cert, server_key) = b.pki.issue("live-server", "runway-server", Usage::Server);
    let (client_cert, client_key) = b.pki.issue("live-client", "runway-client", Usage::Client);
    let config = config_with(&b, &open_route("all", "/", "gitlab"))
        .replace(&b.pki.server_cert.display().to_string(), &server_cert.display().to_string())
        .replace(&b.pki.server_key.display().to_string(), &server_key.display().to_string())
        .replace(&b.pki.client_cert.display().to_string(), &client_cert.display().to_string())
        .replace(&b.pki.client_key.display().to_string(), &client_key.display().to_string());
    let runway = Runway::start_watching(&b.pki, &config, Duration::from_millis(100)).await;
    runway.wait_ready().await;
    let client = TestClient::new(&b.pki);
    let token = b.key.mint(&claims(&b.idp.issuer(), AUD, json!({})));
    assert_eq!(served_certificate_cn(&b.pki, runway.addr).await.as_deref(), Some("runway-server"));
    assert_eq!(client.get(&runway.url("/x"), Some(&token)).await.json()["client_cert_cn"], "runway-client");

    // Renewal the way cert-manager and Vault agent do it: new files moved into place.
    for (name, cn, usage, cert, key) in [
        ("renewed-server", "runway-server-renewed", Usage::Server, &server_cert, &server_key),
        ("renewed-client", "runway-client-renewed", Usage::Client, &client_cert, &client_key),
    ] {
        let (new_cert, new_key) = b.pki.issue(name, cn, usage);
        std::fs::rename(new_key, key).unwrap_or_else(|e| panic!("{e}"));
        std::fs::rename(new_cert, cert).unwrap_or_else(|e| panic!("{e}"));
    }
    let mut served = None;
    for _ in 0..50 {
        served = served_certificate_cn(&b.pki, runway.addr).await;
        if served.as_deref() == Some("runway-server-renewed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(served.as_deref(), Some("runway-server-renewed"), "new handshakes use the renewed certificate");
    let fresh = TestClient::new(&b.pki);
    let echo = fresh.get(&runway.url("/x"), Some(&token)).await.json();
    assert_eq!(echo["client_cert_cn"], "runway-client-renewed", "Kong sees the renewed client certificate");
    assert_eq!(
        runway.metric("runway_config_reloads_total", &[("result", "ok")]).await.unwrap_or(0.0),
        1.0,
        "one reload for both pairs"
    );

    // A key that does not match its certificate (a half-finished write that stays broken) is refused; the
    // renewed pair keeps serving.
    let (_, unrelated_key) = b.pki.issue("unrelated", "unrelated", Usage::Server);
    std::fs::rename(unrelated_key, &server_key).unwrap_or_else(|e| panic!("{e}"));
    let mut errors = 0.0;
    for _ in 0..50 {
        errors = runway.metric("runway_config_reloads_total", &[("result", "error")]).await.unwrap_or(0.0);
        if errors > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(errors, 1.0, "the broken pair is refused once, not retried every poll");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(runway.metric("runway_config_reloads_total", &[("result", "error")]).await.unwrap_or(0.0), 1.0);
    assert_eq!(served_certificate_cn(&b.pki, runway.addr).await.as_deref(), Some("runway-server-renewed"));
    assert_eq!(fresh.get(&runway.url("/x"), Some(&token)).await.status, 200);
}

#[tokio::test]
async fn keys_and_used_token_ids_outlive_a_reload() {
    let b = Backends::start().await;
    let k2 = SigningKey::rsa("k2");
    let file = b.pki.write_file("static-jwks.json", jwks(&[&b.key]).to_string().as_bytes());
    let issuers = format!(
        "{}{}",
        issuer_block("gitlab", "gitlab", &b.idp.issuer(), AUD, ""),
        issuer_block("static", "oidc", "https://static.example", AUD, &format!("jwks_file = \"{}\"", file.display()))
    );
    let routes = r#"
[[routes]]
name = "once"
path_prefix = "/once"
one_time = true
[[routes.allow]]
issuer = "gitlab"

[[routes]]
name = "static"
path_prefix = "/static"
[[routes.allow]]
issuer = "static"
"#;
    let config = format!("{}{issuers}{routes}", base_config(&b.pki, &b.upstream.url()));
    let runway = Runway::start(&b.pki, &config).await;
    runway.wait_ready().await;
    let client = TestClient::new(&b.pki);
    let once = b.key.mint(&claims(&b.idp.issuer(), AUD, json!({"jti": "deploy-1"})));
    assert_eq!(client.get(&runway.url("/once"), Some(&once)).await.status, 200);
    let static_k1 = b.key.mint(&claims("https://static.example", AUD, json!({})));
    let static_k2 = k2.mint(&claims("https://static.example", AUD, json!({})));
    assert_eq!(client.get(&runway.url("/static"), Some(&static_k2)).await.status, 401, "k2 not published yet");

    // The IdP goes down; the JWKS file rotates to k2; the config is reloaded.
    b.idp.set_down(true);
    std::fs::write(&file, jwks(&[&k2]).to_string()).unwrap_or_else(|e| panic!("{e}"));
    let (status, body) = runway.reload().await;
    assert_eq!(status, 200, "{body}");
    let fresh = b.key.mint(&claims(&b.idp.issuer(), AUD, json!({"jti": "deploy-2"})));
    assert_eq!(client.get(&runway.url("/once"), Some(&fresh)).await.status, 200, "remote keys carried over");
    let (ready, _) = runway.admin_get("/readyz").await;
    assert_eq!(ready, 200, "a reload while the IdP is down does not make Runway unready");
    let replayed = client.get(&runway.url("/once"), Some(&once)).await;
    assert_eq!(replayed.status, 401, "a token used before the reload stays used");
    assert!(replayed.header("www-authenticate").unwrap_or_default().contains("token already used"));
    assert_eq!(client.get(&runway.url("/static"), Some(&static_k2)).await.status, 200, "JWKS file re-read");
    assert_eq!(client.get(&runway.url("/static"), Some(&static_k1)).await.status, 401, "removed key refused");
}

#[tokio::test]
async fn requests_over_the_in_flight_bound_are_shed_with_503() {
    let b = Backends::start().await;
    let config = config_with(&b, &open_route("all", "/", "gitlab"))
        .replace("[server]\n", "[server]\nmax_concurrent_requests = 2\n");
    let runway = Runway::start(&b.pki, &config).await;
    runway.wait_ready().await;
    let token = b.key.mint(&claims(&b.idp.issuer(), AUD, json!({})));
    b.upstream.set_delay(Duration::from_millis(800));
    let client = TestClient::http2(&b.pki);
    let urls: Vec<String> = (0..6).map(|i| runway.url(&format!("/slow/{i}"))).collect();
    let requests = urls.iter().map(|url| client.get(url, Some(&token)));
    let responses = futures_util::future::join_all(requests).await;
    let ok = responses.iter().filter(|r| r.status == 200).count();
    let shed: Vec<_> = responses.iter().filter(|r| r.status == 503).collect();
    assert_eq!((ok, shed.len()), (2, 4), "two in flight, the rest shed at once");
    for response in &shed {
        assert_eq!(response.header("retry-after").as_deref(), Some("1"));
        assert_eq!(response.header("content-type").as_deref(), Some("application/problem+json"));
        assert!(response.json()["detail"].as_str().unwrap_or_default().contains("overloaded"));
    }
    assert_eq!(b.upstream.requests(), 2, "shed requests never reach Kong");
    b.upstream.set_delay(Duration::ZERO);
    for _ in 0..3 {
        assert_eq!(client.get(&runway.url("/after"), Some(&token)).await.status, 200, "capacity comes back");
    }
    // The bound follows a reload; held slots are not forgotten.
    runway.rewrite_config(&config.replace("max_concurrent_requests = 2", "max_concurrent_requests = 8"));
    assert_eq!(runway.reload().await.0, 200);
    b.upstream.set_delay(Duration::from_millis(500));
    let urls: Vec<String> = (0..8).map(|i| runway.url(&format!("/wide/{i}"))).collect();
    let requests = urls.iter().map(|url| client.get(url, Some(&token)));
    let statuses: Vec<u16> = futures_util::future::join_all(requests).await.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(statuses, vec![200; 8]);
}

#[tokio::test]
async fn the_binary_reloads_on_sighup_and_finishes_a_slow_request_on_sigterm() {
    let b = Backends::start().await;
    let binary = Binary::spawn(&b.pki, &config_with(&b, &open_route("one", "/one", "gitlab"))).await;
    let client = TestClient::new(&b.pki);
    let token = b.key.mint(&claims(&b.idp.issuer(), AUD, json!({})));
    let mut status = 0;
    for _ in 0..100 {
        status = client.get(&binary.url("/one"), Some(&token)).await.status.as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200);

    let write = |text: String| std::fs::write(&binary.config_path, text).unwrap_or_else(|e| panic!("{e}"));
    write(config_with(&b, &open_route("two", "/two", "gitlab")));
    binary.signal("HUP");
    let mut moved = false;
    for _ in 0..100 {
        if client.get(&binary.url("/two"), Some(&token)).await.status == 200 {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(moved, "SIGHUP applied the new config");
    write(config_with(&b, &open_route("three", "/three", "nobody")));
    binary.signal("HUP");
    let mut refused = false;
    for _ in 0..100 {
        if binary.stderr().contains("configuration reload refused") {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "the refusal is logged");
    assert!(binary.stderr().contains("routes[0].allow[0].issuer"), "the log names the key at fault");
    assert_eq!(client.get(&binary.url("/two"), Some(&token)).await.status, 200, "the old config keeps serving");

    // SIGTERM while a slow request is in flight: it completes, then the process exits 0.
    b.upstream.set_delay(Duration::from_millis(1500));
    let slow = {
        let (client, url, token) = (TestClient::new(&b.pki), binary.url("/two/slow"), token.clone());
        tokio::spawn(async move { client.get(&url, Some(&token)).await })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    binary.signal("TERM");
    let response = slow.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(response.status, 200, "the in-flight request finished: {}", response.text());
    let output = binary.wait().await;
    assert!(output.status.success(), "exit 0 after draining: {:?}", output.status);
}

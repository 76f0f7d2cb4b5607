//! `runway dev`: the printed allowed, denied and expired commands, run as printed, answer 200, 403 and
//! 401, and Ctrl-C (SIGINT) stops everything with exit 0.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn dev_demo_commands_work_as_printed() {
    if Command::new("curl").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "curl is required in CI (.ci/run installs it)");
        eprintln!("skipping: curl is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_runway"))
        .args(["dev", "--dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut lines = BufReader::new(stdout).lines();
    let mut printed = Vec::new();
    let started = Instant::now();
    while let Some(Ok(line)) = lines.next() {
        let done = printed.last().is_some_and(|l: &String| l.starts_with("# expired"));
        printed.push(line);
        if done {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "runway dev printed no commands");
    }
    let command_after = |label: &str| {
        let at = printed.iter().position(|l| l.starts_with(&format!("# {label}")));
        let at = at.unwrap_or_else(|| panic!("no '# {label}' line in:\n{}", printed.join("\n")));
        printed.get(at + 1).cloned().unwrap_or_default()
    };
    for (label, expected) in [("allowed", "200"), ("denied", "403"), ("expired", "401")] {
        let cmd = command_after(label);
        assert!(cmd.starts_with("curl "), "{label}: {cmd}");
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("{cmd} -o /dev/null -w '%{{http_code}}'"))
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(String::from_utf8_lossy(&out.stdout), expected, "{label}: {cmd}");
    }
    let body = Command::new("sh").arg("-c").arg(command_after("denied")).output().unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&body.stdout);
    assert!(text.contains("environment") && text.contains("staging"), "the 403 explains itself: {text}");
    let echo = Command::new("sh").arg("-c").arg(command_after("allowed")).output().unwrap_or_else(|e| panic!("{e}"));
    let echo: serde_json::Value = serde_json::from_slice(&echo.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(echo["headers"]["x-runway-project"], serde_json::json!(["platform/api"]), "{echo}");
    assert!(echo["client_certificate"].is_string(), "Kong stand-in saw Runway's client certificate: {echo}");
    assert!(dir.path().join("runway.toml").exists() && dir.path().join("ca.pem").exists());
    // The demo's config is a trust policy worth copying: `runway lint` finds nothing at error level.
    let lint = Command::new(env!("CARGO_BIN_EXE_runway"))
        .args(["lint", "-c"])
        .arg(dir.path().join("runway.toml"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(lint.status.success(), "the demo config lints clean: {}", String::from_utf8_lossy(&lint.stdout));

    let _ = Command::new("kill").arg("-INT").arg(child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap_or_else(|e| panic!("{e}")) {
            assert!(status.success(), "exit status after Ctrl-C: {status:?}");
            break;
        }
        assert!(Instant::now() < deadline, "runway dev did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    }
}

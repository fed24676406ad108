//! `tokenvend demo`, run as a user would: the commands it prints work as printed, and its
//! dashboard shows the demo tenants in a real browser (so this needs Chromium).

use std::path::Path;
use std::process::Stdio;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::tokenvend;

/// The commands `tokenvend demo` prints, run as printed.
#[cfg(feature = "demo")]
#[tokio::test]
async fn the_demo_comes_up_and_its_printed_commands_work() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::from(tokenvend(dir.path()))
        .args(["--listen", "127.0.0.1:0", "demo"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    while let Some(line) =
        tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
            .await
            .expect("the demo prints its commands within 30 s")
            .unwrap()
    {
        let done = line.contains("Ctrl-C");
        printed.push(line);
        if done {
            break;
        }
    }
    let text = printed.join("\n");
    // It listens on port 0 and prints where: the dashboard's URL names the port.
    let dashboard = text
        .split_whitespace()
        .find(|word| word.starts_with("http://127.0.0.1:") && word.ends_with("/dashboard"))
        .unwrap_or_else(|| panic!("the dashboard URL is printed: {text}"))
        .to_owned();
    let curls: Vec<&str> = printed
        .iter()
        .map(|l| l.trim())
        .filter(|l| l.starts_with("curl "))
        .collect();
    assert_eq!(curls.len(), 4, "{text}");
    let mut answers = Vec::new();
    for line in &curls {
        let output = tokio::process::Command::new("sh")
            .args(["-c", line])
            .output()
            .await
            .unwrap();
        assert!(output.status.success(), "{line}");
        let body: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{line}: {e}: {}", String::from_utf8_lossy(&output.stdout)));
        answers.push(body);
    }
    assert!(answers[0]["access_token"].is_string(), "{}", answers[0]);
    let states: Vec<(String, String)> = answers[1]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["tenant_id"].as_str().unwrap().to_owned(),
                s["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("acme".into(), "valid".into()),
            ("globex".into(), "valid".into()),
            ("initech".into(), "failing".into())
        ]
    );
    assert_eq!(answers[2]["token_type"], "JWT");
    assert_eq!(answers[2]["access_token"], answers[0]["access_token"]);
    // The proxy line reaches the issuer's edX-like API with acme's token.
    assert_eq!(answers[3]["method"], "GET", "{}", answers[3]);
    assert_eq!(
        answers[3]["headers"]["authorization"][0],
        format!("JWT {}", answers[0]["access_token"].as_str().unwrap())
    );

    // The printed dashboard URL and key, in a real browser: the demo tenants, the failing
    // one included.
    let key = text
        .split("caller key:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the printed caller key");
    let (_driver, browser) = super::dashboard::browser().await;
    browser.goto(&dashboard).await.unwrap();
    super::dashboard::type_key(&browser, key).await;
    super::dashboard::expect_rows(
        &browser,
        &[
            ("acme", "valid"),
            ("globex", "valid"),
            ("initech", "failing"),
        ],
    )
    .await;
    let shot = super::dashboard::artifact("demo-dashboard.png");
    std::fs::write(&shot, browser.screenshot().await.unwrap()).unwrap();
    eprintln!("demo dashboard screenshot: {}", shot.display());
    browser.close().await.unwrap();

    let pid = child.id().unwrap();
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().await.unwrap();
    assert!(exit.success(), "Ctrl-C stops the demo cleanly: {exit:?}");
    let mut rest = String::new();
    while let Ok(Some(line)) = lines.next_line().await {
        rest.push_str(&line);
    }
    assert!(rest.contains("demo stopped"), "{rest}");
    let store = text
        .split("store in ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .unwrap();
    assert!(
        !Path::new(store).exists(),
        "the temporary store {store} is deleted on exit"
    );
}

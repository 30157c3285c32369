//! The README's curl examples work as printed (only the port differs: the test server listens
//! on a free one instead of 8080).

use crate::common;

use std::process::Command;

fn readme_curl_lines() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    readme
        .lines()
        .filter(|l| l.starts_with("curl "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_curl_examples_work_as_printed() {
    let running = common::start().await;
    let url = running.http_url();
    let lines = readme_curl_lines();
    assert!(lines.len() >= 10, "the README shows curl examples");
    let run = |command: String| {
        tokio::task::spawn_blocking(move || Command::new("sh").arg("-c").arg(&command).output().unwrap())
    };
    // Streams are read for a second each, all at once, while the other lines run in order.
    let mut streams = Vec::new();
    for line in lines {
        let line = line.replace("http://localhost:8080", &url);
        if line.contains(" -sN ") {
            // A stream never ends by itself: read it for a moment.
            streams.push((run(format!("{line} --max-time 1")), line));
            continue;
        }
        let out = run(format!("{line} -w '\\nstatus=%{{http_code}}'"))
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "{line}: {stdout}");
        let status: u16 = stdout.rsplit("status=").next().unwrap().trim().parse().unwrap();
        if line.contains("-d '101'") {
            assert_eq!(status, 400, "{line}");
            assert!(stdout.contains("\"rule\":\"maximum\""), "{stdout}");
        } else {
            assert!((200..300).contains(&status), "{line}: {status} {stdout}");
        }
    }
    assert!(!streams.is_empty(), "the README shows streams");
    for (out, line) in streams {
        let out = out.await.unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        // curl exits 28 when --max-time ends the stream; the subscription was confirmed.
        assert_eq!(out.status.code(), Some(28), "{line}: {stdout}");
        assert!(stdout.contains(": subscribed"), "{line}: {stdout}");
    }
    running.stop().await;
}

#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A short run of the hostile load test (examples/hostile.rs) against the `inspect`
//! example: genuine, forged, oversized, probe, header-less, stalled and aborted requests on
//! many connections at once must each get exactly the answer WeChat Pay's rules require.
//! The full-size run with RSS figures is `bash benches/hostile.sh`.

use std::process::Command;

use example_support::harness::binary;

#[test]
fn every_hostile_request_gets_the_required_answer() {
    let output = Command::new(binary("hostile"))
        .arg("--server")
        .arg(binary("inspect"))
        .args(["--seconds", "4", "--rounds", "2", "--connections", "16"])
        .args([
            "--stalled",
            "4",
            "--aborting",
            "2",
            "--max-rss-growth-mib",
            "64",
        ])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{report}\n{errors}");
    assert!(report.contains("OK: every answer as required"), "{report}");
    // Every kind was really exercised, in both rounds.
    for kind in [
        "Genuine",
        "Forged",
        "DeclaredTooLarge",
        "StreamedTooLarge",
        "Probe",
        "NoHeaders",
        "Stalled",
        "Aborted",
    ] {
        let lines: Vec<&str> = report
            .lines()
            .filter(|line| line.trim_start().starts_with(kind))
            .collect();
        assert_eq!(lines.len(), 2, "{kind} in each round:\n{report}");
        for line in lines {
            let numbers: Vec<u64> = line
                .split_whitespace()
                .filter_map(|word| word.parse().ok())
                .collect();
            assert!(numbers[0] > 0, "no {kind} request was sent:\n{report}");
            assert_eq!(numbers[0], numbers[1], "{line}");
            assert_eq!(numbers[2], 0, "{line}");
        }
    }
}

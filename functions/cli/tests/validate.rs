//! `sluice validate`: exit codes and the loader's file:line in the output.

use std::process::Command;

fn sluice(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .output()
        .expect("run sluice");
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_example_manifest_is_valid() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../infra/sluice.example.yaml"
    );
    let (code, stdout, stderr) = sluice(&["validate", example]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("ok: "), "{stdout}");
}

#[test]
fn an_invalid_manifest_exits_1_with_file_and_line() {
    let dir = std::env::temp_dir().join(format!("sluice-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.yaml");
    // The example with an out-of-range timeout: the error names that line.
    let example = include_str!("../../../infra/sluice.example.yaml");
    assert!(example.contains("timeout_ms: 10000"));
    let bad = example.replacen("timeout_ms: 10000", "timeout_ms: 0", 1);
    let line = 1 + bad
        .lines()
        .position(|l| l.trim_start().starts_with("timeout_ms: 0"))
        .unwrap();
    std::fs::write(&path, bad).unwrap();
    let (code, stdout, stderr) = sluice(&["validate", path.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stderr.contains(&format!("bad.yaml:{line}")), "{stderr}");
    assert!(stderr.contains("timeout_ms"), "{stderr}");
}

#[test]
fn a_usage_error_exits_2() {
    let (code, _, stderr) = sluice(&["frobnicate"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("unrecognized subcommand"), "{stderr}");
    assert!(stderr.contains("Usage: sluice"), "{stderr}");
}

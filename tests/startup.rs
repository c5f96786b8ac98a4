//! The binary refuses settings it cannot honour, saying which, before it
//! listens or touches the store.

mod common;

use std::net::TcpListener;
use std::process::Output;

use common::binary;

/// Runs `entitlements serve` with `args` and `env` on a fresh data
/// directory, expecting it to exit on its own; returns its output.
fn serve_until_exit(args: &[&str], env: &[(&str, &str)]) -> Output {
    let data = tempfile::tempdir().unwrap();
    let mut command = binary::entitlements(&["serve"]);
    command.args(args).arg("--data-dir").arg(data.path());
    for (name, value) in env {
        command.env(name, value);
    }
    binary::run_to_exit(command)
}

/// Asserts the server refused (non-zero, never listening) and that its
/// error names `expected`.
#[track_caller]
fn assert_refused(output: &Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "exited with success: {stderr}");
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("listening"),
        "it listened"
    );
    assert!(stderr.contains(expected), "{expected:?} not in: {stderr}");
}

#[test]
fn dev_auth_off_loopback_is_refused_before_binding() {
    // The address is taken: a server that binds before checking fails with
    // "address in use" instead of the --dev-auth refusal.
    let taken = TcpListener::bind("0.0.0.0:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let output = serve_until_exit(&["--dev-auth", "--listen", &address], &[]);
    assert_refused(&output, "--dev-auth");
    assert_refused(&output, "loopback");
}

#[test]
fn address_already_in_use_names_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let output = serve_until_exit(&["--dev-auth", "--listen", &address], &[]);
    assert_refused(&output, &format!("cannot listen on {address}"));
}

#[test]
fn unknown_environment_settings_are_refused_by_name() {
    let output = serve_until_exit(
        &["--dev-auth", "--listen", "127.0.0.1:0"],
        &[("ENTITLEMENTS_AUTH__JWT_AUDIANCE", "entitlements")],
    );
    assert_refused(&output, "ENTITLEMENTS_AUTH__JWT_AUDIANCE");
}

#[test]
fn unknown_keys_in_the_settings_file_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("settings.toml");
    std::fs::write(&file, "[auth]\njwt_audiance = \"entitlements\"\n").unwrap();
    let output = serve_until_exit(
        &[
            "--dev-auth",
            "--listen",
            "127.0.0.1:0",
            "--config",
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert_refused(&output, "jwt_audiance");
}

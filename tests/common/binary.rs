//! The real server binary as a child process: for what needs the process
//! (signals, exit codes, start-up refusals, crashes).

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// `entitlements` with `args`, logging warnings and errors; a server's
/// admin listener takes an ephemeral port (servers run side by side).
pub fn entitlements(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_entitlements"));
    command
        .args(args)
        .env("RUST_LOG", "warn")
        .env("ENTITLEMENTS_ADMIN_LISTEN", "127.0.0.1:0");
    command
}

/// `entitlements serve` with development authentication (`loader` is a
/// global administrator) on an ephemeral loopback port and `data_dir`.
pub fn serve(data_dir: &Path) -> Command {
    let mut command = entitlements(&["serve", "--dev-auth", "--listen", "127.0.0.1:0"]);
    command
        .arg("--data-dir")
        .arg(data_dir)
        .env("ENTITLEMENTS_AUTH__GLOBAL_ADMINS", "loader");
    command
}

/// Starts `command` and returns the child with the address it prints once
/// it listens.
pub fn start(command: Command) -> (Child, String) {
    start_with(command, Stdio::inherit())
}

/// Like [`start`], with the child's log (stderr) going to `stderr`.
pub fn start_with(mut command: Command, stderr: Stdio) -> (Child, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("start the server binary");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = line
        .trim()
        .strip_prefix("entitlements listening on ")
        .unwrap_or_else(|| panic!("the server did not start: {line:?}"))
        .to_string();
    (child, address)
}

/// Waits up to `limit` for `child` to exit.
pub fn exit_within(child: &mut Child, limit: Duration) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > limit {
            child.kill().unwrap();
            panic!("the process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `command`, which must exit on its own within 30 seconds (a server
/// that starts instead of refusing fails here), and returns its output.
pub fn run_to_exit(mut command: Command) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the binary");
    let status = exit_within(&mut child, Duration::from_secs(30));
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut stderr)
        .unwrap();
    Output {
        status,
        stdout,
        stderr,
    }
}

/// Sends SIGTERM and waits for the exit.
pub fn terminate(mut child: Child) -> ExitStatus {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    exit_within(&mut child, Duration::from_secs(30))
}

//! The real server binary as a child process: started on the dataset,
//! timed until it announces its address, and measured from /proc.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// The identity the read RPCs use: a service principal that may ask
/// decisions about any user.
pub const READER: &str = "loadgen";
const LISTENING: &str = "entitlements listening on ";

pub struct Server {
    child: Child,
    pub address: SocketAddr,
    /// From spawn until the listening line: opening the store and loading
    /// the decision view.
    pub startup: Duration,
}

/// Resident and peak resident memory, KiB.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    pub rss_kib: u64,
    pub peak_kib: u64,
}

impl Server {
    /// A server on the dataset in `data_dir`, or on `store` (a PostgreSQL
    /// URL the dataset was copied to) when given.
    pub fn start(data_dir: &Path, store: Option<&str>) -> anyhow::Result<Self> {
        // A settings file rather than ENTITLEMENTS_AUTH__SERVICE_PRINCIPALS:
        // TOML says exactly what the list of tables is.
        let config = data_dir.join("loadgen-server.toml");
        std::fs::write(
            &config,
            format!(
                "[auth]\nservice_principals = [{{ id = \"{READER}\", roles = [\"decision-reader\"] }}]\n"
            ),
        )?;
        let started = Instant::now();
        let mut command = Command::new(env!("CARGO_BIN_EXE_entitlements"));
        command.arg("serve");
        if let Some(store) = store {
            command.args(["--store", store]);
        }
        let mut child = command
            .arg("--dev-auth")
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the server")?;
        let mut lines = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
        let address = loop {
            let line = lines
                .next()
                .context("the server exited before listening")??;
            if let Some(address) = line.strip_prefix(LISTENING) {
                break address.trim().parse()?;
            }
        };
        let startup = started.elapsed();
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(Self {
            child,
            address,
            startup,
        })
    }

    pub fn memory(&self) -> anyhow::Result<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            let line = status
                .lines()
                .find(|l| l.starts_with(name))
                .with_context(|| format!("no {name} in /proc status"))?;
            Ok(line[name.len()..]
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()?)
        };
        Ok(Memory {
            rss_kib: field("VmRSS:")?,
            peak_kib: field("VmHWM:")?,
        })
    }

    /// SIGTERM, so the server drains and closes the store cleanly (the
    /// next run reuses the data directory).
    pub fn stop(mut self) -> anyhow::Result<()> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Only if stop() did not run (an error on the way): do not leave a
        // server behind.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

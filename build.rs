//! Compiles the protos without a system protoc (protox is pure Rust), writes
//! the descriptor set that server reflection serves, and generates the list
//! of every RPC (`rpcs.rs`, included by `src/api/rpc.rs`) from the same
//! descriptors, so that the RPCs the code knows are the ones it serves.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use protox::prost::Message;
use protox::prost_reflect::prost_types::FileDescriptorSet;

/// The proto package whose services the RPC list covers.
const PACKAGE: &str = "entitlements.v1";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut files: Vec<_> = std::fs::read_dir("proto/entitlements/v1")?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|path| path.extension().is_some_and(|ext| ext == "proto"));
    files.sort();

    let descriptors = protox::compile(&files, ["proto"])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("entitlements_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    std::fs::write(out_dir.join("rpcs.rs"), rpc_list(&descriptors)?)?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    println!("cargo:rerun-if-changed=proto");
    git_commit();
    Ok(())
}

/// Sets `BUILD_GIT_COMMIT` (the build-info metric's `commit`; not
/// `ENTITLEMENTS_*`, because cargo also puts it in the environment of the
/// tests, whose servers would take it for a setting): as
/// `GIT_COMMIT` gives it in the build's environment (an image built
/// without `.git`), else
/// the checkout's HEAD, else "unknown". Rebuilds when HEAD moves.
fn git_commit() {
    println!("cargo:rerun-if-env-changed=GIT_COMMIT");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|output| output.status.success())
            .and_then(|output| String::from_utf8(output.stdout).ok())
            .map(|text| text.trim().to_string())
            .filter(|text| !text.is_empty())
    };
    let commit = std::env::var("GIT_COMMIT")
        .ok()
        .filter(|commit| !commit.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]));
    if commit.is_some() {
        // HEAD, and the file of the branch it names (or packed-refs, where
        // git packs it), change with each commit. Only this branch's: a
        // commit on another branch or worktree must not rebuild this one.
        let branch = git(&["symbolic-ref", "-q", "HEAD"]);
        for file in ["HEAD", "packed-refs"].into_iter().chain(branch.as_deref()) {
            // A path that does not exist would rerun this on every build.
            if let Some(path) = git(&["rev-parse", "--git-path", file])
                && Path::new(&path).exists()
            {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
    let commit = commit.unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=BUILD_GIT_COMMIT={commit}");
}

/// One RPC as the descriptors state it.
struct Method {
    service: String,
    name: String,
    input: String,
    client_streaming: bool,
    server_streaming: bool,
}

/// Rust source for the `Rpc` enum (one variant per RPC, named after the
/// method), the `SERVICES` list, and `RpcRequest` for each request message
/// that exactly one RPC takes.
fn rpc_list(descriptors: &FileDescriptorSet) -> Result<String, Box<dyn std::error::Error>> {
    let mut methods = Vec::new();
    let mut services = BTreeSet::new();
    for file in descriptors.file.iter().filter(|f| f.package() == PACKAGE) {
        for service in &file.service {
            let service_name = format!("{PACKAGE}.{}", service.name());
            services.insert(service_name.clone());
            for method in &service.method {
                methods.push(Method {
                    service: service_name.clone(),
                    name: method.name().to_string(),
                    input: method.input_type().to_string(),
                    client_streaming: method.client_streaming(),
                    server_streaming: method.server_streaming(),
                });
            }
        }
    }
    methods.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(pair) = methods.windows(2).find(|pair| pair[0].name == pair[1].name) {
        return Err(format!(
            "RPC {} is defined by both {} and {}: RPC names must be unique across services",
            pair[0].name, pair[0].service, pair[1].service
        )
        .into());
    }
    let mut takers: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for method in &methods {
        takers
            .entry(method.input.as_str())
            .or_default()
            .push(&method.name);
    }

    let mut out = String::new();
    out.push_str("// Generated by build.rs from the descriptors of proto/entitlements/v1.\n\n");
    out.push_str(
        "/// Every RPC of the `entitlements.v1` services, named after its method.\n\
         #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]\n\
         pub enum Rpc {\n",
    );
    for m in &methods {
        writeln!(out, "    /// `{}/{}`", m.service, m.name)?;
        writeln!(out, "    {},", m.name)?;
    }
    out.push_str("}\n\n");

    writeln!(out, "impl Rpc {{")?;
    writeln!(out, "    /// Every RPC, by name.")?;
    writeln!(out, "    pub const ALL: [Rpc; {}] = [", methods.len())?;
    for m in &methods {
        writeln!(out, "        Rpc::{},", m.name)?;
    }
    writeln!(out, "    ];\n")?;
    let mut table = |doc: &str, name: &str, ty: &str, value: &dyn Fn(&Method) -> String| {
        let _ = writeln!(out, "    /// {doc}");
        let _ = writeln!(out, "    pub const fn {name}(self) -> {ty} {{");
        let _ = writeln!(out, "        match self {{");
        for m in &methods {
            let _ = writeln!(out, "            Rpc::{} => {},", m.name, value(m));
        }
        let _ = writeln!(out, "        }}\n    }}\n");
    };
    table(
        "The method name, e.g. `CreateUser`.",
        "name",
        "&'static str",
        &|m| format!("{:?}", m.name),
    );
    table(
        "The full name of the service that serves it.",
        "service",
        "&'static str",
        &|m| format!("{:?}", m.service),
    );
    table(
        "The gRPC path: `/<service>/<method>`.",
        "path",
        "&'static str",
        &|m| format!("{:?}", format!("/{}/{}", m.service, m.name)),
    );
    table(
        "Whether the client sends a stream.",
        "client_streaming",
        "bool",
        &|m| m.client_streaming.to_string(),
    );
    table(
        "Whether the server answers with a stream.",
        "server_streaming",
        "bool",
        &|m| m.server_streaming.to_string(),
    );
    writeln!(out, "}}\n")?;

    writeln!(out, "/// The full name of every `entitlements.v1` service.")?;
    writeln!(out, "pub const SERVICES: [&str; {}] = [", services.len())?;
    for service in &services {
        writeln!(out, "    {service:?},")?;
    }
    writeln!(out, "];\n")?;

    let prefix = format!(".{PACKAGE}.");
    for (input, names) in &takers {
        let Some(message) = input.strip_prefix(&prefix) else {
            continue;
        };
        match names.as_slice() {
            [only] => writeln!(
                out,
                "impl RpcRequest for crate::pb::{message} {{\n    const RPC: Rpc = Rpc::{only};\n}}\n"
            )?,
            several => writeln!(
                out,
                "// {message} is the request of {}: no RpcRequest.\n",
                several.join(", ")
            )?,
        }
    }
    Ok(out)
}

//! The container image and the Kubernetes example agree with the binary:
//! the settings file in the ConfigMap loads, the pod's grace period covers
//! the preStop pause and the drain deadline, and the image's health check
//! is a command line the binary accepts.

use std::path::Path;

use clap::Parser;
use entitlements::cli::Cli;
use entitlements::config::{ServeArgs, Settings};

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The settings file the ConfigMap holds (its literal block).
fn configmap_settings() -> String {
    let configmap = read("deploy/kubernetes/configmap.yaml");
    let (_, block) = configmap
        .split_once("entitlements.toml: |\n")
        .expect("the settings file in the ConfigMap");
    block
        .lines()
        .take_while(|line| line.is_empty() || line.starts_with("    "))
        .map(|line| line.strip_prefix("    ").unwrap_or(line))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The number after `key:` in `text`.
fn number_after(text: &str, key: &str) -> u64 {
    let (_, rest) = text.split_once(key).unwrap_or_else(|| panic!("no {key}"));
    let digits: String = rest
        .trim_start_matches([':', ' ', '"', '['])
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number after {key}"))
}

#[test]
fn the_configmap_settings_load_and_the_grace_period_covers_the_drain() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("entitlements.toml");
    std::fs::write(&file, configmap_settings()).unwrap();
    let settings = Settings::load(&ServeArgs {
        config: Some(file),
        ..Default::default()
    })
    .expect("the ConfigMap's settings load");
    assert_eq!(settings.listen.port(), 50051);
    assert_eq!(settings.data_dir, Path::new("/data"));

    let deployment = read("deploy/kubernetes/deployment.yaml");
    let grace = number_after(&deployment, "terminationGracePeriodSeconds");
    let pre_stop = number_after(&deployment, "command: [\"sleep\", \"");
    let drain = settings.drain_deadline().as_secs();
    assert!(
        grace >= pre_stop + drain + 5,
        "terminationGracePeriodSeconds {grace} < preStop {pre_stop} + drain {drain} + 5"
    );
    assert!(deployment.contains("containerPort: 50051"));
    assert!(deployment.contains("grpc:\n              port: 50051"));
}

#[test]
fn the_image_exposes_both_ports_and_checks_health_with_the_binary() {
    let dockerfile = read("Dockerfile");
    assert!(dockerfile.contains("EXPOSE 50051 9464"));
    assert!(dockerfile.contains("VOLUME /data"));
    assert!(dockerfile.contains("USER 10001"));
    let (_, check) = dockerfile
        .split_once("CMD [\"entitlements\", ")
        .expect("a HEALTHCHECK running the binary");
    let args: Vec<&str> = check
        .split(']')
        .next()
        .unwrap()
        .split(", ")
        .map(|arg| arg.trim_matches('"'))
        .collect();
    let command_line = [&["entitlements"], args.as_slice()].concat();
    assert_eq!(command_line[1], "health");
    Cli::try_parse_from(&command_line).expect("the health check's command line parses");
}

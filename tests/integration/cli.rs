//! The CLI subcommands that talk to a running agent over HTTP.

use trellis_testkit::Agent;

use crate::harness::{temp_dir, trellis};

fn run(agent: &Agent, args: &[&str]) -> std::process::Output {
    trellis()
        .command()
        .args(args)
        .env("TRELLIS_HTTP_ADDR", agent.addrs().http.to_string())
        .output()
        .expect("run trellis")
}

#[test]
fn services_register_then_catalog_lists_them_and_deregister_removes_them() {
    let agent = trellis().dev().start();
    let dir = temp_dir();
    let file = dir.path().join("web.json");
    std::fs::write(
        &file,
        r#"{"Service": {"ID": "web-1", "Name": "web", "Port": 8080, "Tags": ["v1"]}}"#,
    )
    .unwrap();
    let out = run(&agent, &["services", "register", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = run(&agent, &["catalog", "services", "--tags"]);
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(listed.lines().any(|l| l == "web\tv1"), "{listed}");
    assert!(listed.lines().any(|l| l == "consul"), "{listed}");

    let out = run(&agent, &["catalog", "nodes"]);
    let nodes = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(nodes.contains(&agent.ip().to_string()), "{nodes}");

    let out = run(&agent, &["services", "deregister", "web-1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&agent, &["catalog", "services"]);
    assert!(
        !String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l == "web")
    );
}

#[test]
fn an_unreachable_agent_is_a_clear_error() {
    let out = trellis().run(&["catalog", "services", "--http-addr", "127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("Error: cannot reach the agent at http://127.0.0.1:1"),
        "{err}"
    );
}

#[test]
fn a_refused_registration_reports_the_agents_reason() {
    let agent = trellis().dev().start();
    let dir = temp_dir();
    let file = dir.path().join("bad.json");
    std::fs::write(&file, r#"{"Name": "web", "Port": "eighty"}"#).unwrap();
    let out = run(&agent, &["services", "register", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("400") && err.to_lowercase().contains("port"),
        "{err}"
    );
}

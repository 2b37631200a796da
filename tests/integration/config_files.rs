//! Every shipped zone file and example config parses; bad configs are refused
//! with the key and the file named.

use crate::harness::{repo_root, temp_dir, trellis};

fn validate(path: &std::path::Path) -> std::process::Output {
    trellis()
        .command()
        .arg("validate")
        .arg(path)
        .output()
        .unwrap()
}

#[test]
fn every_example_config_validates() {
    let dir = repo_root().join("examples");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml" || x == "json") {
            let out = validate(&p);
            assert!(
                out.status.success(),
                "{}: {}",
                p.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            n += 1;
        }
    }
    assert!(n >= 2, "examples/ has a TOML and a JSON config");
}

#[test]
fn unknown_keys_are_refused_naming_key_and_file() {
    let dir = temp_dir();
    let toml = dir.path().join("bad.toml");
    std::fs::write(
        &toml,
        "node_name = \"a\"\n[dns_config]\nnode_tll = \"1s\"\n",
    )
    .unwrap();
    let out = validate(&toml);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("node_tll"),
        "{err}"
    );

    let json = dir.path().join("bad.json");
    std::fs::write(&json, r#"{"service": {"name": "web", "prot": 80}}"#).unwrap();
    let out = validate(&json);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.json") && err.contains("service") && err.contains("prot"),
        "{err}"
    );
}

#[test]
fn services_from_a_config_file_are_answered() {
    let dir = temp_dir();
    let cfg = dir.path().join("web.json");
    std::fs::write(
        &cfg,
        r#"{"service": {"name": "web", "port": 8080, "address": "10.7.0.1", "tags": ["v2"]}}"#,
    )
    .unwrap();
    let agent = trellis().dev().config_file(&cfg).start();
    let m = agent.query_udp("v2.web.service.consul.", hickory_proto::rr::RecordType::A);
    assert_eq!(m.answers.len(), 1, "{m:?}\n{}", agent.log());
}

#[test]
fn zone_files_are_served_authoritatively() {
    let zones = repo_root().join("zones");
    let agent = trellis().dev().arg("--zone-dir", &zones).start();
    let m = agent.query_udp("www.example.internal.", hickory_proto::rr::RecordType::A);
    assert_eq!(
        m.metadata.response_code,
        hickory_proto::op::ResponseCode::NoError,
        "{m:?}"
    );
    assert!(m.metadata.authoritative);
    assert!(!m.answers.is_empty(), "{m:?}");
}

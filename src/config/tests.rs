//! Precedence (defaults < files < `--config-dir` files in name order <
//! flags), one subsystem setting at a time, and the text of every kind of
//! error the configuration gives.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// A key `trellis keygen` could have printed (32 bytes of 0x01).
const KEY_A: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
/// Another (32 bytes of 0x02).
const KEY_B: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";

/// Writes `text` to `dir/name` and returns the path.
fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Flags of a client agent with a data dir: the least that loads.
fn client() -> AgentFlags {
    AgentFlags {
        data_dir: Some("/var/lib/trellis".into()),
        ..AgentFlags::default()
    }
}

/// The error `flags` load with, as the operator reads it.
fn error(flags: &AgentFlags) -> String {
    Config::load(flags)
        .expect_err("the configuration is refused")
        .to_string()
}

/// The error of loading one file with `text` as `name`, as the operator
/// reads it, with the file's path replaced by `FILE`.
fn file_error(name: &str, text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), name, text);
    let flags = AgentFlags {
        config_file: vec![path.clone()],
        ..client()
    };
    error(&flags).replace(&path.display().to_string(), "FILE")
}

/// The error of `flags` changed by `f`, on top of a loadable client.
fn flag_error(f: impl FnOnce(&mut AgentFlags)) -> String {
    let mut flags = client();
    f(&mut flags);
    error(&flags)
}

// ---- precedence ----------------------------------------------------------

/// One value per subsystem, as a file writes it: `n` tells the layers apart.
fn layer(n: u16) -> String {
    format!(
        r#"
datacenter = "dc{n}"
domain = "d{n}"
retry_join = ["10.0.0.{n}"]
raft_snapshot_threshold = {n}
check_update_interval = "{n}s"
ae_interval = "{n}m"
log_level = "{level}"
reconnect_timeout = "{n}h"
tombstone_ttl = "{n}m"
encrypt = "{key}"
[ports]
http = {port}
"#,
        level = if n.is_multiple_of(2) { "debug" } else { "warn" },
        key = if n.is_multiple_of(2) { KEY_B } else { KEY_A },
        port = 9000 + n,
    )
}

/// Asserts that every subsystem's representative setting came from the
/// layer written with `n`.
fn assert_from_layer(cfg: &Config, n: u16) {
    assert_eq!(cfg.node.datacenter, format!("dc{n}"), "node");
    assert_eq!(cfg.network.ports.http, 9000 + n, "network");
    assert_eq!(cfg.dns.domain, format!("d{n}."), "dns");
    assert_eq!(cfg.raft.snapshot_threshold, u64::from(n), "raft");
    assert_eq!(cfg.gossip.retry_join, vec![format!("10.0.0.{n}")], "gossip");
    assert_eq!(
        cfg.gossip.reconnect_timeout,
        Duration::from_secs(3600 * u64::from(n)),
        "gossip"
    );
    let key = if n.is_multiple_of(2) {
        [2; 32]
    } else {
        [1; 32]
    };
    assert_eq!(cfg.gossip.encrypt, Some(EncryptKey(key)), "gossip");
    assert_eq!(
        cfg.checks.update_interval,
        Duration::from_secs(u64::from(n)),
        "checks"
    );
    assert_eq!(
        cfg.services.ae_interval,
        Duration::from_secs(60 * u64::from(n)),
        "services"
    );
    assert_eq!(
        cfg.kv.tombstone_ttl,
        Duration::from_secs(60 * u64::from(n)),
        "kv"
    );
    let level = if n.is_multiple_of(2) { "debug" } else { "warn" };
    assert_eq!(cfg.log.level, level, "log");
}

#[test]
fn defaults_fill_every_subsystem_when_nothing_is_set() {
    let cfg = Config::load(&client()).unwrap();
    assert_eq!(cfg.node.datacenter, defaults::DATACENTER);
    assert_eq!(cfg.node.name, defaults::node_name());
    assert_eq!(cfg.node.data_dir, Some("/var/lib/trellis".into()));
    assert_eq!(cfg.network.ports, Ports::default());
    assert_eq!(cfg.network.ports.http, 8500);
    assert_eq!(cfg.network.bind_addr, defaults::BIND_ADDR);
    assert_eq!(cfg.network.client_addr, defaults::CLIENT_ADDR);
    assert_eq!(cfg.dns.domain, "consul.");
    assert_eq!(cfg.dns.udp_answer_limit, 3);
    assert!(cfg.dns.enable_truncate);
    assert_eq!(cfg.dns.recursor_timeout, Duration::from_secs(2));
    assert_eq!(
        cfg.raft,
        RaftSettings {
            server: false,
            bootstrap_expect: 0,
            snapshot_threshold: 16384,
            trailing_logs: 10240,
        }
    );
    assert_eq!(
        cfg.gossip,
        GossipSettings {
            retry_join: Vec::new(),
            encrypt: None,
            leave_on_terminate: true,
            reconnect_timeout: Duration::from_secs(72 * 3600),
        }
    );
    assert_eq!(
        cfg.checks,
        CheckSettings {
            enable_script_checks: false,
            enable_local_script_checks: false,
            update_interval: Duration::from_secs(300),
        }
    );
    assert_eq!(cfg.services.ae_interval, Duration::from_secs(60));
    assert!(cfg.services.services.is_empty() && cfg.services.checks.is_empty());
    assert_eq!(
        cfg.kv,
        KvSettings {
            session_ttl_min: Duration::from_secs(10),
            tombstone_ttl: Duration::from_secs(15 * 60),
        }
    );
    assert_eq!(
        cfg.log,
        LogSettings {
            level: "info".into(),
            json: false
        }
    );
}

#[test]
fn dev_mode_defaults_to_a_lone_server_on_loopback_without_a_data_dir() {
    let cfg = Config::load(&AgentFlags {
        dev: true,
        data_dir: Some("/ignored".into()),
        ..AgentFlags::default()
    })
    .unwrap();
    assert!(cfg.raft.server);
    assert_eq!(cfg.raft.bootstrap_expect, 1);
    assert_eq!(cfg.node.data_dir, None);
    assert_eq!(cfg.node.node_id_file(), None);
    assert_eq!(cfg.network.bind_addr, defaults::DEV_BIND_ADDR);
    assert_eq!(cfg.network.advertise_addr, defaults::DEV_BIND_ADDR);
    // A server stays in the pool on SIGTERM.
    assert!(!cfg.gossip.leave_on_terminate);
}

#[test]
fn a_config_file_overrides_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let flags = AgentFlags {
        config_file: vec![write(dir.path(), "a.toml", &layer(1))],
        ..client()
    };
    assert_from_layer(&Config::load(&flags).unwrap(), 1);
}

#[test]
fn a_later_config_file_overrides_an_earlier_one() {
    let dir = tempfile::tempdir().unwrap();
    let flags = AgentFlags {
        config_file: vec![
            write(dir.path(), "b.toml", &layer(1)),
            write(dir.path(), "a.toml", &layer(2)),
        ],
        ..client()
    };
    assert_from_layer(&Config::load(&flags).unwrap(), 2);
}

#[test]
fn config_dir_files_override_config_files_and_each_other_in_name_order() {
    let files = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Written out of order: the name decides, not the creation.
    write(dir.path(), "20-last.toml", &layer(3));
    write(dir.path(), "10-first.toml", &layer(2));
    // Neither TOML nor JSON: not read.
    write(dir.path(), "30-notes.txt", "not = [a config");
    let flags = AgentFlags {
        config_file: vec![write(files.path(), "zz.toml", &layer(1))],
        config_dir: vec![dir.path().to_path_buf()],
        ..client()
    };
    assert_from_layer(&Config::load(&flags).unwrap(), 3);
}

#[test]
fn a_json_file_in_a_config_dir_is_a_layer_like_a_toml_one() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "1.toml", &layer(1));
    write(
        dir.path(),
        "2.json",
        r#"{"datacenter": "dc9", "ports": {"dns": 9053}, "raft_trailing_logs": 7}"#,
    );
    let flags = AgentFlags {
        config_dir: vec![dir.path().to_path_buf()],
        ..client()
    };
    let cfg = Config::load(&flags).unwrap();
    assert_eq!(cfg.node.datacenter, "dc9");
    assert_eq!(cfg.network.ports.dns, 9053);
    // A key the later file does not set keeps the earlier file's value...
    assert_eq!(cfg.dns.domain, "d1.");
    // ...but a table it sets replaces the earlier one whole.
    assert_eq!(cfg.network.ports.http, defaults::HTTP_PORT);
    assert_eq!(cfg.raft.trailing_logs, 7);
}

#[test]
fn flags_override_every_file() {
    let files = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "1.toml", &layer(2));
    let flags = AgentFlags {
        config_file: vec![write(files.path(), "a.toml", &layer(1))],
        config_dir: vec![dir.path().to_path_buf()],
        datacenter: Some("DC4".into()),
        http_port: Some(9004),
        domain: Some("d4".into()),
        raft_snapshot_threshold: Some(4),
        retry_join: vec!["10.0.0.4".into()],
        encrypt: Some(KEY_B.into()),
        ae_interval: Some("4m".into()),
        log_level: Some("DEBUG".into()),
        enable_script_checks: true,
        ..client()
    };
    let cfg = Config::load(&flags).unwrap();
    // Settings without a flag keep the last file's value.
    assert_eq!(cfg.checks.update_interval, Duration::from_secs(2));
    assert_eq!(cfg.gossip.reconnect_timeout, Duration::from_secs(2 * 3600));
    assert_eq!(cfg.kv.tombstone_ttl, Duration::from_secs(2 * 60));
    let cfg = Config {
        checks: CheckSettings {
            update_interval: Duration::from_secs(4),
            ..cfg.checks
        },
        gossip: GossipSettings {
            reconnect_timeout: Duration::from_secs(4 * 3600),
            ..cfg.gossip
        },
        kv: KvSettings {
            tombstone_ttl: Duration::from_secs(4 * 60),
            ..cfg.kv
        },
        ..cfg
    };
    assert_from_layer(&cfg, 4);
    assert!(cfg.checks.enable_script_checks);
}

#[test]
fn definitions_from_every_file_add_up_in_load_order() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "1.toml",
        "[service]\nname = \"web\"\n[[checks]]\nname = \"disk\"\nttl = \"30s\"\n",
    );
    write(
        dir.path(),
        "2.json",
        r#"{"services": [{"name": "db"}, {"name": "cache"}], "check": {"name": "mem", "ttl": "1m"}}"#,
    );
    let flags = AgentFlags {
        config_dir: vec![dir.path().to_path_buf()],
        ..client()
    };
    let cfg = Config::load(&flags).unwrap();
    let names: Vec<_> = cfg.services.services.iter().map(|s| &s.name).collect();
    assert_eq!(names, ["web", "db", "cache"]);
    let checks: Vec<_> = cfg.services.checks.iter().map(|c| c.name.clone()).collect();
    assert_eq!(checks, ["disk", "mem"]);
}

#[test]
fn validating_files_alone_needs_no_data_dir_or_way_to_form_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "server.toml",
        "server = true\nnode_name = \"s1\"\n",
    );
    let sub = dir.path().join("d");
    std::fs::create_dir(&sub).unwrap();
    write(&sub, "dc.toml", "datacenter = \"east\"\n");
    // The directory is read after the file whatever their order.
    let cfg = Config::validate_files(&[sub, file]).unwrap();
    assert_eq!(cfg.node.name, "s1");
    assert_eq!(cfg.node.datacenter, "east");
    assert!(cfg.raft.server);
}

// ---- ConfigError::Read ---------------------------------------------------

#[test]
fn a_missing_config_file_is_named() {
    let flags = AgentFlags {
        config_file: vec!["/nonexistent/trellis.toml".into()],
        ..client()
    };
    assert_eq!(
        error(&flags),
        "reading /nonexistent/trellis.toml: No such file or directory (os error 2)"
    );
}

#[test]
fn a_missing_config_dir_is_named() {
    let flags = AgentFlags {
        config_dir: vec!["/nonexistent/trellis.d".into()],
        ..client()
    };
    assert_eq!(
        error(&flags),
        "reading /nonexistent/trellis.d: No such file or directory (os error 2)"
    );
}

#[test]
fn an_unreadable_config_file_is_named() {
    // A directory given as a file cannot be read as one, whoever runs the
    // test (a file without permissions is readable by root).
    let dir = tempfile::tempdir().unwrap();
    let flags = AgentFlags {
        config_file: vec![dir.path().to_path_buf()],
        ..client()
    };
    assert_eq!(
        error(&flags),
        format!(
            "reading {}: Is a directory (os error 21)",
            dir.path().display()
        )
    );
}

// ---- ConfigError::File ---------------------------------------------------

#[test]
fn an_unknown_toml_key_is_refused_naming_key_and_file() {
    let err = file_error("a.toml", "[dns_config]\nnode_tll = \"1s\"\n");
    assert!(
        err.starts_with("FILE: key `dns_config.node_tll`: TOML parse error at line 2, column 1"),
        "{err}"
    );
    assert!(
        err.contains("unknown field `node_tll`, expected one of `node_ttl`"),
        "{err}"
    );
}

#[test]
fn an_unknown_json_key_is_refused_naming_key_and_file() {
    let err = file_error("a.json", r#"{"service": {"name": "web", "prot": 80}}"#);
    assert!(
        err.starts_with("FILE: key `service.prot`: unknown field `prot`, expected one of"),
        "{err}"
    );
}

#[test]
fn a_value_of_the_wrong_type_is_refused_naming_key_and_file() {
    assert_eq!(
        file_error("a.toml", "[ports]\ndns = \"x\"\n"),
        "FILE: key `ports.dns`: TOML parse error at line 2, column 7\n  |\n2 | dns = \"x\"\n  \
         |       ^^^\ninvalid type: string \"x\", expected u16\n"
    );
    assert_eq!(
        file_error("a.json", r#"{"server": "yes"}"#),
        "FILE: key `server`: invalid type: string \"yes\", expected a boolean at line 1 column 16"
    );
}

#[test]
fn bad_toml_syntax_is_refused_naming_the_file() {
    let err = file_error("a.toml", "node_name = \n");
    assert!(err.starts_with("FILE: key `.`: "), "{err}");
    assert!(err.contains("line 1"), "{err}");
}

#[test]
fn bad_json_syntax_is_refused_naming_the_file() {
    assert_eq!(
        file_error("a.json", r#"{"node_name": }"#),
        "FILE: key `node_name`: expected value at line 1 column 15"
    );
}

// ---- ConfigError::Invalid ------------------------------------------------

#[test]
fn a_bad_value_in_a_file_names_the_key_and_the_file() {
    assert_eq!(
        file_error("a.toml", "bind_addr = \"not-an-ip\"\n"),
        "bind_addr (FILE): \"not-an-ip\" is not an IP address"
    );
    assert_eq!(
        file_error("a.toml", "reconnect_timeout = \"soon\"\n"),
        "reconnect_timeout (FILE): invalid duration \"soon\""
    );
}

#[test]
fn a_bad_flag_names_the_setting_and_the_flag() {
    assert_eq!(
        flag_error(|f| f.bind = Some("not-an-ip".into())),
        "bind_addr (--bind): \"not-an-ip\" is not an IP address"
    );
    assert_eq!(
        flag_error(|f| f.advertise = Some("::x".into())),
        "advertise_addr (--advertise): \"::x\" is not an IP address"
    );
    assert_eq!(
        flag_error(|f| f.client = Some("localhost".into())),
        "client_addr (--client): \"localhost\" is not an IP address"
    );
    assert_eq!(
        flag_error(|f| f.node = Some("web.1".into())),
        "node_name (--node): \"web.1\" is not a valid DNS label (letters, digits, '-', '_'; at \
         most 63)"
    );
    assert_eq!(
        flag_error(|f| f.datacenter = Some("-east".into())),
        "datacenter (--datacenter): \"-east\" is not a valid DNS label (letters, digits, '-', \
         '_'; at most 63)"
    );
    assert_eq!(
        flag_error(|f| f.domain = Some("my..zone".into())),
        "domain (--domain): \"\" is not a valid DNS label (letters, digits, '-', '_'; at most 63)"
    );
    assert_eq!(
        flag_error(|f| f.recursor = vec!["8.8.8.8".into(), "dns.google".into()]),
        "recursors (--recursor): \"dns.google\" is not an IP address or IP:port"
    );
    assert_eq!(
        flag_error(|f| f.log_level = Some("loud".into())),
        "log_level (--log-level): \"loud\" is not one of trace, debug, info, warn, error"
    );
    assert_eq!(
        flag_error(|f| f.ae_interval = Some("500ms".into())),
        "ae_interval (--ae-interval): \"500ms\" is below the 1s minimum"
    );
    assert_eq!(
        flag_error(|f| f.raft_snapshot_threshold = Some(0)),
        "raft_snapshot_threshold (--raft-snapshot-threshold): must be at least 1"
    );
    assert_eq!(
        flag_error(|f| f.encrypt = Some("not base64!".into())),
        "encrypt (--encrypt): encryption key is not valid base64 (Invalid symbol 32, offset \
         3.); make one with `trellis keygen`"
    );
    assert_eq!(
        flag_error(|f| f.encrypt = Some("AQID".into())),
        "encrypt (--encrypt): encryption key decodes to 3 bytes, AES-256 needs exactly 32; make \
         one with `trellis keygen`"
    );
}

#[test]
fn conflicting_flags_are_refused_naming_the_flag() {
    assert_eq!(
        flag_error(|f| f.bootstrap_expect = Some(3)),
        "bootstrap_expect (--bootstrap-expect): only servers bootstrap the Raft cluster; add \
         --server"
    );
    assert_eq!(
        flag_error(|f| {
            f.dev = true;
            f.bootstrap_expect = Some(3);
        }),
        "bootstrap_expect (--bootstrap-expect): --dev is a single server; bootstrap_expect must \
         be 1"
    );
    assert_eq!(
        flag_error(|f| f.server = true),
        "bootstrap_expect (--bootstrap-expect): a server needs --bootstrap-expect N to form a \
         cluster, or --retry-join ADDR to join one"
    );
    assert_eq!(
        flag_error(|f| {
            f.dns_port = Some(9000);
            f.server_port = Some(9000);
        }),
        "ports (default): port 9000 is used for two TCP listeners"
    );
    // Two listeners on port 0 each get their own free port.
    let mut flags = client();
    flags.dns_port = Some(0);
    flags.http_port = Some(0);
    assert!(Config::load(&flags).is_ok());
}

#[test]
fn a_missing_data_dir_is_refused_unless_dev() {
    assert_eq!(
        error(&AgentFlags::default()),
        "data_dir (--data-dir): a data directory is required unless --dev"
    );
    assert!(
        Config::load(&AgentFlags {
            dev: true,
            ..AgentFlags::default()
        })
        .is_ok()
    );
}

#[test]
fn bad_dns_settings_name_the_key_and_the_file() {
    assert_eq!(
        file_error("a.toml", "[dns_config]\nnode_ttl = \"ten\"\n"),
        "dns_config.node_ttl (FILE): invalid duration \"ten\""
    );
    assert_eq!(
        file_error("a.toml", "[dns_config.service_ttl]\nweb = \"1x\"\n"),
        "dns_config.service_ttl (FILE): unknown unit \"x\" in duration \"1x\""
    );
    assert_eq!(
        file_error("a.toml", "[dns_config]\nrecursor_timeout = \"x\"\n"),
        "dns_config.recursor_timeout (FILE): invalid duration \"x\""
    );
}

#[test]
fn bad_check_settings_name_the_key_and_the_file() {
    assert_eq!(
        file_error("a.toml", "check_update_interval = \"often\"\n"),
        "check_update_interval (FILE): invalid duration \"often\""
    );
}

#[test]
fn bad_definitions_name_the_key_and_the_file() {
    assert_eq!(
        file_error("a.json", r#"{"service": {"name": ""}}"#),
        "service.name (FILE): Missing service name"
    );
    assert_eq!(
        file_error(
            "a.json",
            r#"{"service": {"name": "web", "check": {"ttl": "10s", "status": "ok"}}}"#
        ),
        "service.check.status (FILE): invalid check status \"ok\""
    );
    assert_eq!(
        file_error(
            "a.json",
            r#"{"services": [{"name": "web", "checks": [{"tcp": "x:1", "interval": "10ms"}]}]}"#
        ),
        "service.check.interval (FILE): Invalid check: Interval must be at least 100ms (got 10ms)"
    );
    assert_eq!(
        file_error("a.toml", "[check]\nttl = \"forever\"\n"),
        "check.ttl (FILE): invalid duration \"forever\""
    );
    assert_eq!(
        file_error(
            "a.toml",
            "[[checks]]\nttl = \"30s\"\nderegister_critical_service_after = \"1\"\n"
        ),
        "check.deregister_critical_service_after (FILE): missing unit in duration \"1\""
    );
    // Any case, as the catalog reads a status.
    let dir = tempfile::tempdir().unwrap();
    let flags = AgentFlags {
        config_file: vec![write(
            dir.path(),
            "ok.toml",
            "[check]\nname = \"ok\"\nttl = \"30s\"\nstatus = \"Passing\"\n",
        )],
        ..client()
    };
    let loaded = Config::load(&flags);
    assert!(loaded.is_ok(), "{loaded:?}");
}

#[test]
fn an_error_names_the_last_file_that_set_the_key() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "1.toml", "log_level = \"info\"\n");
    let last = write(dir.path(), "2.toml", "log_level = \"chatty\"\n");
    write(dir.path(), "3.toml", "datacenter = \"dc2\"\n");
    let flags = AgentFlags {
        config_dir: vec![dir.path().to_path_buf()],
        ..client()
    };
    assert_eq!(
        error(&flags),
        format!(
            "log_level ({}): \"chatty\" is not one of trace, debug, info, warn, error",
            last.display()
        )
    );
}

#[test]
fn the_encryption_key_is_kept_as_its_bytes_and_never_printed() {
    let flags = AgentFlags {
        encrypt: Some(format!(" {KEY_A}\n")),
        ..client()
    };
    let cfg = Config::load(&flags).unwrap();
    assert_eq!(cfg.gossip.encrypt, Some(EncryptKey([1; 32])));
    let shown = format!("{cfg:?}");
    assert!(shown.contains("EncryptKey(<redacted>)"), "{shown}");
    assert!(!shown.contains("[1, 1"), "{shown}");
}

#[test]
fn session_ttl_min_and_tombstone_ttl_come_from_files_in_go_durations() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "kv.json",
        r#"{"session_ttl_min": "2s", "tombstone_ttl": "1m30s"}"#,
    );
    let cfg = Config::load(&AgentFlags {
        config_file: vec![path],
        ..client()
    })
    .unwrap();
    assert_eq!(
        cfg.kv,
        KvSettings {
            session_ttl_min: Duration::from_secs(2),
            tombstone_ttl: Duration::from_secs(90),
        }
    );
}

#[test]
fn session_ttl_min_and_tombstone_ttl_out_of_bounds_name_the_key_and_the_file() {
    for (text, says) in [
        (
            "session_ttl_min = \"500ms\"\n",
            "session_ttl_min (FILE): \"500ms\" is below the 1s minimum",
        ),
        (
            "session_ttl_min = \"25h\"\n",
            "session_ttl_min (FILE): \"25h\" is above the 24h maximum",
        ),
        (
            "session_ttl_min = \"ten\"\n",
            "session_ttl_min (FILE): invalid duration \"ten\"",
        ),
        (
            "tombstone_ttl = \"0s\"\n",
            "tombstone_ttl (FILE): \"0s\" is below the 1s minimum",
        ),
        (
            "tombstone_ttl = \"-1m\"\n",
            "tombstone_ttl (FILE): negative duration \"-1m\"",
        ),
    ] {
        assert_eq!(file_error("a.toml", text), says, "{text}");
    }
    assert_eq!(
        file_error("a.json", r#"{"tombstone_ttl": 900}"#),
        "FILE: key `tombstone_ttl`: invalid type: integer `900`, expected a string at line 1 \
         column 21"
    );
}

// ---- limits --------------------------------------------------------------

#[test]
fn limits_are_on_by_default_with_consuls_values() {
    let cfg = Config::load(&client()).unwrap();
    let l = cfg.limits;
    assert_eq!(l.http_max_conns_per_client, 200);
    assert_eq!(l.rpc_max_conns_per_client, 100);
    assert_eq!(l.rpc_handshake_timeout, Some(Duration::from_secs(5)));
    assert_eq!(l.http_read_header_timeout, Some(Duration::from_secs(10)));
    assert!(l.http_max_blocking_per_client > 0);
    assert!(l.http_max_blocking_per_client < l.http_max_conns_per_client);
    assert!(l.http_idle_timeout.is_some());
    assert!(l.http_read_body_timeout.is_some());
    assert!(l.dns_tcp_max_conns_per_client > 0);
    assert_eq!(l.dns_tcp_idle_timeout, Some(Duration::from_secs(10)));
}

#[test]
fn limits_come_from_a_file_and_zero_turns_one_off() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "limits.toml",
        "[limits]\nhttp_max_conns_per_client = 0\nrpc_handshake_timeout = \"0s\"\n\
         http_read_header_timeout = \"2s\"\ndns_tcp_max_conns_per_client = 3\n",
    );
    let flags = AgentFlags {
        config_file: vec![path],
        ..client()
    };
    let l = Config::load(&flags).unwrap().limits;
    assert_eq!(l.http_max_conns_per_client, 0);
    assert_eq!(l.rpc_handshake_timeout, None);
    assert_eq!(l.http_read_header_timeout, Some(Duration::from_secs(2)));
    assert_eq!(l.dns_tcp_max_conns_per_client, 3);
    // What the file leaves out keeps its default.
    assert_eq!(l.rpc_max_conns_per_client, 100);
}

#[test]
fn a_bad_limit_names_the_key_and_the_file() {
    assert_eq!(
        file_error("a.toml", "[limits]\nrpc_handshake_timeout = \"soon\"\n"),
        "limits.rpc_handshake_timeout (FILE): invalid duration \"soon\""
    );
    assert!(
        file_error("a.json", r#"{"limits": {"http_max_conns_per_client": -1}}"#)
            .starts_with("FILE: key `limits.http_max_conns_per_client`: invalid value"),
    );
    assert!(
        file_error("a.toml", "[limits]\nhttp_max_conn_per_client = 5\n")
            .starts_with("FILE: key `limits.http_max_conn_per_client`: TOML parse error"),
    );
}

#[test]
fn dns_rate_limiting_is_off_by_default_and_read_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let load = |text: &str| {
        let flags = AgentFlags {
            config_file: vec![write(dir.path(), "rrl.json", text)],
            ..client()
        };
        Config::load(&flags).unwrap().dns.rrl
    };
    let off = load("{}");
    assert_eq!(off, RrlSettings::default());
    assert_eq!(
        (off.rate, off.slip, off.ipv4_prefix, off.ipv6_prefix),
        (0, 2, 24, 56)
    );
    let on = load(
        r#"{"dns_config": {"rrl_rate": 50, "rrl_slip": 0, "rrl_ipv4_prefix": 32, "rrl_ipv6_prefix": 64}}"#,
    );
    assert_eq!(
        on,
        RrlSettings {
            rate: 50,
            slip: 0,
            ipv4_prefix: 32,
            ipv6_prefix: 64
        }
    );
}

#[test]
fn bad_dns_rate_limits_name_the_key_and_the_file() {
    assert_eq!(
        file_error("a.toml", "[dns_config]\nrrl_ipv4_prefix = 33\n"),
        "dns_config.rrl_ipv4_prefix (FILE): 33 is above the largest allowed, 32"
    );
    assert_eq!(
        file_error("a.toml", "[dns_config]\nrrl_ipv6_prefix = 129\n"),
        "dns_config.rrl_ipv6_prefix (FILE): 129 is above the largest allowed, 128"
    );
    assert_eq!(
        file_error("a.toml", "[dns_config]\nrrl_rate = 2000000\n"),
        "dns_config.rrl_rate (FILE): 2000000 is above the largest allowed, 1000000"
    );
    assert_eq!(
        file_error("a.toml", "[dns_config]\nrrl_slip = 101\n"),
        "dns_config.rrl_slip (FILE): 101 is above the largest allowed, 100"
    );
    let negative = file_error("a.toml", "[dns_config]\nrrl_rate = -1\n");
    assert!(
        negative.contains("FILE") && negative.contains("rrl_rate"),
        "{negative}"
    );
}

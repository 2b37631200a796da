//! Start-up and shutdown of the process.

use crate::harness::trellis;

#[test]
fn leave_on_a_lone_server_shuts_it_down_cleanly() {
    let agent = trellis().dev().start();
    let out = trellis().run(&["leave", "--http-addr", &agent.addrs().http.to_string()]);
    assert!(out.status.success(), "{out:?}\n{}", agent.log());
    let status = agent
        .wait_exit(std::time::Duration::from_secs(30))
        .expect("the agent exits after leaving");
    assert!(status.success(), "{status:?}\n{}", agent.log());
    assert!(agent.log().contains("shutdown complete"));
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let agent = trellis().dev().start();
    let status = agent.terminate();
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        agent.log()
    );
    let log = agent.log();
    assert!(log.contains("shutdown complete"), "{log}");
}

#[test]
fn bad_flags_are_refused_with_the_flag_named() {
    let out = trellis().run(&["agent", "--server", "--bootstrap-expect", "1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("Error: "), "{err}");
    assert!(err.contains("data_dir"), "{err}");

    let out = trellis().run(&["agent", "--dev", "--bind", "not-an-ip"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bind_addr"));
}

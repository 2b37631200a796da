//! Script checks: a command run without a shell; exit 0 is passing, 1
//! warning, anything else (or a signal, or the timeout) critical. Standard
//! output and error go to one pipe, so the output keeps their interleaving;
//! the last [`MAX_OUTPUT`] bytes are kept.
//!
//! The command runs in its own process group, and on timeout (or when the
//! check is removed mid-run) the whole group is killed, so a script that
//! started children does not leave them behind.

use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::runner::{CheckResult, Probe};
use crate::catalog::HealthStatus;
use crate::definition::MAX_OUTPUT;

/// One script check's command.
#[derive(Debug, Clone)]
pub(crate) struct ScriptProbe {
    /// Program and arguments.
    args: Vec<String>,
    /// How long one run may take.
    timeout: Duration,
}

/// Kills a process group when dropped, unless disarmed: the run was
/// cancelled or timed out.
struct GroupKill(Option<i32>);

impl Drop for GroupKill {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            // SAFETY: kill(2) with a negative pid signals a process group;
            // no memory is involved.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

impl ScriptProbe {
    /// A probe for `args` (non-empty, validated).
    pub(crate) fn new(args: Vec<String>, timeout: Duration) -> Self {
        Self { args, timeout }
    }

    async fn execute(&self) -> CheckResult {
        match self.spawn_and_wait().await {
            Ok(r) => r,
            Err(e) => CheckResult {
                status: HealthStatus::Critical,
                output: format!("running {:?}: {e}", self.args[0]),
            },
        }
    }

    async fn spawn_and_wait(&self) -> std::io::Result<CheckResult> {
        let (reader, writer) = std::io::pipe()?;
        let mut cmd = tokio::process::Command::new(&self.args[0]);
        cmd.args(&self.args[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::from(writer.try_clone()?))
            .stderr(Stdio::from(writer))
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn()?;
        // The command has its copies of the write end; ours are gone with
        // `cmd`, so the pipe ends when the command's group closes it.
        drop(cmd);
        let mut guard = GroupKill(child.id().and_then(|p| i32::try_from(p).ok()));
        let mut pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(reader))?;

        let run = async {
            let mut kept: Vec<u8> = Vec::new();
            let mut total: usize = 0;
            let mut buf = [0u8; 4096];
            loop {
                let n = pipe.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                total += n;
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > MAX_OUTPUT {
                    kept.drain(..kept.len() - MAX_OUTPUT);
                }
            }
            let status = child.wait().await?;
            std::io::Result::Ok((status, kept, total))
        };
        let Ok(done) = tokio::time::timeout(self.timeout, run).await else {
            // The guard kills the group on return.
            return Ok(CheckResult {
                status: HealthStatus::Critical,
                output: format!("Timed out ({:?}) running check", self.timeout),
            });
        };
        let (exit, kept, total) = done?;
        // Reaped: the group leader's ID may be reused from here on.
        guard.0 = None;
        let status = match exit.code() {
            Some(0) => HealthStatus::Passing,
            Some(1) => HealthStatus::Warning,
            _ => HealthStatus::Critical,
        };
        let mut output = String::new();
        if total > kept.len() {
            output = format!("Captured {} of {total} bytes\n...\n", kept.len());
        }
        output.push_str(&String::from_utf8_lossy(&kept));
        if exit.code().is_none() {
            output.push_str(&format!("\n{exit}"));
        }
        Ok(CheckResult {
            status,
            output: super::cap_output_tail(output),
        })
    }
}

impl Probe for ScriptProbe {
    fn run(&self) -> impl Future<Output = CheckResult> + Send {
        self.execute()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn script(dir: &Path, name: &str, body: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p.display().to_string()
    }

    #[tokio::test]
    async fn exit_codes_map_to_health() {
        let dir = tempfile::tempdir().unwrap();
        let t = Duration::from_secs(10);
        for (code, want) in [
            (0, HealthStatus::Passing),
            (1, HealthStatus::Warning),
            (2, HealthStatus::Critical),
        ] {
            let s = script(
                dir.path(),
                &format!("exit{code}"),
                &format!("echo out{code}; echo err{code} >&2; exit {code}"),
            );
            let r = ScriptProbe::new(vec![s], t).run().await;
            assert_eq!(r.status, want, "{r:?}");
            assert_eq!(r.output, format!("out{code}\nerr{code}\n"));
        }
    }

    #[tokio::test]
    async fn arguments_are_passed_without_a_shell() {
        let r = ScriptProbe::new(
            vec!["/bin/echo".into(), "$HOME; rm -rf /".into()],
            Duration::from_secs(10),
        )
        .run()
        .await;
        assert_eq!(r.status, HealthStatus::Passing);
        assert_eq!(r.output, "$HOME; rm -rf /\n");
    }

    #[tokio::test]
    async fn a_missing_program_is_critical() {
        let r = ScriptProbe::new(vec!["/no/such/program".into()], Duration::from_secs(10))
            .run()
            .await;
        assert_eq!(r.status, HealthStatus::Critical);
        assert!(r.output.contains("/no/such/program"), "{}", r.output);
    }

    #[tokio::test]
    async fn long_output_keeps_its_last_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let s = script(
            dir.path(),
            "long",
            "i=0; while [ $i -lt 2000 ]; do echo line$i; i=$((i+1)); done",
        );
        let r = ScriptProbe::new(vec![s], Duration::from_secs(10))
            .run()
            .await;
        assert_eq!(r.status, HealthStatus::Passing);
        assert!(r.output.len() <= MAX_OUTPUT + 64, "{}", r.output.len());
        assert!(
            r.output.starts_with("Captured 4096 of "),
            "{}",
            &r.output[..40]
        );
        assert!(r.output.ends_with("line1999\n"));
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("child.pid");
        // The script starts a background child that would outlive it.
        let s = script(
            dir.path(),
            "hang",
            &format!("sleep 1000 & echo $! > {}; wait", pidfile.display()),
        );
        let started = std::time::Instant::now();
        let r = ScriptProbe::new(vec![s], Duration::from_millis(500))
            .run()
            .await;
        assert_eq!(r.status, HealthStatus::Critical);
        assert!(r.output.contains("Timed out"), "{}", r.output);
        assert!(started.elapsed() < Duration::from_secs(5));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The grandchild is gone (or a zombie of init) within a deadline.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rsplit(") ").next().and_then(|s| s.chars().next());
            if stat.is_empty() || state == Some('Z') {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "child {pid} survived: {stat}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

//! The command `trellis lock` runs while it holds the lock: started as
//! Consul starts it (`$SHELL -c "<args joined by spaces>"`, or the args
//! themselves with `-shell=false`, `CONSUL_LOCK_HELD=true` in its
//! environment), in a process group of its own so that stopping it
//! (SIGTERM, then SIGKILL after a grace period) reaches everything it
//! started, and told to stop (SIGTERM) if `trellis lock` itself dies
//! without the chance to stop it.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};

/// How long the child has between SIGTERM and SIGKILL (Consul's
/// `lockKillGracePeriod`): long enough to clean up, short enough that it
/// is gone well before the lock-delay (15 s) lets another holder in.
pub(super) const KILL_GRACE: Duration = Duration::from_secs(5);

/// How the child is started.
#[derive(Debug, Clone)]
pub(super) struct Spec {
    /// The command line as given after the prefix.
    pub(super) args: Vec<String>,
    /// Through the shell (Consul's default) or exec'd directly.
    pub(super) shell: bool,
    /// Whether the child reads our stdin; otherwise it gets none.
    pub(super) pass_stdin: bool,
}

impl Spec {
    /// The program and its arguments.
    pub(super) fn argv(&self) -> Vec<String> {
        if self.shell {
            // Consul's `ExecScript`: $SHELL if set, else /bin/sh.
            let shell = std::env::var("SHELL")
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "/bin/sh".to_string());
            vec![shell, "-c".to_string(), self.args.join(" ")]
        } else {
            self.args.clone()
        }
    }

    /// Starts the child.
    pub(super) fn spawn(&self) -> std::io::Result<Running> {
        let argv = self.argv();
        let Some((program, args)) = argv.split_first() else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "no command to run",
            ));
        };
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env("CONSUL_LOCK_HELD", "true")
            .stdin(if self.pass_stdin {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .process_group(0);
        // SAFETY: prctl(2) is async-signal-safe and touches no memory of
        // the parent. The signal follows the death of the thread that
        // spawns, which is the one thread of `trellis lock`'s runtime.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| std::io::Error::other("the child exited before its pid was known"))?;
        Ok(Running { child, pid })
    }
}

/// A started child.
#[derive(Debug)]
pub(super) struct Running {
    child: Child,
    /// Its pid, which is also its process group's id.
    pid: u32,
}

impl Running {
    pub(super) fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for it to exit on its own.
    pub(super) async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// SIGTERM to its group; after `grace`, SIGKILL. Returns its status,
    /// and whether it needed the SIGKILL. `say` hears what is done, for
    /// `-verbose`.
    pub(super) async fn stop(
        &mut self,
        grace: Duration,
        say: impl Fn(&str),
    ) -> std::io::Result<(ExitStatus, bool)> {
        say(&format!("Terminating child pid {}", self.pid));
        self.signal(libc::SIGTERM);
        if let Ok(status) = tokio::time::timeout(grace, self.child.wait()).await {
            say("Child terminated");
            return Ok((status?, false));
        }
        say(&format!(
            "Child did not exit after grace period of {}s",
            grace.as_secs()
        ));
        say(&format!("Killing child pid {}", self.pid));
        self.signal(libc::SIGKILL);
        Ok((self.child.wait().await?, true))
    }

    fn signal(&self, sig: i32) {
        // Linux pids are below 2^22, so the pid fits an i32.
        let pgid = self.pid as i32;
        // SAFETY: kill(2) has no memory effects. The child is not reaped
        // yet (only `wait` reaps it), so its pid, and the group it leads,
        // are still its own.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

/// The exit code `trellis lock` ends with for the child's status: its code,
/// or 128 + the signal that ended it, as a shell reports it.
pub(super) fn exit_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(1),
        (None, Some(sig)) => u8::try_from((128 + sig) & 0xff).unwrap_or(1),
        (None, None) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_runs_through_the_shell_joined_as_consul_joins_it() {
        let spec = Spec {
            args: vec!["echo".into(), "a b".into(), "$HOME".into()],
            shell: true,
            pass_stdin: false,
        };
        let argv = spec.argv();
        assert_eq!(argv[1..], ["-c", "echo a b $HOME"]);
        let direct = Spec {
            shell: false,
            ..spec
        };
        assert_eq!(direct.argv(), ["echo", "a b", "$HOME"]);
    }

    #[tokio::test]
    async fn the_child_sees_the_lock_held_and_its_status_comes_back() {
        let spec = Spec {
            args: vec![
                "sh".into(),
                "-c".into(),
                "test \"$CONSUL_LOCK_HELD\" = true && exit 7".into(),
            ],
            shell: false,
            pass_stdin: false,
        };
        let mut child = spec.spawn().unwrap();
        let status = child.wait().await.unwrap();
        assert_eq!(exit_code(status), 7);
    }

    #[tokio::test]
    async fn a_child_that_ignores_sigterm_is_killed_after_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("ready");
        let spec = Spec {
            args: vec![
                "sh".into(),
                "-c".into(),
                format!(
                    "trap '' TERM; touch {}; while :; do sleep 0.05; done",
                    ready.display()
                ),
            ],
            shell: false,
            pass_stdin: false,
        };
        let mut child = spec.spawn().unwrap();
        // SIGTERM before the trap is set would end it at once.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !ready.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the child never got ready"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (status, killed) = child
            .stop(Duration::from_millis(300), |_| {})
            .await
            .unwrap();
        assert!(killed);
        assert_eq!(exit_code(status), 128 + 9);

        let polite = Spec {
            args: vec!["sleep".into(), "30".into()],
            shell: false,
            pass_stdin: false,
        };
        let mut child = polite.spawn().unwrap();
        let (status, killed) = child.stop(Duration::from_secs(30), |_| {}).await.unwrap();
        assert!(!killed);
        assert_eq!(exit_code(status), 128 + 15);
    }
}

//! The one guard over a child process: SIGKILLed (or stopped gracefully, if
//! asked) and reaped when dropped, on every exit path of a test or a
//! benchmark, with kill, pause, resume and terminate in between.

use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::log::Log;

/// What dropping the guard does to a process that still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDrop {
    /// SIGKILL: its data is thrown away anyway, and a server that lost its
    /// quorum may take seconds to honour SIGTERM.
    Kill,
    /// SIGTERM, this long to exit, then SIGKILL: for a process that must
    /// stop its own children (NSD forks its servers).
    Terminate(Duration),
}

/// Whether the process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Life {
    /// Running.
    Running,
    /// Stopped with SIGSTOP, as if its machine hung.
    Paused,
    /// Exited, killed or not, and reaped.
    Exited,
}

/// A running child process and its log.
#[derive(Debug)]
pub struct Process {
    /// Shown in messages.
    name: String,
    child: Child,
    log: Log,
    /// Set by [`Self::pause`], cleared by [`Self::resume`].
    paused: bool,
    /// Set once the child is reaped.
    exit: Option<ExitStatus>,
    on_drop: OnDrop,
}

impl Process {
    /// Starts `cmd` with its output going to `log`, stdin closed. The kernel
    /// SIGKILLs the child if the thread that started it dies, so even a
    /// run killed with SIGKILL (which runs no `Drop`) leaves nothing behind.
    pub fn spawn(name: &str, cmd: &mut Command, log: &Log) -> anyhow::Result<Self> {
        log.attach(cmd)
            .with_context(|| format!("opening the log of {name}"))?;
        cmd.stdin(Stdio::null());
        // SAFETY: prctl(2) is async-signal-safe and touches no memory of
        // the parent. Wrappers that exec their arguments (`taskset`, `ip
        // netns exec`) keep the setting for the program they run.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        log.collect(child.stderr.take());
        Ok(Self {
            name: name.to_string(),
            child,
            log: log.clone(),
            paused: false,
            exit: None,
            on_drop: OnDrop::Kill,
        })
    }

    /// What dropping the guard does; [`OnDrop::Kill`] unless set.
    pub fn on_drop(mut self, how: OnDrop) -> Self {
        self.on_drop = how;
        self
    }

    /// The name it was started with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its process ID (still its own while unreaped).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its log.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Whether it runs, is paused, or has exited.
    pub fn life(&mut self) -> Life {
        if self.exited().is_some() {
            Life::Exited
        } else if self.paused {
            Life::Paused
        } else {
            Life::Running
        }
    }

    /// Its exit status if it has exited (reaping it), else `None`.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Fails, with the end of its log, if it has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        match self.exited() {
            Some(status) => bail!(
                "{} exited ({status}); its log ends:\n{}",
                self.name,
                self.log.tail(30)
            ),
            None => Ok(()),
        }
    }

    /// SIGKILL and reap: the crash case. Nothing if it has exited.
    pub fn kill(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            self.exit = self.child.wait().ok();
        }
        self.paused = false;
    }

    /// SIGSTOP: the process stays, silent, as if its machine hung.
    pub fn pause(&mut self) {
        self.signal(libc::SIGSTOP);
        self.paused = true;
    }

    /// SIGCONT after [`Self::pause`].
    pub fn resume(&mut self) {
        self.signal(libc::SIGCONT);
        self.paused = false;
    }

    /// SIGTERM, and wait for it to exit however long that takes.
    pub fn terminate(&mut self) -> ExitStatus {
        if let Some(status) = self.exited() {
            return status;
        }
        self.signal(libc::SIGTERM);
        self.resume_if_paused();
        match self.child.wait() {
            Ok(status) => {
                self.exit = Some(status);
                status
            }
            Err(e) => panic!("waiting for {}: {e}", self.name),
        }
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL; always reaped.
    pub fn stop(&mut self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        self.signal(libc::SIGTERM);
        self.resume_if_paused();
        if self.wait_exit(grace).is_none() {
            eprintln!("{} ignored SIGTERM; killing it", self.name);
            self.kill();
        }
    }

    /// Waits up to `timeout` for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A stopped process acts on SIGTERM only once continued.
    fn resume_if_paused(&mut self) {
        if self.paused {
            self.resume();
        }
    }

    fn signal(&mut self, sig: i32) {
        if self.exited().is_some() {
            return;
        }
        // The pid fits: Linux pids are at most 2^22.
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) has no memory effects; the child is not reaped
        // (checked above), so the pid is still its own.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        match self.on_drop {
            OnDrop::Kill => self.kill(),
            OnDrop::Terminate(grace) => self.stop(grace),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_resume_terminate_and_kill_reach_the_process() {
        let log = Log::captured();
        let mut p = Process::spawn("sleep", Command::new("sleep").arg("30"), &log).expect("spawn");
        assert_eq!(p.life(), Life::Running);
        p.pause();
        assert_eq!(p.life(), Life::Paused);
        p.resume();
        assert!(p.check_running().is_ok());
        let status = p.terminate();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGTERM)
        );
        assert_eq!(p.life(), Life::Exited);
        assert!(p.check_running().is_err());

        let mut q = Process::spawn("sleep", Command::new("sleep").arg("30"), &log).expect("spawn");
        q.kill();
        assert_eq!(q.life(), Life::Exited);
        q.kill();
    }

    #[test]
    fn a_process_that_exits_is_seen_to() {
        let log = Log::captured();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo bye >&2; exit 3"]);
        let mut p = Process::spawn("sh", &mut cmd, &log).expect("spawn");
        let status = p.wait_exit(Duration::from_secs(10)).expect("exits");
        assert_eq!(status.code(), Some(3));
        let e = p.check_running().expect_err("it exited");
        assert!(format!("{e}").contains("sh exited"), "{e}");
    }
}

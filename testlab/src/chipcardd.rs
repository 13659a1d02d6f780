//! chipcardd as a process, on a configuration the test writes, in a fresh temporary
//! directory; stopped with SIGTERM as a service manager stops it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// How long chipcardd may take to open its socket.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running chipcardd; killed when dropped.
pub struct Chipcardd {
    child: Child,
    /// The client socket (`chipcardd.sock` in the temporary directory).
    pub socket: PathBuf,
    dir: tempfile::TempDir,
}

impl Chipcardd {
    /// Writes `config(socket, dir)` (the socket chipcardd is to serve on, the temporary
    /// directory) as the configuration file, starts `exe --config FILE --foreground
    /// --log-level LEVEL` (LEVEL: `CHIPCARD_TEST_LOG`, else `warn`) and waits up to
    /// [`START_TIMEOUT`] until the socket accepts a connection. Must run inside a tokio runtime.
    pub async fn start(exe: &Path, config: impl FnOnce(&Path, &Path) -> String) -> Chipcardd {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("chipcardd.sock");
        let config_path = dir.path().join("chipcardd.conf");
        std::fs::write(&config_path, config(&socket, dir.path())).expect("writes the config");
        let child = Command::new(exe)
            .arg("--config")
            .arg(&config_path)
            .arg("--foreground")
            .arg("--log-level")
            .arg(std::env::var("CHIPCARD_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starts chipcardd");
        let deadline = Instant::now() + START_TIMEOUT;
        // Until a connection is accepted: the file exists a moment before the server listens.
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "no listening socket after {START_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Chipcardd { child, socket, dir }
    }

    /// The temporary directory holding the configuration and the socket.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process ids of chipcardd's children (its drivers and services).
    pub fn child_pids(&self) -> Vec<i32> {
        let Some(pid) = self.child.id() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for task in tasks.flatten() {
                if let Ok(children) = std::fs::read_to_string(task.path().join("children")) {
                    out.extend(
                        children
                            .split_whitespace()
                            .filter_map(|p| p.parse::<i32>().ok()),
                    );
                }
            }
        }
        out
    }

    /// SIGTERM; chipcardd must exit 0 within `limit`. Returns how long it took.
    pub async fn stop(mut self, limit: Duration) -> Duration {
        let pid = self.child.id().expect("running");
        let pid = Pid::from_raw(i32::try_from(pid).expect("pid"));
        kill(pid, Signal::SIGTERM).expect("signals chipcardd");
        let started = Instant::now();
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .expect("chipcardd stops on SIGTERM in time")
            .expect("waits");
        assert!(status.success(), "chipcardd exit status {status}");
        started.elapsed()
    }
}

//! Processes seen through /proc: chipcardd's driver children, their state and memory.

/// A child process: its pid, state letter (`R`, `S`, `T`, `Z`, ...) and command line.
#[derive(Debug, Clone)]
pub struct ChildProcess {
    /// The process id.
    pub pid: u32,
    /// The state letter of /proc/PID/stat.
    pub state: char,
    /// The arguments, program first.
    pub cmdline: Vec<String>,
}

impl ChildProcess {
    /// A zombie (ended, not yet reaped).
    pub fn is_zombie(&self) -> bool {
        self.state == 'Z'
    }
}

/// The children of `parent`, zombies included.
pub fn children_of(parent: u32) -> Vec<ChildProcess> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...; comm may hold blanks and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = fields.next().and_then(|s| s.parse::<u32>().ok());
        if ppid != Some(parent) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|raw| {
                raw.split(|b| *b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        out.push(ChildProcess {
            pid,
            state,
            cmdline,
        });
    }
    out
}

/// The pids of the live (not zombie) children of `parent`.
pub fn live_children(parent: u32) -> Vec<u32> {
    children_of(parent)
        .into_iter()
        .filter(|c| !c.is_zombie())
        .map(|c| c.pid)
        .collect()
}

/// The live driver process of chipcardd `server` started with driver id `driver_id`
/// (`0x00000001` as on its command line).
pub fn driver_pid(server: u32, driver_id: &str) -> Option<u32> {
    children_of(server)
        .into_iter()
        .find(|c| !c.is_zombie() && c.cmdline.iter().any(|a| a == driver_id))
        .map(|c| c.pid)
}

/// Sends signal `sig` (a name such as `KILL`, `STOP`, `HUP`) to `pid` with kill(1).
pub fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} {pid} failed");
}

/// The resident set size of `pid` in KiB (`VmRSS` of /proc/PID/status).
pub fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

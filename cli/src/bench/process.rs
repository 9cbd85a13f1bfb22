//! Child processes of the harness (`bench-peer`, `torture-child`): spawning one with pipes,
//! tying a child's life to its parent's, and removing what killed runs left behind.

use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use super::util::{err, Result};

/// Spawns `cmd` with stdin and stdout piped (stderr as `stderr` says) and takes both pipes;
/// `what` names the child in errors. The child is killed if its stdout cannot be taken.
pub fn spawn_piped(
    cmd: &mut Command,
    stderr: Stdio,
    what: &str,
) -> Result<(Child, Option<ChildStdin>, ChildStdout)> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(|e| err(format!("cannot spawn {what}: {e}")))?;
    let stdin = child.stdin.take();
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(err(format!("{what} has no stdout")));
    };
    Ok((child, stdin, stdout))
}

/// Ends this process with its parent (`PR_SET_PDEATHSIG`), so a killed run leaves no
/// children. With `parent` given, fails if that process is no longer the parent (it died
/// before the call, and this process was re-parented).
pub fn tie_to_parent(parent: Option<u32>) -> Result<()> {
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
    let ppid = rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get().unsigned_abs());
    match parent {
        Some(parent) if parent != ppid => Err(err("the parent already exited")),
        _ => Ok(()),
    }
}

/// Removes the entries of `dir` named `<prefix><pid>-<rest>` (or `<prefix><pid>`) whose
/// process `pid` is gone, i.e. what runs that were killed left behind, if `rest` passes
/// `rest_matches`. Files and whole directories alike; errors are ignored.
pub fn remove_stale(dir: &Path, prefix: &str, rest_matches: impl Fn(&str) -> bool) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(tail) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
            continue;
        };
        let (pid, rest) = tail.split_once('-').unwrap_or((tail, ""));
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() || !rest_matches(rest) {
            continue;
        }
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let path = entry.path();
            let _ = if path.is_dir() {
                std::fs::remove_dir_all(path)
            } else {
                std::fs::remove_file(path)
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_stale_removes_only_what_dead_processes_left() {
        let dir = std::env::temp_dir().join(format!("rb-process-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // A process that has exited (and been reaped): its pid is gone.
        let mut child = Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let me = std::process::id();
        let names = [
            format!("x-{dead}-queue"),
            format!("x-{dead}-other"),
            format!("x-{dead}"),
            format!("x-{me}-queue"),
            format!("y-{dead}-queue"),
            "x-notapid-queue".to_string(),
        ];
        for n in &names[..4] {
            std::fs::write(dir.join(n), b"").unwrap();
        }
        std::fs::create_dir_all(dir.join(&names[4]).join("inner")).unwrap();
        std::fs::write(dir.join(&names[5]), b"").unwrap();
        std::fs::create_dir_all(dir.join(format!("x-{dead}-queue-dir")).join("inner")).unwrap();
        remove_stale(&dir, "x-", |rest| rest.split('-').next() == Some("queue"));
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut want = vec![
            names[1].clone(),
            names[2].clone(),
            names[3].clone(),
            names[4].clone(),
            names[5].clone(),
        ];
        want.sort();
        assert_eq!(left, want);
        remove_stale(&dir, "x-", |_| true);
        assert!(!dir.join(&names[1]).exists() && !dir.join(&names[2]).exists());
        assert!(dir.join(&names[3]).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

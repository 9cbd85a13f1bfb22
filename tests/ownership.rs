//! Directories and files another user owns (or may write) are refused: roots, durable
//! directories, log directories, segment files, lock files, log segment files, and a durable
//! topic's control, group and partition files.
//!
//! Planting needs another uid: the tests chown as root, or run a child as `nobody` (65534). Run as
//! another user they only check what needs no privilege.

mod common;

use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;

use common::{child_args, data_dir, exe_for_other_users, parse_args, tell, test_root, ChildRole};
use ringbus::{Node, OpenError, SyncPolicy};

const NOBODY: u32 = 65534;

fn as_root() -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root {
        eprintln!("not root: planting files of another uid needs root");
    }
    root
}

fn set_mode(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Asserts `r` is `PermissionDenied` whose message names `path` and says `fix`.
#[track_caller]
fn assert_refused<T: std::fmt::Debug>(r: Result<T, OpenError>, path: &Path, fix: &str) {
    match r {
        Err(OpenError::PermissionDenied(msg)) => {
            let p = path.display().to_string();
            assert!(msg.contains(&p), "{msg:?} does not name {p}");
            assert!(msg.contains(fix), "{msg:?} does not say {fix:?}");
        }
        other => panic!(
            "expected PermissionDenied for {}, got {other:?}",
            path.display()
        ),
    }
}

#[test]
fn child_entry() {
    let Ok(role) = std::env::var(common::CHILD_ENV) else {
        return;
    };
    let a = parse_args(&child_args());
    let kind = |r: std::io::Result<()>| match r {
        Ok(()) => "ok".to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => "denied".to_string(),
        Err(e) => format!("other {e}"),
    };
    match role.as_str() {
        // As another user: prepare a root for the victim, world-writable, with a segment in it.
        "planter" => {
            let dir = Path::new(&a["dir"]);
            std::fs::create_dir(dir).unwrap();
            set_mode(dir, 0o777);
            std::fs::write(dir.join("topic_t"), b"").unwrap();
            set_mode(&dir.join("topic_t"), 0o666);
            tell("planted");
        }
        // As another user: try to join a segment in the victim's root, read it, plant a file.
        "intruder" => {
            let root = Path::new(&a["root"]);
            let joined = Node::with_root(root).and_then(|n| n.topic::<u64>("guarded").subscriber());
            let joined = match joined {
                Ok(_) => "ok".to_string(),
                Err(OpenError::PermissionDenied(_)) => "PermissionDenied".to_string(),
                Err(e) => format!("other {e}"),
            };
            tell(&format!("join {joined}"));
            let read = std::fs::File::open(root.join("topic_guarded")).map(drop);
            tell(&format!("read {}", kind(read)));
            let plant = std::fs::write(root.join("topic_planted"), b"");
            tell(&format!("plant {}", kind(plant)));
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn a_root_owned_by_another_user_is_refused() {
    // Ours but writable by the group or by others: refused whoever we are.
    let ours = test_root("own-loose");
    std::fs::create_dir(&ours).unwrap();
    for mode in [0o777, 0o770, 0o702] {
        set_mode(&ours, mode);
        assert_refused(Node::with_root(&ours), &ours, "chmod go-w");
    }
    // Ours, readable but not writable by others: fine.
    set_mode(&ours, 0o755);
    Node::with_root(&ours).unwrap();
    std::fs::remove_dir_all(&ours).unwrap();

    if !as_root() {
        return;
    }
    let foreign = test_root("own-foreign");
    std::fs::create_dir(&foreign).unwrap();
    chown(&foreign, Some(NOBODY), Some(NOBODY)).unwrap();
    for mode in [0o777, 0o700] {
        set_mode(&foreign, mode);
        assert_refused(Node::with_root(&foreign), &foreign, "chown it");
    }
    std::fs::remove_dir_all(&foreign).unwrap();
}

#[test]
fn a_root_planted_by_another_user_is_refused() {
    if !as_root() {
        return;
    }
    // Another user (a real process of uid 65534) creates the victim's root before it does.
    let dir = test_root("own-planted");
    let exe = exe_for_other_users("own-planted");
    let args = format!("dir={}", dir.display());
    let mut c = ChildRole::spawn_exe(&exe, "planter", &dir, &args, |cmd| {
        cmd.uid(NOBODY).gid(NOBODY);
    });
    c.expect("planted");
    assert!(c.finish());
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o777
    );
    assert_refused(Node::with_root(&dir), &dir, "chown it");
    // The planted file is left alone.
    assert!(dir.join("topic_t").exists());
    std::fs::remove_dir_all(&dir).unwrap();
    let _ = std::fs::remove_dir_all(exe.parent().unwrap());
}

#[test]
fn durable_and_log_directories_of_another_user_are_refused() {
    if !as_root() {
        return;
    }
    let node = Node::in_process();
    // The durable directory itself.
    let dir = data_dir("own-durable");
    std::fs::create_dir_all(&dir).unwrap();
    chown(&dir, Some(NOBODY), Some(NOBODY)).unwrap();
    assert_refused(
        node.queue::<u64>("d").durable(&dir).producer(),
        &dir,
        "chown it",
    );
    std::fs::remove_dir_all(&dir).unwrap();
    // A good durable directory holding a log directory of another user.
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("queue_d.log");
    std::fs::create_dir(&log).unwrap();
    chown(&log, Some(NOBODY), Some(NOBODY)).unwrap();
    assert_refused(
        node.queue::<u64>("d").durable(&dir).producer(),
        &log,
        "chown it",
    );
    // Ours but writable by others.
    chown(&log, Some(0), Some(0)).unwrap();
    set_mode(&log, 0o777);
    assert_refused(
        node.queue::<u64>("d").durable(&dir).producer(),
        &log,
        "chmod go-w",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn durable_topic_files_of_another_user_are_refused() {
    if !as_root() {
        return;
    }
    let dir = data_dir("own-dtopic");
    let t = Node::in_process().topic::<u64>("t").durable(&dir);
    {
        let mut p = t.publisher().unwrap();
        p.send(&7).unwrap();
        let _g = t.subscriber().unwrap().group("g").unwrap();
    }
    let top = dir.join("topic_t");
    // The control file, a group file and a partition's directory, each planted by another user
    // or writable by others: refused, naming the file, and left alone.
    for path in [
        top.join("control"),
        top.join("groups").join("g"),
        top.join("p000"),
    ] {
        chown(&path, Some(NOBODY), Some(NOBODY)).unwrap();
        let opened = t
            .subscriber_at(ringbus::durable::StartAt::Earliest)
            .and_then(|s| s.group("g"));
        assert_refused(opened, &path, "chown it");
        chown(&path, Some(0), Some(0)).unwrap();
        let mode = if path.is_dir() { 0o777 } else { 0o666 };
        set_mode(&path, mode);
        let opened = t
            .subscriber_at(ringbus::durable::StartAt::Earliest)
            .and_then(|s| s.group("g"));
        assert_refused(opened, &path, "chmod go-w");
        set_mode(&path, if path.is_dir() { 0o700 } else { 0o600 });
    }
    // Repaired: the message is still there.
    let mut s = t
        .subscriber_at(ringbus::durable::StartAt::Earliest)
        .unwrap();
    assert_eq!(*s.try_receive().unwrap(), 7);
    drop(s);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn segment_and_lock_files_of_another_user_are_refused() {
    if !as_root() {
        return;
    }
    let root = test_root("own-files");
    let node = Node::with_root(&root).unwrap();
    // A valid segment with a live participant, copied: what an intruder could plant.
    let p = node.topic::<u64>("model").publisher().unwrap();
    let model = std::fs::read(root.join("topic_model")).unwrap();
    drop(p);

    let seg = root.join("topic_seg");
    std::fs::write(&seg, &model).unwrap();
    set_mode(&seg, 0o600);
    chown(&seg, Some(NOBODY), Some(NOBODY)).unwrap();
    assert_refused(node.topic::<u64>("seg").subscriber(), &seg, "chown it");
    // Left alone: neither replaced nor removed.
    assert_eq!(std::fs::read(&seg).unwrap(), model);
    // Ours, but writable by others.
    chown(&seg, Some(0), Some(0)).unwrap();
    set_mode(&seg, 0o666);
    assert_refused(node.topic::<u64>("seg").publisher(), &seg, "chmod go-w");

    // An empty segment file of another user (would be judged stale and replaced).
    let empty = root.join("topic_empty");
    std::fs::write(&empty, b"").unwrap();
    chown(&empty, Some(NOBODY), Some(NOBODY)).unwrap();
    assert_refused(node.topic::<u64>("empty").publisher(), &empty, "chown it");
    assert!(empty.exists());

    // A lock file of another user.
    let lock = root.join("topic_locked.lock");
    std::fs::write(&lock, b"").unwrap();
    set_mode(&lock, 0o600);
    chown(&lock, Some(NOBODY), Some(NOBODY)).unwrap();
    assert_refused(node.topic::<u64>("locked").publisher(), &lock, "chown it");
    assert!(!root.join("topic_locked").exists(), "nothing created");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn log_segment_files_of_another_user_are_refused() {
    if !as_root() {
        return;
    }
    let dir = data_dir("own-log");
    let node = Node::in_process();
    let q = node
        .queue::<u64>("l")
        .durable(&dir)
        .sync_policy(SyncPolicy::Always);
    {
        let mut p = q.producer().unwrap();
        p.send(&7).unwrap();
    }
    let log = dir.join("queue_l.log");
    let seg = std::fs::read_dir(&log)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .expect("a log segment file");
    chown(&seg, Some(NOBODY), Some(NOBODY)).unwrap();
    assert_refused(q.consumer(), &seg, "chown it");
    chown(&seg, Some(0), Some(0)).unwrap();
    set_mode(&seg, 0o622);
    assert_refused(q.consumer(), &seg, "chmod go-w");
    // Repaired as the message says: the message is still there.
    set_mode(&seg, 0o600);
    let c = q.consumer().unwrap();
    assert_eq!(*c.try_receive().unwrap(), 7);
    drop(c);
    let _ = std::fs::remove_dir_all(&dir); // a background segment thread may still be at work
}

#[test]
fn another_user_cannot_join_our_segments_or_plant_files() {
    if !as_root() {
        return;
    }
    let root = test_root("own-intruder");
    let node = Node::with_root(&root).unwrap();
    let mut p = node.topic::<u64>("guarded").publisher().unwrap();
    let s = node.topic::<u64>("guarded").subscriber().unwrap();
    assert_eq!(
        std::fs::metadata(&root).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let exe = exe_for_other_users("own-intruder");
    let args = format!("root={}", root.display());
    let mut c = ChildRole::spawn_exe(&exe, "intruder", &root, &args, |cmd| {
        cmd.uid(NOBODY).gid(NOBODY);
    });
    assert_eq!(c.expect("join"), "PermissionDenied");
    assert_eq!(c.expect("read"), "denied");
    assert_eq!(c.expect("plant"), "denied");
    assert!(c.finish());
    assert!(!root.join("topic_planted").exists());
    // Our own participants are untouched.
    p.send_copy(&5).unwrap();
    assert_eq!(*s.try_receive().unwrap(), 5);
    drop((p, s));
    let _ = std::fs::remove_dir_all(exe.parent().unwrap());
    let _ = std::fs::remove_dir_all(&root);
}

//! Workload attestation: who is calling, from the kernel, not from anything
//! the caller says. The peer's pid, uid and gid come from SO_PEERCRED on the
//! Workload API socket; the rest is read from /proc and turned into
//! selectors: `unix:uid:`, `unix:gid:`, `unix:user:`, `unix:group:`,
//! `unix:path:` (the executable) and `unix:sha256:` (its digest).
//!
//! A pid can be reused between connect and attestation. The process start
//! time is read before and after, and the uid in /proc is checked against
//! the kernel's; if either changed, the call is refused.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;

/// Why a caller could not be attested.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    /// The kernel gave no credentials (not a unix socket peer).
    #[error("the caller's credentials are not available")]
    NoCredentials,
    /// The process went away or its pid was reused during attestation.
    #[error("the calling process changed during attestation (exited, or its pid was reused)")]
    Raced,
    /// /proc could not be read.
    #[error("cannot inspect the calling process: {0}")]
    Proc(String),
}

/// What identifies the program a process runs: its start time (against pid
/// reuse) and its executable's device and inode (against execve, which keeps
/// the pid). Taken when a connection is accepted and compared on every call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExeIdentity {
    start_time: String,
    dev: u64,
    ino: u64,
}

/// The [`ExeIdentity`] of `pid` now, if it can be read.
pub fn exe_identity(pid: i32) -> Option<ExeIdentity> {
    let meta = std::fs::metadata(format!("/proc/{pid}/exe")).ok()?;
    Some(ExeIdentity {
        start_time: start_time(pid).ok()?,
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

/// The attested facts about a caller.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Process ID at attestation.
    pub pid: i32,
    /// Its selectors, `type:value`.
    pub selectors: Vec<String>,
}

/// (device, inode, size, mtime s, mtime ns, ctime s, ctime ns)
type FileKey = (u64, u64, u64, i64, i64, i64, i64);

/// Digests of executables, keyed by (device, inode, size, mtime, ctime), so
/// that a busy workload does not make the agent hash its binary on every
/// call.
#[derive(Default)]
pub struct DigestCache {
    /// By (device, inode, size, mtime, ctime): ctime cannot be set back by
    /// whoever rewrites a file in place and restores its mtime.
    map: Mutex<HashMap<FileKey, String>>,
}

fn start_time(pid: i32) -> Result<String, AttestError> {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|_| AttestError::Raced)?;
    // Field 22, counted after the parenthesised command name (which may
    // itself contain spaces and parentheses).
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or(AttestError::Raced)?;
    after
        .split_whitespace()
        .nth(19)
        .map(str::to_owned)
        .ok_or(AttestError::Raced)
}

fn proc_uid(pid: i32) -> Result<u32, AttestError> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|_| AttestError::Raced)?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        // Real, effective, saved, filesystem: SO_PEERCRED reports the effective one.
        .and_then(|v| v.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .ok_or(AttestError::Raced)
}

impl DigestCache {
    fn sha256_of_exe(&self, pid: i32) -> Result<String, AttestError> {
        let exe = format!("/proc/{pid}/exe");
        let meta = std::fs::metadata(&exe).map_err(|e| AttestError::Proc(format!("{exe}: {e}")))?;
        let key = (
            meta.dev(),
            meta.ino(),
            meta.size(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ctime(),
            meta.ctime_nsec(),
        );
        if let Some(d) = self.map.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(d.clone());
        }
        let mut file =
            std::fs::File::open(&exe).map_err(|e| AttestError::Proc(format!("{exe}: {e}")))?;
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut buf = vec![0u8; 1 << 16];
        loop {
            use std::io::Read;
            let n = file
                .read(&mut buf)
                .map_err(|e| AttestError::Proc(format!("{exe}: {e}")))?;
            if n == 0 {
                break;
            }
            ctx.update(&buf[..n]);
        }
        let digest: String = ctx
            .finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 4096 {
            map.clear();
        }
        map.insert(key, digest.clone());
        Ok(digest)
    }

    /// Attests the process with these kernel credentials. Blocking (reads
    /// /proc and may hash a binary): call from a blocking thread.
    pub fn attest(
        &self,
        pid: Option<i32>,
        uid: u32,
        gid: u32,
        at_accept: Option<&ExeIdentity>,
    ) -> Result<Workload, AttestError> {
        let pid = pid.ok_or(AttestError::NoCredentials)?;
        // The process that connected must still be running the same program:
        // a process that connects and then calls execve (keeping its pid)
        // must not be attested as the new program.
        if at_accept.is_none() || exe_identity(pid).as_ref() != at_accept {
            return Err(AttestError::Raced);
        }
        let before = start_time(pid)?;
        let mut selectors = vec![format!("unix:uid:{uid}"), format!("unix:gid:{gid}")];
        if let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
            selectors.push(format!("unix:user:{}", user.name));
        }
        if let Ok(Some(group)) = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)) {
            selectors.push(format!("unix:group:{}", group.name));
        }
        if let Ok(path) = std::fs::read_link(format!("/proc/{pid}/exe")) {
            selectors.push(format!("unix:path:{}", path.display()));
            selectors.push(format!("unix:sha256:{}", self.sha256_of_exe(pid)?));
        }
        if start_time(pid)? != before
            || proc_uid(pid)? != uid
            || exe_identity(pid).as_ref() != at_accept
        {
            return Err(AttestError::Raced);
        }
        Ok(Workload { pid, selectors })
    }
}

/// True when every selector of an entry is among the workload's.
pub fn matches(entry_selectors: &[String], workload: &[String]) -> bool {
    !entry_selectors.is_empty() && entry_selectors.iter().all(|s| workload.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attests_this_process_with_all_selector_kinds() {
        let cache = DigestCache::default();
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        let me = std::process::id() as i32;
        let id = exe_identity(me);
        let w = cache.attest(Some(me), uid, gid, id.as_ref()).unwrap();
        for prefix in ["unix:uid:", "unix:gid:", "unix:path:", "unix:sha256:"] {
            assert!(
                w.selectors.iter().any(|s| s.starts_with(prefix)),
                "{prefix} missing: {:?}",
                w.selectors
            );
        }
        assert!(w.selectors.contains(&format!("unix:uid:{uid}")));
        let exe = std::env::current_exe().unwrap();
        assert!(
            w.selectors
                .contains(&format!("unix:path:{}", exe.display()))
        );
        // The digest is cached and stable.
        let again = cache.attest(Some(me), uid, gid, id.as_ref()).unwrap();
        assert_eq!(w.selectors, again.selectors);
    }

    #[test]
    fn a_changed_uid_pid_or_program_is_refused() {
        let cache = DigestCache::default();
        let uid = nix::unistd::getuid().as_raw();
        let me = std::process::id() as i32;
        let id = exe_identity(me);
        let err = cache.attest(Some(me), uid + 1, 0, id.as_ref()).unwrap_err();
        assert!(matches!(err, AttestError::Raced));
        assert!(matches!(
            cache.attest(None, uid, 0, id.as_ref()),
            Err(AttestError::NoCredentials)
        ));
        assert!(matches!(
            cache.attest(Some(i32::MAX), uid, 0, id.as_ref()),
            Err(AttestError::Raced)
        ));
        // A connection whose process ran another program at accept (execve
        // since) is refused, and so is one whose program was never known.
        let mut other = id.clone().unwrap();
        other.ino += 1;
        assert!(matches!(
            cache.attest(Some(me), uid, 0, Some(&other)),
            Err(AttestError::Raced)
        ));
        assert!(matches!(
            cache.attest(Some(me), uid, 0, None),
            Err(AttestError::Raced)
        ));
    }

    #[test]
    fn all_entry_selectors_must_match() {
        let w = vec!["unix:uid:1".to_string(), "unix:gid:2".to_string()];
        assert!(matches(&["unix:uid:1".into()], &w));
        assert!(matches(&["unix:uid:1".into(), "unix:gid:2".into()], &w));
        assert!(!matches(&["unix:uid:1".into(), "unix:gid:3".into()], &w));
        assert!(
            !matches(&[], &w),
            "an entry without selectors matches nothing"
        );
    }
}

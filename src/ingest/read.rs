//! Reading ingest inputs within bounds: which files a run may read, and how much.
//!
//! [`ReadPolicy`] says where inputs may come from and how large they may be:
//!
//! - **Roots** (`[ingest] roots` of `ward serve`, `docs/service.md`): with roots, every path
//!   must be absolute, without `..`, and resolve (symbolic links followed) to a place under
//!   one of the roots, which are canonicalized once. A link inside a root that leads out of
//!   every root is refused, as is a path outside them; the check is made again on the file
//!   actually opened (Linux: the descriptor's path in `/proc/self/fd`, and the last component
//!   is opened with `O_NOFOLLOW`), so swapping a link in between the walk and the read does
//!   not escape. Without roots (`ward ingest`: the local user reads what they name) any
//!   path is read.
//! - **Regular files only**: a device (`/dev/zero`), FIFO or socket is refused by name, in
//!   both modes, before a byte is read (FIFOs are opened non-blocking so they cannot hang).
//! - **Symbolic link loops**: directories are walked following links, and a link back to a
//!   directory being walked is refused by name instead of recursing forever.
//! - **Caps**: a file larger than [`ReadPolicy::max_file_bytes`] and a gzip file whose content
//!   grows past [`ReadPolicy::max_decompressed_bytes`] are refused by name and limit, and
//!   neither is ever held in memory beyond its cap (a gzip bomb stops at the cap).

use std::fs::{File, Metadata};
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// Default of [`ReadPolicy::max_file_bytes`]: 4 GiB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 4 << 30;

/// Default of [`ReadPolicy::max_decompressed_bytes`]: 4 GiB.
pub const DEFAULT_MAX_DECOMPRESSED_BYTES: u64 = 4 << 30;

/// The folders a server may ingest from, as configured and canonicalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    /// As configured (absolute).
    given: Vec<PathBuf>,
    /// Canonical (symbolic links resolved), in the order given.
    canonical: Vec<PathBuf>,
    /// Where they were configured (for error messages).
    setting: String,
}

impl Roots {
    /// Canonicalizes `roots` (each must be an existing directory); `setting` names where
    /// they were configured, e.g. `[ingest] roots in serve.toml`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the setting and the root that is not an existing
    /// directory.
    pub fn new(roots: &[PathBuf], setting: &str) -> Result<Roots> {
        let mut given = Vec::with_capacity(roots.len());
        let mut canonical = Vec::with_capacity(roots.len());
        for r in roots {
            let bad =
                |reason: String| Error::invalid(setting, format!("{}: {reason}", r.display()));
            let c =
                std::fs::canonicalize(r).map_err(|e| bad(format!("cannot be resolved ({e})")))?;
            if !c.is_dir() {
                return Err(bad("is not a directory".into()));
            }
            given.push(std::path::absolute(r).unwrap_or_else(|_| r.clone()));
            canonical.push(c);
        }
        Ok(Roots {
            given,
            canonical,
            setting: setting.to_string(),
        })
    }

    /// The canonical roots.
    pub fn canonical(&self) -> &[PathBuf] {
        &self.canonical
    }

    /// Whether `canonical` (a resolved path) is one of the roots or under one.
    fn holds(&self, canonical: &Path) -> bool {
        self.canonical.iter().any(|r| canonical.starts_with(r))
    }

    /// Whether `path` (as given) is under a root as written, configured or canonical.
    fn holds_lexically(&self, path: &Path) -> bool {
        self.given
            .iter()
            .chain(&self.canonical)
            .any(|r| path.starts_with(r))
    }

    fn listing(&self) -> String {
        self.canonical
            .iter()
            .map(|r| r.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn outside(&self, path: &Path, how: &str) -> Error {
        Error::PermissionDenied {
            reason: format!(
                "{}: {how} outside the ingest roots ({}: {})",
                path.display(),
                self.setting,
                self.listing()
            ),
        }
    }
}

/// Where an ingest run may read and how much (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadPolicy {
    /// `Some`: only paths under these roots (the server); `None`: any path (the CLI).
    pub roots: Option<Roots>,
    /// Largest input file, in bytes as stored (compressed for `.gz`).
    pub max_file_bytes: u64,
    /// Largest content of one gzip input after decompression, in bytes.
    pub max_decompressed_bytes: u64,
    /// Where the two limits were set, for error messages (e.g. `[ingest] in serve.toml`).
    pub limits_from: String,
}

impl Default for ReadPolicy {
    /// No roots, the default caps.
    fn default() -> Self {
        ReadPolicy {
            roots: None,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            max_decompressed_bytes: DEFAULT_MAX_DECOMPRESSED_BYTES,
            limits_from: "the built-in default".into(),
        }
    }
}

/// A file found for reading: the path to open and the name Ward records for it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Found {
    path: PathBuf,
    name: String,
}

/// The files under `paths` (directories walked in name order, names starting with `.`
/// skipped, symbolic links followed) with the names Ward records for them: a file given
/// directly is named by its file name, a file found in a directory by its path inside that
/// directory (`/`-separated).
///
/// # Errors
/// [`Error::PermissionDenied`] for a path outside the roots (or a link leading out);
/// [`Error::InvalidArgument`] naming the path for a relative or `..` path (with roots), a
/// path that does not exist, a symbolic link loop, a dangling link, or a file that is not a
/// regular file; [`Error::Io`] for a directory that cannot be listed.
pub fn input_files(paths: &[PathBuf], policy: &ReadPolicy) -> Result<Vec<(PathBuf, String)>> {
    let mut out = Vec::new();
    for p in paths {
        let (open, meta) = resolve_given(p, policy)?;
        if meta.is_dir() {
            let mut ancestors = vec![std::fs::canonicalize(&open).map_err(|e| Error::io(p, e))?];
            walk(&open, p, "", policy, &mut ancestors, &mut out)?;
        } else {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_else(|| p.to_string_lossy().to_string());
            out.push(Found { path: open, name });
        }
    }
    Ok(out.into_iter().map(|f| (f.path, f.name)).collect())
}

/// The path to open for `p` as given, and its metadata (links followed): a directory or a
/// regular file.
fn resolve_given(p: &Path, policy: &ReadPolicy) -> Result<(PathBuf, Metadata)> {
    let Some(roots) = &policy.roots else {
        let meta = std::fs::metadata(p).map_err(|e| missing_or_io(p, e))?;
        check_kind(p, &meta)?;
        return Ok((p.to_path_buf(), meta));
    };
    if !p.is_absolute() {
        return Err(Error::invalid(
            p.display().to_string(),
            format!(
                "not an absolute path: give a path under an ingest root ({})",
                roots.listing()
            ),
        ));
    }
    if p.components().any(|c| c == Component::ParentDir) {
        return Err(Error::invalid(
            p.display().to_string(),
            "contains `..`: give the path under an ingest root without `..`",
        ));
    }
    // Outside every root as written: refused before the file system is asked, so a caller
    // learns nothing about paths outside the roots.
    if !roots.holds_lexically(p) {
        return Err(roots.outside(p, "is"));
    }
    let canonical = std::fs::canonicalize(p).map_err(|e| missing_or_io(p, e))?;
    if !roots.holds(&canonical) {
        return Err(roots.outside(p, "resolves (through a symbolic link) to a place"));
    }
    let meta = std::fs::metadata(&canonical).map_err(|e| missing_or_io(p, e))?;
    check_kind(p, &meta)?;
    Ok((canonical, meta))
}

/// Walks directory `dir` (to open: canonical with roots) found as `shown` (for names and
/// errors); `prefix` is the name of `dir` inside the directory given.
fn walk(
    dir: &Path,
    shown: &Path,
    prefix: &str,
    policy: &ReadPolicy,
    ancestors: &mut Vec<PathBuf>,
    out: &mut Vec<Found>,
) -> Result<()> {
    let mut entries: Vec<std::ffi::OsString> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(shown, e))?
        .map(|e| {
            e.map(|e| e.file_name())
                .map_err(|err| Error::io(shown, err))
        })
        .collect::<Result<_>>()?;
    entries.sort();
    for file_name in entries {
        let lossy = file_name.to_string_lossy().to_string();
        if lossy.starts_with('.') {
            continue;
        }
        let path = dir.join(&file_name);
        let entry_shown = shown.join(&file_name);
        let name = if prefix.is_empty() {
            lossy.clone()
        } else {
            format!("{prefix}/{lossy}")
        };
        let link = std::fs::symlink_metadata(&path).map_err(|e| Error::io(&entry_shown, e))?;
        let (open, meta) = if link.file_type().is_symlink() {
            let target = std::fs::canonicalize(&path).map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) {
                    Error::invalid(
                        entry_shown.display().to_string(),
                        "a symbolic link loop (the link never reaches a file)",
                    )
                } else if e.kind() == std::io::ErrorKind::NotFound {
                    Error::invalid(
                        entry_shown.display().to_string(),
                        "a symbolic link to nothing (its target does not exist)",
                    )
                } else {
                    Error::io(&entry_shown, e)
                }
            })?;
            if let Some(roots) = &policy.roots {
                if !roots.holds(&target) {
                    return Err(roots.outside(&entry_shown, "is a symbolic link to a place"));
                }
            }
            let meta = std::fs::metadata(&target).map_err(|e| Error::io(&entry_shown, e))?;
            let open = if policy.roots.is_some() { target } else { path };
            (open, meta)
        } else {
            (path, link)
        };
        check_kind(&entry_shown, &meta)?;
        if meta.is_dir() {
            let canonical = std::fs::canonicalize(&open).map_err(|e| Error::io(&entry_shown, e))?;
            if let Some(a) = ancestors.iter().find(|a| **a == canonical) {
                return Err(Error::invalid(
                    entry_shown.display().to_string(),
                    format!(
                        "a symbolic link loop: it leads back to {}, which is being read",
                        a.display()
                    ),
                ));
            }
            ancestors.push(canonical);
            walk(&open, &entry_shown, &name, policy, ancestors, out)?;
            ancestors.pop();
        } else {
            out.push(Found { path: open, name });
        }
    }
    Ok(())
}

/// Directories and regular files pass; anything else is refused by name.
fn check_kind(p: &Path, meta: &Metadata) -> Result<()> {
    if meta.is_dir() || meta.is_file() {
        return Ok(());
    }
    Err(Error::invalid(
        p.display().to_string(),
        format!(
            "is a {}: only regular files and directories are ingested",
            kind_name(meta)
        ),
    ))
}

fn kind_name(meta: &Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt as _;
        let t = meta.file_type();
        if t.is_block_device() {
            return "block device";
        }
        if t.is_char_device() {
            return "character device";
        }
        if t.is_fifo() {
            return "FIFO (named pipe)";
        }
        if t.is_socket() {
            return "socket";
        }
    }
    let _ = meta;
    "special file"
}

/// A path that does not exist is the caller's mistake (named); other errors are I/O.
fn missing_or_io(p: &Path, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        Error::invalid(p.display().to_string(), "does not exist")
    } else if e.raw_os_error() == Some(libc::ELOOP) {
        Error::invalid(
            p.display().to_string(),
            "a symbolic link loop (the link never reaches a file)",
        )
    } else {
        Error::io(p, e)
    }
}

/// Opens `path` for reading: a regular file (checked on the descriptor), with roots not
/// through a final symbolic link and (Linux) still under a root as opened.
fn open(path: &Path, name: &str, policy: &ReadPolicy) -> Result<(File, u64)> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        let nofollow = if policy.roots.is_some() {
            libc::O_NOFOLLOW
        } else {
            0
        };
        o.custom_flags(libc::O_NONBLOCK | nofollow);
    }
    let file = o.open(path).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            Error::invalid(name, "became a symbolic link after it was checked: refused")
        } else {
            missing_or_io(path, e)
        }
    })?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::invalid(
            name,
            format!("is a {}: only regular files are ingested", kind_name(&meta)),
        ));
    }
    #[cfg(target_os = "linux")]
    if let Some(roots) = &policy.roots {
        use std::os::fd::AsRawFd as _;
        let fd_path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        if let Ok(actual) = std::fs::read_link(&fd_path) {
            if !roots.holds(&actual) {
                return Err(roots.outside(path, "was opened at a place"));
            }
        }
    }
    Ok((file, meta.len()))
}

/// Reads one input file within the policy's caps, gunzipping `*.gz`: returns the name
/// parsers see (without `.gz`), the bytes as stored, and the content.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the file and the limit for a file over
/// `max_file_bytes` or a gzip file whose content passes `max_decompressed_bytes`, or for a
/// file that is not a regular file; [`Error::BadInput`] for a `.gz` file that is not gzip;
/// [`Error::Io`] if unreadable.
pub fn read_input(
    path: &Path,
    name: &str,
    policy: &ReadPolicy,
) -> Result<(String, Vec<u8>, Vec<u8>)> {
    let (file, len) = open(path, name, policy)?;
    let max = policy.max_file_bytes;
    let over_file = |n: u64| {
        Error::invalid(
            name,
            format!(
                "{n} bytes is over the limit of {max} bytes per input file (max_file_bytes, {})",
                policy.limits_from
            ),
        )
    };
    if len > max {
        return Err(over_file(len));
    }
    // The file may grow after the check: read at most one byte past the cap.
    let raw = read_capped(file, max, len as usize)
        .map_err(|e| Error::io(path, e))?
        .ok_or_else(|| over_file(max.saturating_add(1)))?;
    let name = name.to_string();
    if let Some(stem) = name.strip_suffix(".gz") {
        let limit = policy.max_decompressed_bytes;
        let content = read_capped(
            flate2::read::MultiGzDecoder::new(raw.as_slice()),
            limit,
            raw.len().saturating_mul(4),
        )
        .map_err(|e| Error::BadInput {
            location: name.clone(),
            field: "-".into(),
            reason: format!("not valid gzip: {e}"),
        })?
        .ok_or_else(|| {
            Error::invalid(
                &name,
                format!(
                    "decompresses to more than the limit of {limit} bytes (max_decompressed_bytes, {}); \
                     a gzip bomb, or raise the limit",
                    policy.limits_from
                ),
            )
        })?;
        return Ok((stem.to_string(), raw, content));
    }
    let content = raw.clone();
    Ok((name, raw, content))
}

/// Reads `r` to its end, holding at most `cap` bytes (`None` when there are more), with
/// `hint` bytes reserved up front (capped too).
fn read_capped(mut r: impl Read, cap: u64, hint: usize) -> std::io::Result<Option<Vec<u8>>> {
    let cap = usize::try_from(cap).unwrap_or(usize::MAX);
    let mut out: Vec<u8> = Vec::with_capacity(hint.min(cap).min(1 << 30));
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(Some(out)),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n > cap - out.len() {
            return Ok(None);
        }
        if out.capacity() - out.len() < n {
            // Grow by doubling, but never past the cap.
            let grow = out.len().max(n).min(cap - out.len());
            out.reserve_exact(grow.max(n));
        }
        out.extend_from_slice(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn policy(roots: Option<&Path>) -> ReadPolicy {
        ReadPolicy {
            roots: roots.map(|r| Roots::new(&[r.to_path_buf()], "[ingest] roots").unwrap()),
            max_file_bytes: 1000,
            max_decompressed_bytes: 10_000,
            limits_from: "[ingest] in test.toml".into(),
        }
    }

    #[test]
    fn caps_name_the_file_and_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("a.csv");
        std::fs::write(&small, b"x,y\n1,2\n").unwrap();
        let big = dir.path().join("big.csv");
        std::fs::write(&big, vec![b'x'; 1001]).unwrap();
        let bomb = dir.path().join("bomb.csv.gz");
        let packed = gz(&vec![b'0'; 10_001]);
        assert!(packed.len() < 1000, "{}", packed.len());
        std::fs::write(&bomb, &packed).unwrap();
        let fits = dir.path().join("fits.csv.gz");
        std::fs::write(&fits, gz(&vec![b'0'; 10_000])).unwrap();
        for roots in [None, Some(dir.path())] {
            let p = policy(roots);
            let (name, raw, content) = read_input(&small, "a.csv", &p).unwrap();
            assert_eq!((name.as_str(), raw.len(), content.len()), ("a.csv", 8, 8));
            let e = read_input(&big, "big.csv", &p).unwrap_err().to_string();
            assert!(
                e.contains("big.csv")
                    && e.contains("1001 bytes")
                    && e.contains("limit of 1000")
                    && e.contains("max_file_bytes")
                    && e.contains("test.toml"),
                "{e}"
            );
            let e = read_input(&bomb, "bomb.csv.gz", &p).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
            let e = e.to_string();
            assert!(
                e.contains("bomb.csv.gz")
                    && e.contains("10000 bytes")
                    && e.contains("max_decompressed_bytes"),
                "{e}"
            );
            let (name, _, content) = read_input(&fits, "fits.csv.gz", &p).unwrap();
            assert_eq!((name.as_str(), content.len()), ("fits.csv", 10_000));
        }
        // The default applies without configuration (the CLI).
        let d = ReadPolicy::default();
        assert_eq!(d.max_decompressed_bytes, DEFAULT_MAX_DECOMPRESSED_BYTES);
        assert!(d.roots.is_none());
    }

    #[test]
    fn capped_reads_stop_at_the_cap() {
        let endless = std::io::repeat(b'z');
        assert_eq!(read_capped(endless, 100_000, 0).unwrap(), None);
        let v = read_capped(&b"hello"[..], 5, 100).unwrap().unwrap();
        assert_eq!(v, b"hello");
        assert!(v.capacity() <= 5, "{}", v.capacity());
        assert_eq!(read_capped(&b"hello!"[..], 5, 0).unwrap(), None);
    }

    #[cfg(unix)]
    #[test]
    fn roots_links_loops_and_special_files() {
        use std::os::unix::fs::symlink;
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret.csv");
        std::fs::write(&secret, b"ssn\n123\n").unwrap();
        let root_dir = tempfile::tempdir().unwrap();
        let root = root_dir.path();
        std::fs::create_dir(root.join("in")).unwrap();
        std::fs::write(root.join("in/a.csv"), b"a\n").unwrap();
        std::fs::create_dir(root.join("in/sub")).unwrap();
        std::fs::write(root.join("in/sub/b.csv"), b"b\n").unwrap();
        std::fs::write(root.join("in/.hidden"), b"h\n").unwrap();
        // A link inside the root to a file inside it is fine.
        symlink(root.join("in/a.csv"), root.join("in/z-link.csv")).unwrap();
        let p = policy(Some(root));

        let files = input_files(&[root.join("in")], &p).unwrap();
        let names: Vec<&str> = files.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(names, ["a.csv", "sub/b.csv", "z-link.csv"]);
        let canonical_root = std::fs::canonicalize(root).unwrap();
        assert!(
            files.iter().all(|(f, _)| f.starts_with(&canonical_root)),
            "{files:?}"
        );

        let denied = |paths: &[PathBuf], want: &str| {
            let e = input_files(paths, &p).unwrap_err();
            assert!(matches!(e, Error::PermissionDenied { .. }), "{e:?}");
            let msg = e.to_string();
            assert!(
                msg.contains(want) && msg.contains("[ingest] roots"),
                "{msg}"
            );
        };
        // A path outside the root.
        denied(std::slice::from_ref(&secret), "secret.csv");
        // A link inside the root to a file outside, given directly and found in a walk.
        symlink(&secret, root.join("escape.csv")).unwrap();
        denied(&[root.join("escape.csv")], "escape.csv");
        std::fs::create_dir(root.join("walk")).unwrap();
        symlink(outside.path(), root.join("walk/out")).unwrap();
        denied(&[root.join("walk")], "out");
        // `..` traversal, even when it would land inside the root.
        let e = input_files(&[root.join("in/../in/a.csv")], &p).unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument { .. }) && e.to_string().contains(".."),
            "{e}"
        );
        let e = input_files(&[root.join("in/../../etc/passwd")], &p).unwrap_err();
        assert!(e.to_string().contains(".."), "{e}");
        // Relative paths.
        let e = input_files(&[PathBuf::from("in/a.csv")], &p).unwrap_err();
        assert!(e.to_string().contains("absolute"), "{e}");
        // Absent (inside the root: named; outside: no existence oracle).
        let e = input_files(&[root.join("in/none.csv")], &p).unwrap_err();
        assert!(
            e.to_string().contains("none.csv") && e.to_string().contains("does not exist"),
            "{e}"
        );
        denied(&[outside.path().join("none.csv")], "none.csv");

        // A symbolic link loop: a directory linking to its parent, and a link to itself.
        std::fs::create_dir_all(root.join("loop/d")).unwrap();
        symlink(root.join("loop"), root.join("loop/d/up")).unwrap();
        for policy in [p.clone(), ReadPolicy::default()] {
            let e = input_files(&[root.join("loop")], &policy).unwrap_err();
            assert!(
                e.to_string().contains("loop") && e.to_string().contains("up"),
                "{e}"
            );
        }
        std::fs::create_dir(root.join("self")).unwrap();
        symlink(root.join("self/me"), root.join("self/me")).unwrap();
        for policy in [p.clone(), ReadPolicy::default()] {
            let e = input_files(&[root.join("self")], &policy).unwrap_err();
            assert!(
                e.to_string().contains("me") && e.to_string().contains("loop"),
                "{e}"
            );
            let e = input_files(&[root.join("self/me")], &policy).unwrap_err();
            assert!(e.to_string().contains("loop"), "{e}");
        }

        // Device files and FIFOs, with and without roots.
        let dev = policy(Some(Path::new("/dev")));
        for policy in [dev, ReadPolicy::default()] {
            let e = input_files(&[PathBuf::from("/dev/zero")], &policy).unwrap_err();
            assert!(
                e.to_string().contains("/dev/zero") && e.to_string().contains("character device"),
                "{e}"
            );
            let e = read_input(Path::new("/dev/zero"), "zero", &policy).unwrap_err();
            assert!(e.to_string().contains("character device"), "{e}");
        }
        std::fs::create_dir(root.join("fifos")).unwrap();
        let fifo = root.join("fifos/fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let e = input_files(&[root.join("fifos")], &p).unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");
        // Opening does not block on a FIFO nobody writes to.
        let e = read_input(&fifo, "fifo", &p).unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");

        // A final component swapped for a link after the walk: not followed.
        let e = read_input(&root.join("escape.csv"), "escape.csv", &p).unwrap_err();
        assert!(e.to_string().contains("escape.csv"), "{e}");
    }
}

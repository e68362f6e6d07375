use std::fs::File;
use std::io::Write;
use std::path::Path;

/// Replaces `dest` with `bytes` so that a crash leaves either the old file or the whole new
/// one: write `tmp` (beside `dest`), fsync it, rename it over `dest`, fsync the directory.
pub fn write_durably(tmp: &Path, dest: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let written = File::create(tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(tmp, dest));
    if let Err(e) = written {
        // A full disk, say: what was written of it goes, rather than stay as a torn file.
        let _ = std::fs::remove_file(tmp);
        return Err(e);
    }
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let (tmp, dest) = (dir.path().join("a.tmp"), dir.path().join("a"));
        std::fs::write(&dest, "old").unwrap();
        write_durably(&tmp, &dest, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "new");
        assert!(!tmp.exists());
    }
}

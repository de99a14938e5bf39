//! Atomic outputs: every file we produce is written to a temporary name next to its
//! destination and renamed into place only when complete. A failed or interrupted run
//! leaves nothing behind and never touches a file the user did not name as output.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Temporary files of outputs in progress, removed by [`remove_all_pending`] when the
/// process is interrupted (the Ctrl-C handler in main calls it).
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// An output file being written.
#[derive(Debug)]
pub struct PendingOutput {
    temp: PathBuf,
    dest: PathBuf,
    done: bool,
}

impl PendingOutput {
    /// Reserve `dest`: refuse an existing file unless `force`, create the temporary file
    /// `.<name>.nanoforge-partial` beside it, and return it opened for writing.
    pub fn create(dest: &Path, force: bool) -> io::Result<(PendingOutput, File)> {
        check_dest(dest, force)?;
        if dest.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} is a directory; name a file as the output",
                    dest.display()
                ),
            ));
        }
        let name = dest.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} does not name a file", dest.display()),
            )
        })?;
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let temp = dir.join(format!(".{}.nanoforge-partial", name.to_string_lossy()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot create a file in {}: {e}", dir.display()),
                )
            })?;
        lock().push(temp.clone());
        Ok((
            PendingOutput {
                temp,
                dest: dest.to_path_buf(),
                done: false,
            },
            file,
        ))
    }

    /// Path of the temporary file.
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// Destination path.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Rename the finished temporary file into place.
    pub fn commit(mut self) -> io::Result<()> {
        fs::rename(&self.temp, &self.dest).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot move the finished output to {}: {e}",
                    self.dest.display()
                ),
            )
        })?;
        self.done = true;
        forget(&self.temp);
        Ok(())
    }
}

impl Drop for PendingOutput {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.temp);
            forget(&self.temp);
        }
    }
}

fn lock() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    PENDING.lock().unwrap_or_else(|p| p.into_inner())
}

fn forget(p: &Path) {
    lock().retain(|x| x != p);
}

/// Refuse an existing `dest` unless `force`: commands call it before long work, so the
/// refusal comes first, and [`PendingOutput::create`] calls it again.
pub fn check_dest(dest: &Path, force: bool) -> io::Result<()> {
    if dest.exists() && !force {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} already exists; pass --force to replace it",
                dest.display()
            ),
        ));
    }
    Ok(())
}

/// A temporary folder (scratch work, or an output folder being filled) removed with its
/// contents on interrupt; dropping the guard forgets it (the owner removes or keeps it).
#[derive(Debug)]
pub struct PendingDir(PathBuf);

impl PendingDir {
    pub fn register(dir: &Path) -> PendingDir {
        lock().push(dir.to_path_buf());
        PendingDir(dir.to_path_buf())
    }
}

impl Drop for PendingDir {
    fn drop(&mut self) {
        forget(&self.0);
    }
}

/// Remove every temporary output still in progress (called on interrupt).
pub fn remove_all_pending() {
    for p in lock().drain(..) {
        if p.is_dir() {
            let _ = fs::remove_dir_all(p);
        } else {
            let _ = fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_output_leaves_nothing_and_commit_renames() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.img");
        {
            let (p, _f) = PendingOutput::create(&dest, false).unwrap();
            assert!(p.temp_path().exists());
        }
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        let (p, _f) = PendingOutput::create(&dest, false).unwrap();
        p.commit().unwrap();
        assert!(dest.exists());
        assert!(PendingOutput::create(&dest, false).is_err());
        assert!(PendingOutput::create(&dest, true).is_ok());
    }
}

//! Emotion data is personal: the buffer's directories are 0700 and its files
//! 0600, whatever the process umask, including stores created by older builds.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

pub const DIR_MODE: u32 = 0o700;
pub const FILE_MODE: u32 = 0o600;

/// Create `path` (and missing parents) as 0700; tighten it if it exists.
pub fn private_dir(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(DIR_MODE))
}

/// Open (creating 0600) a file for reading and writing.
pub fn private_file(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(path)?;
    f.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
    Ok(f)
}

/// Make every directory under `root` 0700 and every file 0600 (the storage
/// engine creates its files with the process umask).
pub fn tighten_tree(root: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(root)?;
    if meta.is_dir() {
        fs::set_permissions(root, fs::Permissions::from_mode(DIR_MODE))?;
        for entry in fs::read_dir(root)? {
            tighten_tree(&entry?.path())?;
        }
    } else if meta.is_file() {
        fs::set_permissions(root, fs::Permissions::from_mode(FILE_MODE))?;
    }
    Ok(())
}

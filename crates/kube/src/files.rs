//! Reading the files aviary is given and writing the ones it produces. Every input file goes
//! through [`read_text`]: at most [`MAX_INPUT_BYTES`](aviary_core::spec::input::MAX_INPUT_BYTES), UTF-8, a byte-order mark dropped (the
//! checks are `aviary_core::spec::input`'s), and a FIFO that nobody writes to reads as empty
//! instead of hanging in `open`.

use std::fs::File;
use std::path::Path;

use aviary_core::report::Report;
use aviary_core::spec::input::{read_text_from, ReadError};
use aviary_core::spec::{self, Documents, SpecError};

/// Reads `path` as UTF-8 text, without a leading byte-order mark, refusing more than
/// [`MAX_INPUT_BYTES`](aviary_core::spec::input::MAX_INPUT_BYTES) (it is the cap `read_text_from` applies).
pub fn read_text(path: &Path) -> Result<String, ReadError> {
    let file = open(path)?;
    read_text_from(file)
}

/// Opens `path` for reading. A FIFO is opened without waiting for a writer (a named pipe nobody
/// writes to then reads as empty, where a plain open would block forever), and reads on it block
/// as usual once open.
#[cfg(unix)]
fn open(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    use std::os::unix::io::AsRawFd;
    let fifo = std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo());
    if !fifo {
        return File::open(path);
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    // Back to blocking reads: a writer that is there is waited for; with none, a read is EOF.
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor this function owns, with flags it read from it.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
    Ok(file)
}

#[cfg(not(unix))]
fn open(path: &Path) -> std::io::Result<File> {
    File::open(path)
}

/// Reads every document of `path`. The file is named in messages as it was given.
pub fn load_spec_file(path: &Path) -> Result<Documents, SpecError> {
    let label = path.display().to_string();
    let text = read_spec_input(path)?;
    spec::load_str(&label, &text)
}

/// Reads an input file as text through [`read_text`] (at most [`MAX_INPUT_BYTES`](aviary_core::spec::input::MAX_INPUT_BYTES),
/// UTF-8, byte-order mark dropped), with its problems as spec errors naming the file.
pub fn read_spec_input(path: &Path) -> Result<String, SpecError> {
    let label = path.display().to_string();
    read_text(path).map_err(|e| match e {
        ReadError::Io(source) => SpecError::Io {
            path: label.clone(),
            source,
        },
        other => SpecError::Invalid {
            errors: other.diagnostic(&label).into_iter().collect(),
            warnings: Vec::new(),
        },
    })
}

/// Writes `report` as pretty JSON to `path`, making its directory when it has none.
pub fn write_report(report: &Report, path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let text = serde_json::to_string_pretty(report).map_err(std::io::Error::from)?;
    std::fs::write(path, text + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_fifo_without_a_writer_reads_as_empty() {
        let dir = std::env::temp_dir().join(format!("aviary-fifo-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let fifo = dir.join("f.yaml");
        let _ = std::fs::remove_file(&fifo);
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            assert_eq!(read_text(&fifo).ok().as_deref(), Some(""));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

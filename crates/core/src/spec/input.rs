//! The checks on every file aviary is given as input (the reading itself is `aviary_kube::files`): spec files, `simulate` timelines,
//! `skaffold.yaml`, raw manifests, `--build-artifacts` and the output of `kustomize build`.
//!
//! - At most [`MAX_INPUT_BYTES`] are read, through `Read::take`, so `/dev/zero`, a device or a
//!   pipe that never ends cannot make aviary grow: a file over the cap is refused, naming it.
//! - A FIFO is opened without blocking, so a named pipe that nobody writes to reads as empty
//!   instead of hanging in `open`.
//! - The text must be UTF-8; a UTF-8 byte-order mark is dropped (editors on Windows write one),
//!   and UTF-16 is recognised by its mark and refused with a fix.

use std::io::Read;

use super::Diagnostic;

/// The largest input file aviary reads: 16 MiB. Canary specs and timelines are kilobytes; the
/// largest rendered manifests seen in practice (a service mesh's CRDs plus an application) are a
/// few MiB, and the API server refuses any single object over 1.5 MiB (etcd's request limit), so
/// 16 MiB is several times what any real input holds while keeping a hostile one cheap.
pub const MAX_INPUT_BYTES: u64 = 16 * 1024 * 1024;

/// `16 MiB`, for messages.
pub fn cap_text() -> String {
    format!("{} MiB", MAX_INPUT_BYTES / (1024 * 1024))
}

/// Why an input file could not be read as text.
#[derive(Debug)]
pub enum ReadError {
    /// The file could not be opened or read.
    Io(std::io::Error),
    /// The file holds more than [`MAX_INPUT_BYTES`].
    TooLarge,
    /// The bytes are not UTF-8: the line of the first bad byte, and whether a UTF-16 byte-order
    /// mark was found.
    NotUtf8 { line: usize, utf16: bool },
}

impl ReadError {
    /// The problem as a diagnostic about `file`; `None` for an I/O error, which the caller words
    /// with its own context.
    pub fn diagnostic(&self, file: &str) -> Option<Diagnostic> {
        match self {
            ReadError::Io(_) => None,
            ReadError::TooLarge => Some(
                Diagnostic::error(
                    file,
                    0,
                    "",
                    format!(
                        "the file is larger than {}, the most aviary reads from one input file",
                        cap_text()
                    ),
                )
                .with_help(
                    "pass the file that holds the spec, manifests or timeline itself (not a device \
                     or a stream); split manifests over several files if they really are this big",
                ),
            ),
            ReadError::NotUtf8 { line, utf16: true } => Some(
                Diagnostic::error(file, *line, "", "the file is UTF-16 text; aviary reads UTF-8")
                    .with_help("save it as UTF-8 (e.g. `iconv -f UTF-16 -t UTF-8`)"),
            ),
            ReadError::NotUtf8 { line, utf16: false } => Some(
                Diagnostic::error(file, *line, "", "the file is not UTF-8 text")
                    .with_help("save it as UTF-8; YAML files are text, not binary data"),
            ),
        }
    }
}

impl From<std::io::Error> for ReadError {
    fn from(e: std::io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// Reads a stream as [`read_text`] reads a file.
pub fn read_text_from(reader: impl Read) -> Result<String, ReadError> {
    let mut bytes = Vec::new();
    reader.take(MAX_INPUT_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(ReadError::TooLarge);
    }
    decode_utf8(bytes)
}

/// Turns bytes into text: a UTF-8 byte-order mark is dropped, anything else that is not UTF-8 is
/// refused with the line it starts on.
pub fn decode_utf8(mut bytes: Vec<u8>) -> Result<String, ReadError> {
    if bytes.starts_with(&[0xEF, 0xBB, 0xBF]) {
        bytes.drain(..3);
    }
    match String::from_utf8(bytes) {
        Ok(text) => Ok(text),
        Err(e) => {
            let bytes = e.as_bytes();
            let utf16 = bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]);
            let at = e.utf8_error().valid_up_to();
            let line = if utf16 {
                1
            } else {
                1 + bytes[..at].iter().filter(|b| **b == b'\n').count()
            };
            Err(ReadError::NotUtf8 { line, utf16 })
        }
    }
}

/// Drops a leading byte-order mark from text that is already a string.
pub fn strip_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bom_is_dropped_and_other_encodings_are_named() {
        let text = decode_utf8(b"\xEF\xBB\xBFapiVersion: v1\n".to_vec());
        assert_eq!(text.ok().as_deref(), Some("apiVersion: v1\n"));
        match decode_utf8(b"a: 1\nb: \xFF\n".to_vec()) {
            Err(ReadError::NotUtf8 { line, utf16 }) => assert_eq!((line, utf16), (2, false)),
            other => panic!("{other:?}"),
        }
        match decode_utf8(b"\xFF\xFEa\x00".to_vec()) {
            Err(ReadError::NotUtf8 { utf16, .. }) => assert!(utf16),
            other => panic!("{other:?}"),
        }
        assert_eq!(strip_bom("\u{feff}x"), "x");
    }

    #[test]
    fn an_endless_stream_is_cut_at_the_cap() {
        let endless = std::io::repeat(b'a');
        assert!(matches!(read_text_from(endless), Err(ReadError::TooLarge)));
        let exact = std::io::repeat(b'a').take(MAX_INPUT_BYTES);
        assert_eq!(read_text_from(exact).map(|t| t.len()).ok(), Some(16 << 20));
        let d = ReadError::TooLarge
            .diagnostic("big.yaml")
            .map(|d| d.to_string());
        assert!(d.is_some_and(|d| d.starts_with("big.yaml: the file is larger than 16 MiB")));
    }
}

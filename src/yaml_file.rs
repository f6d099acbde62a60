//! YAML files that users write (pipelines, manifests, vars files), read and checked before
//! serde_yaml sees them, so that a file it cannot take is refused with its name and the place
//! of the problem rather than with a bare I/O error.

use std::path::Path;

use crate::error::user_error;

/// Why a YAML file could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The file could not be read at all: the caller says what to do, since it knows which
    /// setting names the file.
    Io(std::io::Error),
    /// It was read and refused: a user error that names the file, the place and the fix.
    Refused(anyhow::Error),
}

impl ReadError {
    /// The error to return, an I/O error being turned into one by `io`.
    pub fn or_io(self, io: impl FnOnce(std::io::Error) -> anyhow::Error) -> anyhow::Error {
        match self {
            ReadError::Io(err) => io(err),
            ReadError::Refused(err) => err,
        }
    }
}

/// Reads `path`, shown in errors as `shown`, as UTF-8 text.
pub fn read(path: &Path, shown: &str) -> Result<String, ReadError> {
    let bytes = std::fs::read(path).map_err(ReadError::Io)?;
    String::from_utf8(bytes).map_err(|err| {
        let offset = err.utf8_error().valid_up_to();
        let bytes = err.as_bytes();
        // The text before the bad byte is valid, so it can be counted in lines and characters.
        let before = std::str::from_utf8(&bytes[..offset]).expect("valid up to the offset");
        let line = before.matches('\n').count() + 1;
        let column = before
            .rsplit('\n')
            .next()
            .unwrap_or_default()
            .chars()
            .count()
            + 1;
        ReadError::Refused(user_error(format!(
            "{shown}:{line}:{column}: not UTF-8 (byte {offset} is 0x{:02x}): YAML files are \
             UTF-8 text; save it as UTF-8",
            bytes[offset]
        )))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_byte_that_is_not_utf8_is_placed_by_line_column_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.yml");
        std::fs::write(&path, b"a: \xc3\xa9\nb: caf\xe9\n").unwrap();
        let err = read(&path, "p.yml")
            .unwrap_err()
            .or_io(|err| panic!("{err}"));
        assert_eq!(
            crate::error::exit_code(&err),
            std::process::ExitCode::from(crate::error::code::CONFIG)
        );
        let err = err.to_string();
        assert!(
            err.starts_with("p.yml:2:7: not UTF-8 (byte 12 is 0xe9)"),
            "{err}"
        );
        std::fs::write(&path, "a: é\n").unwrap();
        assert_eq!(read(&path, "p.yml").unwrap(), "a: é\n");
        assert!(matches!(
            read(&dir.path().join("none.yml"), "none.yml"),
            Err(ReadError::Io(_))
        ));
    }
}

//! YAML files that users write (pipelines, manifests, vars files), read and checked before
//! serde_yaml sees them, so that a file it cannot take is refused with its name and the place
//! of the problem rather than with a bare I/O error, and a file that it would take minutes over
//! is refused in a moment.
//!
//! Parsing YAML takes time quadratic in the depth of nesting: 100,000 levels of `[` in a 200 KB
//! file kept serde_yaml busy for a minute or more before it gave up at its recursion limit. No
//! pipeline, manifest or vars file needs more than a handful of levels, so a linear scan counts
//! them first and refuses a file nested deeper than [`MAX_DEPTH`], or bigger than [`MAX_BYTES`].

use std::io::Read;
use std::path::Path;

use anyhow::Result;

use crate::error::user_error;

/// The biggest YAML file cdflow reads: far above any real pipeline, manifest or vars file.
pub const MAX_BYTES: usize = 1 << 20;

/// The deepest nesting cdflow reads (block levels and flow collections together), well below
/// serde_yaml's own limit of 128, so that the error can say where and why.
pub const MAX_DEPTH: usize = 64;

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

/// Reads `path`, shown in errors as `shown`: UTF-8 text that [`check`] accepts.
pub fn read(path: &Path, shown: &str) -> Result<String, ReadError> {
    let mut bytes = Vec::new();
    // One byte more than the limit tells a file over it without reading all of it.
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_BYTES as u64 + 1).read_to_end(&mut bytes))
        .map_err(ReadError::Io)?;
    if bytes.len() > MAX_BYTES {
        return Err(ReadError::Refused(too_big(shown)));
    }
    let text = String::from_utf8(bytes).map_err(|err| {
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
    })?;
    check(shown, &text).map_err(ReadError::Refused)?;
    Ok(text)
}

/// Refuses YAML text, shown in errors as `shown`, that is bigger than [`MAX_BYTES`] or nested
/// deeper than [`MAX_DEPTH`]; the error names the line where the nesting goes too deep.
pub fn check(shown: &str, text: &str) -> Result<()> {
    if text.len() > MAX_BYTES {
        return Err(too_big(shown));
    }
    match too_deep_at(text) {
        Some(line) => Err(user_error(format!(
            "{shown}:{line}: nested more than {MAX_DEPTH} levels deep: cdflow refuses such YAML \
             before parsing it (parsers take very long over it); no pipeline, manifest or vars \
             file needs as many, so check that this is the file you meant"
        ))),
        None => Ok(()),
    }
}

fn too_big(shown: &str) -> anyhow::Error {
    user_error(format!(
        "{shown} is bigger than {} KiB, the most cdflow reads of a YAML file: check that this is \
         the file you meant",
        MAX_BYTES / 1024
    ))
}

/// The line on which the nesting first goes deeper than [`MAX_DEPTH`], counted in one pass
/// over the bytes (the indicators are ASCII, which never occurs inside a multi-byte
/// character): block levels by indentation (a compact `- - x` being one level per dash), flow
/// collections by their brackets, leaving out what is text: quoted scalars, comments, block
/// scalars (`|`, `>`) and brackets inside plain scalars. It is a count, not a parser: on YAML
/// that is not valid it may be off, which serde_yaml then reports.
fn too_deep_at(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut line = 1;
    let mut i = 0;
    // The columns of the open block levels, innermost last.
    let mut blocks: Vec<usize> = Vec::new();
    // Open flow collections (`[`, `{`).
    let mut flow = 0usize;
    // Inside a block scalar: the column its lines are indented beyond.
    let mut block_scalar: Option<usize> = None;
    // The last byte that was not a space if it may be an indicator (`.` for text), and whether
    // spaces came after it: together they tell whether a quote or a bracket starts a value or
    // is text inside a plain scalar.
    let mut previous = b'\n';
    let mut spaced = false;
    let mut line_start = true;
    while i < bytes.len() {
        if line_start && flow == 0 {
            line_start = false;
            let indent = bytes[i..].iter().take_while(|&&b| b == b' ').count();
            let rest = &bytes[i + indent..];
            let blank = matches!(rest.first(), None | Some(b'\n' | b'\r' | b'#'));
            if let Some(parent) = block_scalar {
                if blank || indent > parent {
                    i = skip_line(bytes, i);
                    continue;
                }
                block_scalar = None;
            }
            if blank {
                i = skip_line(bytes, i);
                continue;
            }
            // A level per block node that starts on this line: the line's own, and one more
            // for each compact `- ` after it.
            let mut column = indent;
            loop {
                while blocks.last().is_some_and(|&open| open >= column) {
                    blocks.pop();
                }
                blocks.push(column);
                if blocks.len() > MAX_DEPTH {
                    return Some(line);
                }
                let at = i + column;
                let dash = bytes.get(at) == Some(&b'-')
                    && matches!(bytes.get(at + 1), Some(b' ') | None | Some(b'\n' | b'\r'));
                if !dash {
                    break;
                }
                let spaces = bytes[at + 1..].iter().take_while(|&&b| b == b' ').count();
                if matches!(
                    bytes.get(at + 1 + spaces),
                    None | Some(b'\n' | b'\r' | b'#')
                ) {
                    break;
                }
                column += 1 + spaces;
            }
            i += indent;
            previous = b'\n';
            spaced = false;
            continue;
        }
        let byte = bytes[i];
        let value_starts = matches!(previous, b'\n' | b'[' | b'{' | b',')
            || (matches!(previous, b'-' | b':' | b'?') && spaced)
            || (flow > 0 && previous == b':');
        // What this byte leaves as `previous` when it is not a space: itself when it may be an
        // indicator, else text.
        let mut indicator = match byte {
            b'-' | b':' | b'?' => byte,
            b',' if flow > 0 => byte,
            _ => b'.',
        };
        match byte {
            b'\n' => {
                line += 1;
                line_start = true;
                previous = b'\n';
                spaced = false;
                i += 1;
                continue;
            }
            b' ' | b'\t' | b'\r' => {
                spaced = true;
                i += 1;
                continue;
            }
            b'#' if spaced || previous == b'\n' => {
                i = skip_line(bytes, i);
                continue;
            }
            b'\'' | b'"' if value_starts => {
                let (end, lines) = quoted_end(bytes, i);
                line += lines;
                i = end;
            }
            b'|' | b'>' if value_starts && flow == 0 => {
                block_scalar = Some(blocks.last().copied().unwrap_or(0));
                i = skip_line(bytes, i);
                continue;
            }
            b'[' | b'{' if value_starts || flow > 0 => {
                flow += 1;
                if blocks.len() + flow > MAX_DEPTH {
                    return Some(line);
                }
                indicator = byte;
                i += 1;
            }
            b']' | b'}' if flow > 0 => {
                flow -= 1;
                i += 1;
            }
            _ => i += 1,
        }
        previous = indicator;
        spaced = false;
    }
    None
}

/// Where the line holding `at` ends (its newline, or the end of the text).
fn skip_line(bytes: &[u8], at: usize) -> usize {
    bytes[at..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |n| at + n)
}

/// Where the quoted scalar that opens at `at` ends (just past its closing quote), and how many
/// newlines it holds. `''` inside single quotes and `\\x` inside double quotes are escapes.
fn quoted_end(bytes: &[u8], at: usize) -> (usize, usize) {
    let quote = bytes[at];
    let mut lines = 0;
    let mut i = at + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => lines += 1,
            b'\\' if quote == b'"' => {
                if bytes.get(i + 1) == Some(&b'\n') {
                    lines += 1;
                }
                i += 1;
            }
            b'\'' if quote == b'\'' && bytes.get(i + 1) == Some(&b'\'') => i += 1,
            b if b == quote => return (i + 1, lines),
            _ => {}
        }
        i += 1;
    }
    (bytes.len(), lines)
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

    #[test]
    fn nesting_deeper_than_the_limit_is_refused_at_its_line() {
        let n = 100_000;
        let flow = format!("a:\n  b: {}{}\n", "[".repeat(n), "]".repeat(n));
        assert_eq!(too_deep_at(&flow), Some(2));
        let maps = format!("x: 1\ny: 2\nz: {}1{}\n", "{a: ".repeat(n), "}".repeat(n));
        assert_eq!(too_deep_at(&maps), Some(3));
        let compact = format!("a:\n{}b\n", "- ".repeat(n));
        assert_eq!(too_deep_at(&compact), Some(2));
        let indented: String = (0..100)
            .map(|n| format!("{}a{n}:\n", " ".repeat(n)))
            .collect();
        assert_eq!(too_deep_at(&indented), Some(MAX_DEPTH + 1));
        // Flow collections across lines count together with the block levels around them (the
        // line that opens the first one being a block level too).
        let mut lines = String::from("a:\n  b:\n");
        for _ in 0..70 {
            lines.push_str("    [\n");
        }
        assert_eq!(too_deep_at(&lines), Some(MAX_DEPTH));

        let err = check("m.yml", &maps).unwrap_err();
        assert_eq!(
            crate::error::exit_code(&err),
            std::process::ExitCode::from(crate::error::code::CONFIG)
        );
        assert!(
            err.to_string()
                .starts_with("m.yml:3: nested more than 64 levels deep"),
            "{err}"
        );
        let big = "a: 1\n".repeat(MAX_BYTES / 5 + 1);
        let err = check("big.yml", &big).unwrap_err().to_string();
        assert!(err.starts_with("big.yml is bigger than 1024 KiB"), "{err}");
    }

    #[test]
    fn brackets_in_text_and_just_enough_levels_are_not_counted_against_a_file() {
        let at_the_limit = format!(
            "a: {}{}\n",
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        );
        assert_eq!(too_deep_at(&at_the_limit), None);
        assert_eq!(too_deep_at(&format!("a: [{at_the_limit}")), Some(1));
        let many = "[".repeat(200);
        let text = format!(
            "# {many}\n\
             applications:\n\
             - name: web # {many}\n\
             \x20 command: echo {many} it's\n\
             \x20 single: '{many} it''s'\n\
             \x20 double: \"{many} \\\" {many}\"\n\
             \x20 script: |\n\
             \x20   {many}\n\
             \x20     {many}\n\
             \n\
             \x20   'unclosed\n\
             \x20 folded: >-\n\
             \x20   {many}\n\
             \x20 routes:\n\
             \x20 - route: [a, {{b: [c]}}]\n\
             \x20 env: {{\"K\":[1]}}\n"
        );
        for (n, line) in text.lines().enumerate() {
            let upto: String = text.lines().take(n + 1).collect::<Vec<_>>().join("\n");
            assert_eq!(too_deep_at(&upto), None, "line {}: {line}", n + 1);
        }
        for builtin in crate::pipeline::BUILT_IN {
            assert_eq!(too_deep_at(builtin.1), None);
        }
    }
}

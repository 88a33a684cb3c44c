//! Names and messages as the tools print them. A segment name is whatever bytes some
//! process put after `shmq.` in /dev/shm, so anything printed that contains one is
//! escaped: a terminal never receives a control character, an escape sequence, or an
//! invisible or look-alike character from a name, and what is printed can be typed.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `text` with every character outside printable ASCII written as an escape: `\\`
/// for a backslash (so an escape is never ambiguous), `\xNN` for the other ASCII
/// control characters and DEL, `\u{NNNN}` for every character beyond ASCII.
///
/// `shown("ord\u{200b}ers\x1b[2J")` is `ord\u{200b}ers\x1b[2J`, as typed here.
pub fn shown(text: &str) -> Cow<'_, str> {
    if text
        .bytes()
        .all(|b| (b.is_ascii_graphic() && b != b'\\') || b == b' ')
    {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        let _ = match c {
            '\\' => escaped.write_str("\\\\"),
            ' '..='~' => escaped.write_char(c),
            c if c.is_ascii() => write!(escaped, "\\x{:02x}", u32::from(c)),
            c => write!(escaped, "\\u{{{:x}}}", u32::from(c)),
        };
    }
    Cow::Owned(escaped)
}

/// JSON text with every character beyond ASCII, and DEL, written as a `\uXXXX` escape
/// (UTF-16 code units, as JSON spells them): the same document, safe on a terminal.
/// serde_json escapes the ASCII control characters itself; outside its strings JSON
/// text is ASCII, so only the contents of strings change.
pub fn ascii_json(json: &str) -> String {
    let mut escaped = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() && c != '\x7f' {
            escaped.push(c);
            continue;
        }
        let mut units = [0u16; 2];
        for unit in c.encode_utf16(&mut units) {
            let _ = write!(escaped, "\\u{unit:04x}");
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_ascii_is_shown_as_is() {
        assert!(matches!(
            shown("cli-ls-42 orders.v2@host"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn controls_invisibles_and_backslashes_are_escaped() {
        assert_eq!(
            shown("a\x1b[31mb\tc\u{7f}d\u{9b}e\u{200b}f\u{202e}g\\h"),
            "a\\x1b[31mb\\x09c\\x7fd\\u{9b}e\\u{200b}f\\u{202e}g\\\\h"
        );
    }

    #[test]
    fn ascii_json_is_the_same_document_in_ascii() {
        let name = "a\x1b[31m\u{7f}\u{9b}\u{202e}é\u{1f600}";
        let json = ascii_json(&serde_json::json!({ "name": name }).to_string());
        assert!(json.is_ascii() && !json.contains('\x7f'), "{json}");
        assert!(json.contains("\\ud83d\\ude00"), "{json}");
        let back: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(back["name"], name);
    }
}

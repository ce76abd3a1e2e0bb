//! Minimal JSON output: the service writes a few fixed-shape objects, so it formats them
//! by hand and only needs to quote strings.

use std::fmt::Write;

/// Returns `value` as a JSON string literal, with its quotes and escapes.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                // `fmt::Write` for `String` never returns an error.
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_escapes_special_characters() {
        let cases = [
            ("plain", "v1", r#""v1""#),
            ("quote", r#"a"b"#, r#""a\"b""#),
            ("backslash", r"a\b", r#""a\\b""#),
            ("newline", "a\nb", r#""a\nb""#),
            ("control", "a\u{1}b", r#""a\u0001b""#),
            ("non-ascii", "é", r#""é""#),
        ];

        for (name, input, expected) in cases {
            assert_eq!(quote(input), expected, "case {name}");
        }
    }
}

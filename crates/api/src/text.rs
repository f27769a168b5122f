//! Bounds on the text Herald echoes. A user's value can be as long as the API allows (an annotation may hold
//! 256 KiB); quoted whole into an Event note, a condition or a log line it would be refused by the API server (an
//! Event's note is at most 1 KiB) or flood the log. Every quote of user input goes through [`excerpt`], and every
//! message Herald writes into an object is cut to what the API accepts.

use std::borrow::Cow;

/// How many characters of a user's value a message quotes.
pub const QUOTE_CHARS: usize = 64;

/// The most bytes of an Event's `note` the API server accepts (events.k8s.io/v1 validation).
pub const EVENT_NOTE_BYTES: usize = 1024;

/// The most bytes Herald writes into a condition's `message` (the API allows 32 KiB; a reader wants one screen).
pub const CONDITION_MESSAGE_BYTES: usize = 1024;

/// `value`, or its first `max_chars` characters followed by `…(N more bytes)` when it is longer. Control
/// characters are shown escaped, so a quoted value cannot forge log lines.
pub fn excerpt(value: &str, max_chars: usize) -> Cow<'_, str> {
    let cut = value.char_indices().nth(max_chars).map_or(value.len(), |(i, _)| i);
    let clean = !value[..cut].chars().any(char::is_control);
    if cut == value.len() && clean {
        return Cow::Borrowed(value);
    }
    let mut out: String = value[..cut].chars().flat_map(char::escape_debug_if_control).collect();
    if cut < value.len() {
        out.push_str(&format!("…({} more bytes)", value.len() - cut));
    }
    Cow::Owned(out)
}

/// [`excerpt`] with the default length, for quoting a user's value in a message.
pub fn quote(value: &str) -> Cow<'_, str> {
    excerpt(value, QUOTE_CHARS)
}

/// `message` cut to at most `max_bytes` bytes at a character boundary, ending in `…` when cut.
pub fn truncate_bytes(message: &str, max_bytes: usize) -> Cow<'_, str> {
    if message.len() <= max_bytes {
        return Cow::Borrowed(message);
    }
    const MARK: &str = "…";
    let mut end = max_bytes.saturating_sub(MARK.len());
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}{MARK}", &message[..end]))
}

trait EscapeIfControl {
    fn escape_debug_if_control(self) -> EscapedChar;
}

/// One character, escaped when it is a control character.
enum EscapedChar {
    Plain(Option<char>),
    Escaped(std::char::EscapeDebug),
}

impl Iterator for EscapedChar {
    type Item = char;

    fn next(&mut self) -> Option<char> {
        match self {
            EscapedChar::Plain(c) => c.take(),
            EscapedChar::Escaped(e) => e.next(),
        }
    }
}

impl EscapeIfControl for char {
    fn escape_debug_if_control(self) -> EscapedChar {
        if self.is_control() {
            EscapedChar::Escaped(self.escape_debug())
        } else {
            EscapedChar::Plain(Some(self))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_quoted_whole_and_borrowed() {
        assert!(matches!(quote("192.0.2.1"), Cow::Borrowed("192.0.2.1")));
    }

    #[test]
    fn long_values_are_cut_and_say_how_much_is_left_out() {
        let long = "x".repeat(100_000);
        let q = quote(&long);
        assert_eq!(q, format!("{}…(99936 more bytes)", "x".repeat(64)));
        // Multi-byte characters are never split.
        let q = excerpt("ééé", 2);
        assert_eq!(q, "éé…(2 more bytes)");
    }

    #[test]
    fn control_characters_cannot_forge_lines() {
        assert_eq!(quote("a\nlevel=ERROR"), "a\\nlevel=ERROR");
    }

    #[test]
    fn messages_fit_the_byte_limit_at_a_character_boundary() {
        let m = "é".repeat(1000);
        let t = truncate_bytes(&m, EVENT_NOTE_BYTES);
        assert!(t.len() <= EVENT_NOTE_BYTES, "{}", t.len());
        assert!(t.ends_with('…'));
        assert_eq!(truncate_bytes("short", 10), "short");
    }
}

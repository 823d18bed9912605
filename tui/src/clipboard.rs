//! Copy to the clipboard with OSC 52: the terminal (local, over SSH, through tmux with
//! `set-clipboard on`) puts the text on the system clipboard; no display server is needed.
//!
//! The app only records what to copy; the event loop writes the escape after drawing, so the
//! update path does no I/O.

use base64::Engine;

/// Terminals cap OSC 52 payloads (xterm: 100 000 bytes of base64 by default); longer text is not sent.
pub const MAX_BYTES: usize = 74_000;

/// The escape that sets the clipboard (`c`) to `text`, ended with BEL (understood more widely
/// than ST).
pub fn osc52(text: &str) -> String {
    format!("\x1b]52;c;{}\x07", base64::engine::general_purpose::STANDARD.encode(text.as_bytes()))
}

/// Writes the escape to the terminal.
pub fn write(out: &mut impl std::io::Write, text: &str) -> std::io::Result<()> {
    out.write_all(osc52(text).as_bytes())?;
    out.flush()
}

/// How the status line names what was copied (long values shortened).
pub fn describe(what: &str, text: &str) -> String {
    let shown: String = text.chars().take(40).collect();
    let more = if text.chars().count() > 40 { "…" } else { "" };
    format!("copied {what}: {shown}{more}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn osc52_carries_the_text_in_base64() {
        assert_eq!(osc52("hello"), "\x1b]52;c;aGVsbG8=\x07");
        let mut out = Vec::new();
        write(&mut out, "10.0.0.5").expect("write");
        assert_eq!(out, b"\x1b]52;c;MTAuMC4wLjU=\x07");
    }

    #[test]
    fn long_values_are_shortened_in_the_status_line() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(describe("id", id), "copied id: 0123456789abcdef0123456789abcdef01234567…");
        assert_eq!(describe("address", "10.0.0.5"), "copied address: 10.0.0.5");
    }
}

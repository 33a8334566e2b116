//! Finding message boundaries in a byte stream: the crab (`🦀`) or newline framing of
//! `PROTOCOL.md`. Pure, no I/O: the host's connections, the client and the load generator
//! all split with it, so they agree on every edge case.
//!
//! Boundaries are found outside JSON strings only, so a payload may hold `🦀` or an escaped
//! newline. A raw newline cannot occur inside a valid JSON string, so once a connection is
//! known to use newline framing every newline ends a message, which also resynchronises after
//! a malformed message with an unbalanced quote.

use crate::protocol::{Framing, CRAB};
use memchr::memchr2;

/// A message found by [`Splitter::next_frame`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The message is `buf[..body_end]` (the terminator excluded).
    pub body_end: usize,
    /// The next message starts at `buf[consumed..]`.
    pub consumed: usize,
}

/// Incremental splitter for one stream.
///
/// Feed it the bytes of the stream from the start of the current message on; it remembers
/// how far it has scanned, so bytes arriving one at a time are scanned once in all.
#[derive(Clone, Debug, Default)]
pub struct Splitter {
    framing: Option<Framing>,
    scanned: usize,
    in_string: bool,
    escaped: bool,
    /// Nesting of `{`/`[` outside strings, tracked only until the framing is known: a newline
    /// ends the first message only where its JSON value is closed, so a pretty-printed first
    /// message in crab framing is not cut at its first line.
    depth: u32,
}

impl Splitter {
    /// A splitter that learns the framing from the stream's first message.
    pub fn new() -> Self {
        Splitter::default()
    }

    /// A splitter for a stream whose framing is known.
    pub fn with_framing(framing: Framing) -> Self {
        Splitter {
            framing: Some(framing),
            ..Splitter::default()
        }
    }

    /// The framing of the stream, once its first message has ended.
    pub fn framing(&self) -> Option<Framing> {
        self.framing
    }

    /// How many bytes of the current message have been scanned without finding its end.
    pub fn pending_len(&self) -> usize {
        self.scanned
    }

    /// Finds the end of the message that starts at `buf[0]`.
    ///
    /// Returns `None` when `buf` holds no complete message yet; call again with the same
    /// message start and more bytes. After `Some`, the next call must pass the bytes from
    /// `frame.consumed` on.
    pub fn next_frame(&mut self, buf: &[u8]) -> Option<Frame> {
        let frame = match self.framing {
            Some(Framing::Newline) => self.scan_newline(buf),
            Some(Framing::Crab) => self.scan_json(buf),
            None => self.scan_first(buf),
        };
        if frame.is_some() {
            self.scanned = 0;
            self.in_string = false;
            self.escaped = false;
            self.depth = 0;
        }
        frame
    }

    fn scan_newline(&mut self, buf: &[u8]) -> Option<Frame> {
        match memchr::memchr(b'\n', &buf[self.scanned..]) {
            Some(offset) => {
                let end = self.scanned + offset;
                Some(Frame {
                    body_end: end,
                    consumed: end + 1,
                })
            }
            None => {
                self.scanned = buf.len();
                None
            }
        }
    }

    fn scan_json(&mut self, buf: &[u8]) -> Option<Frame> {
        if self.scanned == 0 && !self.in_string && !self.escaped {
            if let Some(frame) = plain_crab_frame(buf) {
                return Some(frame);
            }
        }
        let mut i = self.scanned;
        while i < buf.len() {
            if self.escaped {
                self.escaped = false;
                i += 1;
            } else if self.in_string {
                match memchr2(b'"', b'\\', &buf[i..]) {
                    None => i = buf.len(),
                    Some(offset) => {
                        let j = i + offset;
                        if buf[j] == b'\\' {
                            self.escaped = true;
                        } else {
                            self.in_string = false;
                        }
                        i = j + 1;
                    }
                }
            } else {
                let Some(offset) = memchr2(b'"', CRAB[0], &buf[i..]) else {
                    i = buf.len();
                    break;
                };
                let j = i + offset;
                match buf[j] {
                    b'"' => {
                        self.in_string = true;
                        i = j + 1;
                    }
                    _ => match crab_at(buf, j) {
                        CrabAt::Yes => return Some(crab_frame(j)),
                        CrabAt::Maybe => {
                            self.scanned = j;
                            return None;
                        }
                        CrabAt::No => i = j + 1,
                    },
                }
            }
        }
        self.scanned = i;
        None
    }

    /// The first message, framing unknown: a crab outside strings or a newline after a
    /// closed JSON value ends it, and decides the framing. Byte by byte, once per connection.
    fn scan_first(&mut self, buf: &[u8]) -> Option<Frame> {
        let mut i = self.scanned;
        while i < buf.len() {
            let byte = buf[i];
            if self.escaped {
                self.escaped = false;
            } else if self.in_string {
                match byte {
                    b'\\' => self.escaped = true,
                    b'"' => self.in_string = false,
                    _ => {}
                }
            } else {
                match byte {
                    b'"' => self.in_string = true,
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' => self.depth = self.depth.saturating_sub(1),
                    b'\n' if self.depth == 0 && !buf[..i].trim_ascii().is_empty() => {
                        self.framing = Some(Framing::Newline);
                        return Some(Frame {
                            body_end: i,
                            consumed: i + 1,
                        });
                    }
                    _ if byte == CRAB[0] => match crab_at(buf, i) {
                        CrabAt::Yes => {
                            self.framing = Some(Framing::Crab);
                            return Some(crab_frame(i));
                        }
                        CrabAt::Maybe => break,
                        CrabAt::No => {}
                    },
                    _ => {}
                }
            }
            i += 1;
        }
        self.scanned = i;
        None
    }
}

/// The end of a message whose first crab byte is preceded by no backslash, found in two
/// vectorised passes rather than a [`memchr2`] per string. Without escapes, the quotes before
/// that byte pair up exactly when it stands outside strings. `None` when the message is not
/// of that kind or not complete: the full scan decides then.
fn plain_crab_frame(buf: &[u8]) -> Option<Frame> {
    let at = memchr::memchr(CRAB[0], buf)?;
    let before = &buf[..at];
    if memchr::memchr(b'\\', before).is_some() {
        return None;
    }
    let quotes = before.iter().filter(|&&byte| byte == b'"').count();
    (quotes % 2 == 0 && matches!(crab_at(buf, at), CrabAt::Yes)).then(|| crab_frame(at))
}

enum CrabAt {
    Yes,
    No,
    /// The buffer ends with the first bytes of a crab.
    Maybe,
}

fn crab_at(buf: &[u8], at: usize) -> CrabAt {
    let rest = &buf[at..];
    if rest.starts_with(CRAB) {
        CrabAt::Yes
    } else if rest.len() < CRAB.len() && CRAB.starts_with(rest) {
        CrabAt::Maybe
    } else {
        CrabAt::No
    }
}

fn crab_frame(at: usize) -> Frame {
    Frame {
        body_end: at,
        consumed: at + CRAB.len(),
    }
}

/// Copies `json` into `out`, writing every `🦀` as the JSON escape `\ud83e\udd80`.
///
/// Correct for any serialised JSON: its structure is ASCII, so the crab's bytes can only
/// stand inside a string, where the escape means the same character.
pub fn push_escaping_crabs(out: &mut Vec<u8>, json: &[u8]) {
    let mut rest = json;
    while let Some(at) = memchr::memmem::find(rest, CRAB) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(crate::protocol::CRAB_ESCAPED);
        rest = &rest[at + CRAB.len()..];
    }
    out.extend_from_slice(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits `stream`, feeding it `chunk` bytes at a time, as a connection would.
    fn split(stream: &[u8], chunk: usize) -> (Vec<String>, Option<Framing>) {
        let mut splitter = Splitter::new();
        let mut pending = Vec::new();
        let mut out = Vec::new();
        for piece in stream.chunks(chunk) {
            pending.extend_from_slice(piece);
            while let Some(frame) = splitter.next_frame(&pending) {
                out.push(String::from_utf8_lossy(&pending[..frame.body_end]).into_owned());
                pending.drain(..frame.consumed);
            }
        }
        (out, splitter.framing())
    }

    #[test]
    fn crab_inside_strings_is_not_a_boundary() {
        let stream = "{\"a\":\"🦀\\\"🦀\"}🦀{\"b\":1}🦀".as_bytes();
        for chunk in [1, 2, 3, 5, 1000] {
            let (frames, framing) = split(stream, chunk);
            assert_eq!(
                frames,
                vec!["{\"a\":\"🦀\\\"🦀\"}", "{\"b\":1}"],
                "chunk {chunk}"
            );
            assert_eq!(framing, Some(Framing::Crab));
        }
    }

    #[test]
    fn the_first_crab_may_stand_in_a_string_of_a_message_without_escapes() {
        let stream = "{\"type\":\"a\",\"payload\":\"🦀 x\"}🦀{\"b\":\"🦀\"}🦀".as_bytes();
        for chunk in [1, 7, 1000] {
            let (frames, _) = split(stream, chunk);
            assert_eq!(
                frames,
                vec!["{\"type\":\"a\",\"payload\":\"🦀 x\"}", "{\"b\":\"🦀\"}"],
                "chunk {chunk}"
            );
        }
        let mut splitter = Splitter::with_framing(Framing::Crab);
        let frame = splitter.next_frame("{\"x\":1}🦀{".as_bytes()).unwrap();
        assert_eq!((frame.body_end, frame.consumed), (7, 11));
    }

    #[test]
    fn newline_framing_is_learned_from_the_first_message() {
        let stream = b"{\"a\":\"x\\ny\"}\n{\"b\":\"\xF0\x9F\xA6\x80\"}\n";
        for chunk in [1, 4, 1000] {
            let (frames, framing) = split(stream, chunk);
            assert_eq!(frames.len(), 2, "chunk {chunk}");
            assert_eq!(framing, Some(Framing::Newline));
        }
    }

    #[test]
    fn newlines_inside_a_crab_message_are_whitespace() {
        let stream = "{\n\"a\": 1\n}🦀\n{\"b\":\n2}🦀".as_bytes();
        for chunk in [1, 1000] {
            let (frames, framing) = split(stream, chunk);
            assert_eq!(
                frames,
                vec!["{\n\"a\": 1\n}", "\n{\"b\":\n2}"],
                "chunk {chunk}"
            );
            assert_eq!(framing, Some(Framing::Crab));
        }
    }

    #[test]
    fn a_lone_f0_byte_outside_strings_is_not_a_crab() {
        let (frames, _) = split(b"\xF0abc\xF0\x9F\xA6\x80", 1);
        assert_eq!(frames.len(), 1);
        assert!(frames[0].ends_with("abc"));
    }

    #[test]
    fn escaping_replaces_every_crab() {
        let mut out = Vec::new();
        push_escaping_crabs(&mut out, "{\"a\":\"🦀x🦀\"}".as_bytes());
        assert_eq!(out, br#"{"a":"\ud83e\udd80x\ud83e\udd80"}"#);
    }
}

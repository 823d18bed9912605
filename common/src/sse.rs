//! An incremental parser for server-sent events (the `text/event-stream` format of the HTML
//! standard), shared by the dashboard and the tests: feed it a body's chunks as they arrive and
//! take out complete events. One pass over the bytes: each byte is scanned once however the
//! stream is chunked.

/// One dispatched event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// `message` when the stream names none.
    pub event: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
    /// The last `id:` seen so far on the stream (what `Last-Event-ID` resumes from).
    pub id: Option<String>,
}

#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of an incomplete line.
    buf: Vec<u8>,
    /// How much of `buf` is known to hold no line end.
    scanned: usize,
    /// The previous chunk ended in `\r`: a `\n` starting the next one belongs to it.
    after_cr: bool,
    /// Whether the stream's first bytes were seen (a leading byte-order mark is dropped).
    started: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
    last_id: Option<String>,
    retry_ms: Option<u64>,
    /// Whether anything (even a comment) arrived since the last call to `take_activity`.
    activity: bool,
}

impl SseParser {
    /// A parser for a stream resumed from `last_id` (events carry it until an `id:` changes it).
    pub fn new(last_id: Option<String>) -> SseParser {
        SseParser { last_id, ..SseParser::default() }
    }

    pub fn last_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// The reconnection delay the server asked for with `retry:`, in milliseconds.
    pub fn retry_ms(&self) -> Option<u64> {
        self.retry_ms
    }

    /// Adds a chunk and returns the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        self.feed_with(chunk, |e| out.push(e));
        out
    }

    /// Adds a chunk and hands each event it completed to `on_event`, in order.
    pub fn feed_with(&mut self, mut chunk: &[u8], mut on_event: impl FnMut(SseEvent)) {
        self.activity |= !chunk.is_empty();
        if self.after_cr && !chunk.is_empty() {
            self.after_cr = false;
            if chunk[0] == b'\n' {
                chunk = &chunk[1..];
            }
        }
        self.buf.extend_from_slice(chunk);
        if !self.started && self.buf.len() >= 3 {
            self.started = true;
            if self.buf.starts_with(b"\xEF\xBB\xBF") {
                self.buf.drain(..3);
                self.scanned = 0;
            }
        }
        if !self.started {
            // Fewer than three bytes so far: they may be the start of a byte-order mark.
            if b"\xEF\xBB\xBF".starts_with(&self.buf) {
                return;
            }
            self.started = true;
        }
        let mut start = 0;
        let mut from = self.scanned;
        while let Some(i) = self.buf[from..].iter().position(|&b| b == b'\n' || b == b'\r') {
            let end = from + i;
            let mut next = end + 1;
            if self.buf[end] == b'\r' {
                // A \r\n pair ends one line, not two; the \n may come in the next chunk.
                match self.buf.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            let line = String::from_utf8_lossy(&self.buf[start..end]).into_owned();
            if let Some(ev) = self.line(&line) {
                on_event(ev);
            }
            start = next;
            from = next;
        }
        self.buf.drain(..start);
        self.scanned = self.buf.len();
    }

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let event = self.event.take();
            if !std::mem::take(&mut self.has_data) {
                return None;
            }
            let data = std::mem::take(&mut self.data);
            return Some(SseEvent { event: event.unwrap_or_else(|| "message".into()), data, id: self.last_id.clone() });
        }
        if line.starts_with(':') {
            return None; // a comment: keepalive
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.last_id = Some(value.to_string()),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry_ms = value.parse().ok();
            }
            _ => {}
        }
        None
    }

    /// Whether anything (even a comment) arrived since the last call.
    pub fn take_activity(&mut self) -> bool {
        std::mem::take(&mut self.activity)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const STREAM: &[u8] = b": keepalive\n\nevent: ready\ndata: {\"cursor\": \"c0\"}\n\nevent: server\r\nid: 7\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\nretry: 1500\revent: reconnect\rdata\r\r";

    fn all_at_once(bytes: &[u8]) -> (Vec<SseEvent>, Option<String>, Option<u64>) {
        let mut p = SseParser::new(None);
        let evs = p.feed(bytes);
        (evs, p.last_id, p.retry_ms)
    }

    #[test]
    fn parses_events_split_anywhere() {
        // Every split point must give the same events.
        for cut in 0..STREAM.len() {
            let mut p = SseParser::new(None);
            let mut evs = p.feed(&STREAM[..cut]);
            evs.extend(p.feed(&STREAM[cut..]));
            assert_eq!(evs.len(), 3, "cut at {cut}: {evs:?}");
            assert_eq!(evs[0], SseEvent { event: "ready".into(), data: "{\"cursor\": \"c0\"}".into(), id: None });
            assert_eq!(evs[1], SseEvent { event: "server".into(), data: "{\"a\":\n1}".into(), id: Some("7".into()) });
            assert_eq!(evs[2], SseEvent { event: "reconnect".into(), data: String::new(), id: Some("7".into()) });
            assert_eq!(p.last_id(), Some("7"));
            assert_eq!(p.retry_ms(), Some(1500));
        }
    }

    /// An event ended by a lone `\r` is dispatched at once, not when the next byte arrives.
    #[test]
    fn a_carriage_return_ends_a_line_without_waiting() {
        let mut p = SseParser::new(None);
        assert_eq!(p.feed(b"data: x\r\r").len(), 1);
        // The \n after a chunk's final \r completes that line ending, not a blank line.
        assert!(p.feed(b"\ndata: y\r").is_empty());
        assert_eq!(p.feed(b"\n\n")[0].data, "y");
    }

    #[test]
    fn a_byte_order_mark_is_dropped_even_split() {
        let mut p = SseParser::new(None);
        assert!(p.feed(b"\xEF").is_empty());
        assert!(p.feed(b"\xBB").is_empty());
        let evs = p.feed(b"\xBFevent: a\ndata: 1\n\n");
        assert_eq!(evs, vec![SseEvent { event: "a".into(), data: "1".into(), id: None }]);
    }

    #[test]
    fn comments_count_as_activity_and_ids_persist() {
        let mut p = SseParser::new(Some("5".into()));
        assert!(p.feed(b": keepalive\n").is_empty());
        assert!(p.take_activity());
        assert!(!p.take_activity());
        let evs = p.feed(b"data: x\n\n");
        assert_eq!(evs[0].event, "message");
        assert_eq!(evs[0].id.as_deref(), Some("5"));
        // An event type without data dispatches nothing and does not leak into the next event.
        assert!(p.feed(b"event: lonely\n\ndata: y\n\n")[0].event == "message");
    }

    /// Bytes that look like a stream: fields, values, every kind of line end, a BOM, junk.
    fn streamish() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"data".to_vec()),
            Just(b"event".to_vec()),
            Just(b"id".to_vec()),
            Just(b"retry".to_vec()),
            Just(b": ".to_vec()),
            Just(b":".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\n\n".to_vec()),
            Just(b"\xEF\xBB\xBF".to_vec()),
            Just(b"\0".to_vec()),
            "[a-z0-9 {}\"]{0,8}".prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..4),
        ];
        proptest::collection::vec(piece, 0..40).prop_map(|v| v.concat())
    }

    proptest! {
        /// However the stream is cut into chunks, the same events come out as from one chunk.
        #[test]
        fn chunking_never_changes_the_events(bytes in streamish(), cuts in proptest::collection::vec(any::<usize>(), 0..12)) {
            let whole = all_at_once(&bytes);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut p = SseParser::new(None);
            let mut evs = Vec::new();
            let mut at = 0;
            for c in cuts.into_iter().chain([bytes.len()]) {
                evs.extend(p.feed(&bytes[at..c]));
                at = c;
            }
            prop_assert_eq!(whole, (evs, p.last_id, p.retry_ms));
        }

        /// Any bytes at all, in any chunks: no panic.
        #[test]
        fn arbitrary_bytes_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16)) {
            let mut p = SseParser::new(None);
            for c in &chunks {
                let _ = p.feed(c);
            }
        }
    }
}

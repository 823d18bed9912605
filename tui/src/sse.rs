//! A small incremental parser for server-sent events (the `text/event-stream` format): feed it
//! the body's chunks as they arrive, take out complete events.

#[derive(Clone, Debug, Default, PartialEq)]
pub struct SseEvent {
    /// `message` when the stream names none.
    pub event: String,
    pub data: String,
    /// The last `id:` seen so far on the stream (what `Last-Event-ID` resumes from).
    pub id: Option<String>,
}

#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    event: Option<String>,
    data: Vec<String>,
    last_id: Option<String>,
    /// Whether anything (even a comment) arrived since the last call to `take_activity`.
    activity: bool,
}

impl SseParser {
    pub fn new(last_id: Option<String>) -> SseParser {
        SseParser { last_id, ..SseParser::default() }
    }

    pub fn last_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// Adds a chunk and returns the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.activity |= !chunk.is_empty();
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n' || b == b'\r') {
            let line: Vec<u8> = self.buf.drain(..nl).collect();
            let sep = self.buf.remove(0);
            // A \r\n pair ends one line, not two.
            if sep == b'\r' {
                if self.buf.is_empty() {
                    // The \n may be in the next chunk: put the line back and wait.
                    self.buf.splice(0..0, line.iter().copied().chain([b'\r']));
                    break;
                }
                if self.buf[0] == b'\n' {
                    self.buf.remove(0);
                }
            }
            if let Some(ev) = self.line(&String::from_utf8_lossy(&line)) {
                out.push(ev);
            }
        }
        out
    }

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let event = self.event.take();
            if self.data.is_empty() {
                return None;
            }
            let data = std::mem::take(&mut self.data).join("\n");
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
            "data" => self.data.push(value.to_string()),
            "id" if !value.contains('\0') => self.last_id = Some(value.to_string()),
            _ => {}
        }
        None
    }

    pub fn take_activity(&mut self) -> bool {
        std::mem::take(&mut self.activity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_split_anywhere() {
        let stream = b": keepalive\n\nevent: ready\ndata: {\"cursor\": \"c0\"}\n\nevent: server\r\nid: 7\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\n";
        // Every split point must give the same events.
        for cut in 0..stream.len() {
            let mut p = SseParser::new(None);
            let mut evs = p.feed(&stream[..cut]);
            evs.extend(p.feed(&stream[cut..]));
            assert_eq!(evs.len(), 2, "cut at {cut}: {evs:?}");
            assert_eq!(evs[0], SseEvent { event: "ready".into(), data: "{\"cursor\": \"c0\"}".into(), id: None });
            assert_eq!(evs[1], SseEvent { event: "server".into(), data: "{\"a\":\n1}".into(), id: Some("7".into()) });
            assert_eq!(p.last_id(), Some("7"));
        }
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
    }
}

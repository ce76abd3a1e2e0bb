//! Message framing for plain-TCP mirroring: where one request (or response) ends in a
//! byte stream.

use bytes::{Buf, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// How requests and responses are delimited on a plain-TCP connection. Responses are
/// framed the same way as requests, and each request gets exactly one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Framing {
    /// Each message ends with `\n` (so `\r\n` works too), as in line protocols.
    Line,
    /// Each message starts with its payload length as a 4-byte big-endian integer,
    /// which does not count itself.
    LengthPrefixed,
}

impl Framing {
    /// Name as written in configuration files.
    pub fn as_str(self) -> &'static str {
        match self {
            Framing::Line => "line",
            Framing::LengthPrefixed => "length-prefixed",
        }
    }
}

/// One message found by a [`Splitter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A complete message with its delimiter or length prefix, as it was on the wire.
    Whole(Bytes),
    /// A message larger than the limit, which was passed over without being kept. It is
    /// reported once, when it ends.
    Oversized,
}

/// Splits a byte stream into frames as it arrives, keeping at most `max_frame_bytes` of
/// an unfinished frame in memory.
#[derive(Debug)]
pub(crate) struct Splitter {
    framing: Framing,
    max_frame_bytes: usize,
    buffer: BytesMut,
    /// Bytes of `buffer` already searched for a newline.
    scanned: usize,
    /// Inside a line longer than the limit: dropping bytes until its newline.
    discarding_line: bool,
    /// Payload bytes of an oversized length-prefixed frame still to pass over.
    skip: usize,
}

impl Splitter {
    pub fn new(framing: Framing, max_frame_bytes: usize) -> Splitter {
        Splitter {
            framing,
            max_frame_bytes: max_frame_bytes.max(1),
            buffer: BytesMut::new(),
            scanned: 0,
            discarding_line: false,
            skip: 0,
        }
    }

    /// Adds `data` and calls `emit` for each frame it completes, in order.
    pub fn push(&mut self, data: &[u8], mut emit: impl FnMut(Frame)) {
        match self.framing {
            Framing::Line => self.push_lines(data, &mut emit),
            Framing::LengthPrefixed => self.push_prefixed(data, &mut emit),
        }
    }

    fn push_lines(&mut self, mut data: &[u8], emit: &mut impl FnMut(Frame)) {
        while !data.is_empty() {
            if self.discarding_line {
                match data.iter().position(|&b| b == b'\n') {
                    Some(end) => {
                        data = &data[end + 1..];
                        self.discarding_line = false;
                        emit(Frame::Oversized);
                    }
                    None => return,
                }
                continue;
            }
            // Take what fits the limit, so an endless line never grows the buffer.
            let room = self.max_frame_bytes + 1 - self.buffer.len();
            let take = data.len().min(room);
            self.buffer.extend_from_slice(&data[..take]);
            data = &data[take..];
            while let Some(offset) = self.buffer[self.scanned..].iter().position(|&b| b == b'\n') {
                let end = self.scanned + offset + 1;
                let line = self.buffer.split_to(end).freeze();
                self.scanned = 0;
                if line.len() > self.max_frame_bytes {
                    emit(Frame::Oversized);
                } else {
                    emit(Frame::Whole(line));
                }
            }
            self.scanned = self.buffer.len();
            if self.buffer.len() > self.max_frame_bytes {
                self.buffer.clear();
                self.scanned = 0;
                self.discarding_line = true;
            }
        }
    }

    fn push_prefixed(&mut self, mut data: &[u8], emit: &mut impl FnMut(Frame)) {
        loop {
            if self.skip > 0 {
                let take = self.skip.min(data.len());
                self.skip -= take;
                data = &data[take..];
                if self.skip > 0 {
                    return;
                }
                emit(Frame::Oversized);
            }
            // Fill the buffer with the header, then with the rest of the frame.
            let expected_len = if self.buffer.len() < 4 {
                4
            } else {
                4 + self.payload_len()
            };
            let take = (expected_len - self.buffer.len()).min(data.len());
            self.buffer.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buffer.len() < expected_len {
                return;
            }
            if expected_len == 4 {
                let length = self.payload_len();
                if length > self.max_frame_bytes {
                    self.buffer.clear();
                    self.skip = length;
                    continue;
                }
                if length > 0 {
                    continue;
                }
            }
            emit(Frame::Whole(self.buffer.split().freeze()));
            if data.is_empty() {
                return;
            }
        }
    }

    fn payload_len(&self) -> usize {
        let mut header = &self.buffer[..4];
        header.get_u32() as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(framing: Framing, max: usize, chunks: &[&[u8]]) -> Vec<Frame> {
        let mut splitter = Splitter::new(framing, max);
        let mut frames = Vec::new();
        for chunk in chunks {
            splitter.push(chunk, |frame| frames.push(frame));
        }
        frames
    }

    fn whole(bytes: &[u8]) -> Frame {
        Frame::Whole(Bytes::copy_from_slice(bytes))
    }

    #[test]
    fn lines_split_across_chunks() {
        let frames = split(
            Framing::Line,
            64,
            &[b"GET a\r\nSET b ", b"1\n", b"", b"GET", b" c\nrest"],
        );
        assert_eq!(
            frames,
            [whole(b"GET a\r\n"), whole(b"SET b 1\n"), whole(b"GET c\n")]
        );
    }

    #[test]
    fn long_line_is_passed_over_and_reported_once() {
        let long = vec![b'x'; 100];
        let frames = split(Framing::Line, 10, &[b"ok\n", &long, &long, b"\nnext\n"]);
        assert_eq!(frames, [whole(b"ok\n"), Frame::Oversized, whole(b"next\n")]);
        // A line of exactly the limit, newline included, is kept.
        let frames = split(Framing::Line, 4, &[b"abc\nabcd\nz\n"]);
        assert_eq!(frames, [whole(b"abc\n"), Frame::Oversized, whole(b"z\n")]);
    }

    #[test]
    fn length_prefixed_frames_byte_by_byte() {
        let mut stream = Vec::new();
        for payload in [&b"hello"[..], b"", b"kv"] {
            stream.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            stream.extend_from_slice(payload);
        }
        let chunks: Vec<&[u8]> = stream.chunks(1).collect();
        let frames = split(Framing::LengthPrefixed, 16, &chunks);
        assert_eq!(
            frames,
            [
                whole(b"\0\0\0\x05hello"),
                whole(b"\0\0\0\0"),
                whole(b"\0\0\0\x02kv")
            ]
        );
    }

    #[test]
    fn oversized_prefixed_frame_is_skipped() {
        let mut stream = Vec::new();
        stream.extend_from_slice(&20u32.to_be_bytes());
        stream.extend_from_slice(&[7; 20]);
        stream.extend_from_slice(&1u32.to_be_bytes());
        stream.push(b'k');
        let frames = split(Framing::LengthPrefixed, 8, &[&stream[..10], &stream[10..]]);
        assert_eq!(frames, [Frame::Oversized, whole(b"\0\0\0\x01k")]);
    }

    #[test]
    fn framing_names_parse() {
        #[derive(Deserialize)]
        struct Wrapper {
            framing: Framing,
        }
        let parsed: Wrapper = toml::from_str("framing = \"length-prefixed\"").expect("parses");
        assert_eq!(parsed.framing, Framing::LengthPrefixed);
        assert_eq!(parsed.framing.as_str(), "length-prefixed");
    }
}

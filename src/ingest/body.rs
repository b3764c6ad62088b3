//! HTTP message bodies read from a blocking socket: Content-Length, chunked, or until the
//! connection closes. Used by the HTTP pull client and by push ingest. The chunked decoder
//! sees outside bytes, so every line is bounded and every size checked.

use std::io::{self, Read};

/// How an HTTP message body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

/// Longest chunk-size line (with extensions) accepted.
const MAX_LINE: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunked {
    Size,
    Data(u64),
    DataEnd,
    Trailer,
    Done,
}

#[derive(Debug)]
enum Mode {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
}

/// A `Read` over a body, given the bytes already read past the head.
pub struct BodyReader<R> {
    inner: R,
    buf: Vec<u8>,
    pos: usize,
    mode: Mode,
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl<R: Read> BodyReader<R> {
    pub fn new(inner: R, leftover: Vec<u8>, framing: BodyFraming, until_close: bool) -> Self {
        let mode = match framing {
            BodyFraming::Chunked => Mode::Chunked(Chunked::Size),
            BodyFraming::Length(n) => Mode::Length(n),
            BodyFraming::None if until_close => Mode::UntilClose,
            BodyFraming::None => Mode::Length(0),
        };
        BodyReader {
            inner,
            buf: leftover,
            pos: 0,
            mode,
        }
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Makes sure at least one unread byte is buffered; false at end of input.
    fn fill(&mut self) -> io::Result<bool> {
        if self.pos < self.buf.len() {
            return Ok(true);
        }
        self.buf.clear();
        self.pos = 0;
        self.buf.resize(64 * 1024, 0);
        let n = loop {
            match self.inner.read(&mut self.buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.buf.clear();
                    return Err(e);
                }
            }
        };
        self.buf.truncate(n);
        Ok(n > 0)
    }

    /// Reads one CRLF-terminated line (bounded), without the line end.
    fn line(&mut self) -> io::Result<Vec<u8>> {
        let mut line = Vec::new();
        loop {
            if !self.fill()? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "body ended inside a chunk header",
                ));
            }
            let avail = &self.buf[self.pos..];
            if let Some(i) = avail.iter().position(|&b| b == b'\n') {
                line.extend_from_slice(&avail[..i]);
                self.pos += i + 1;
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
            line.extend_from_slice(avail);
            self.pos = self.buf.len();
            if line.len() > MAX_LINE {
                return Err(bad("chunk header line too long"));
            }
        }
    }

    fn copy_out(&mut self, out: &mut [u8], limit: u64) -> io::Result<usize> {
        if !self.fill()? {
            return Ok(0);
        }
        let avail = &self.buf[self.pos..];
        let n = avail
            .len()
            .min(out.len())
            .min(limit.min(usize::MAX as u64) as usize);
        out[..n].copy_from_slice(&avail[..n]);
        self.pos += n;
        Ok(n)
    }
}

fn parse_chunk_size(line: &[u8]) -> io::Result<u64> {
    let text = std::str::from_utf8(line).map_err(|_| bad("chunk size is not text"))?;
    let hex = text.split(';').next().unwrap_or("").trim();
    if hex.is_empty() || hex.len() > 15 {
        return Err(bad(format!("bad chunk size {hex:?}")));
    }
    u64::from_str_radix(hex, 16).map_err(|_| bad(format!("bad chunk size {hex:?}")))
}

impl<R: Read> Read for BodyReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            match self.mode {
                Mode::UntilClose => return self.copy_out(out, u64::MAX),
                Mode::Length(0) => return Ok(0),
                Mode::Length(left) => {
                    let n = self.copy_out(out, left)?;
                    if n == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("body ended {left} bytes early"),
                        ));
                    }
                    self.mode = Mode::Length(left - n as u64);
                    return Ok(n);
                }
                Mode::Chunked(state) => match state {
                    Chunked::Size => {
                        let line = self.line()?;
                        let size = parse_chunk_size(&line)?;
                        self.mode = Mode::Chunked(if size == 0 {
                            Chunked::Trailer
                        } else {
                            Chunked::Data(size)
                        });
                    }
                    Chunked::Data(left) => {
                        let n = self.copy_out(out, left)?;
                        if n == 0 {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "body ended inside a chunk",
                            ));
                        }
                        let left = left - n as u64;
                        self.mode = Mode::Chunked(if left == 0 {
                            Chunked::DataEnd
                        } else {
                            Chunked::Data(left)
                        });
                        return Ok(n);
                    }
                    Chunked::DataEnd => {
                        if !self.line()?.is_empty() {
                            return Err(bad("chunk data longer than its size"));
                        }
                        self.mode = Mode::Chunked(Chunked::Size);
                    }
                    Chunked::Trailer => {
                        // Trailer fields until an empty line; bounded by count.
                        let mut fields = 0;
                        while !self.line()?.is_empty() {
                            fields += 1;
                            if fields > 64 {
                                return Err(bad("too many trailer fields"));
                            }
                        }
                        self.mode = Mode::Chunked(Chunked::Done);
                    }
                    Chunked::Done => return Ok(0),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(framing: BodyFraming, leftover: &[u8], rest: &[u8]) -> io::Result<Vec<u8>> {
        let mut r = BodyReader::new(rest, leftover.to_vec(), framing, true);
        let mut out = Vec::new();
        r.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn chunked_across_reads_with_extensions_and_trailers() {
        let body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n";
        for split in 0..body.len() {
            let out = read_all(BodyFraming::Chunked, &body[..split], &body[split..]).unwrap();
            assert_eq!(out, b"hello world");
        }
    }

    #[test]
    fn chunked_errors() {
        assert!(read_all(BodyFraming::Chunked, b"", b"zz\r\n").is_err());
        assert!(read_all(BodyFraming::Chunked, b"", b"5\r\nhello!!\r\n").is_err());
        assert!(read_all(BodyFraming::Chunked, b"", b"5\r\nhel").is_err());
        let long = vec![b'1'; 5000];
        assert!(read_all(BodyFraming::Chunked, b"", &long).is_err());
        assert!(read_all(BodyFraming::Chunked, b"", b"fffffffffffffffffff\r\n").is_err());
    }

    #[test]
    fn length_and_until_close() {
        assert_eq!(
            read_all(BodyFraming::Length(3), b"a", b"bcdef").unwrap(),
            b"abc"
        );
        assert!(read_all(BodyFraming::Length(10), b"a", b"bc").is_err());
        assert_eq!(read_all(BodyFraming::None, b"a", b"bc").unwrap(), b"abc");
    }
}

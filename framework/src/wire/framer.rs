//! Line framer: splits a byte stream into `\n`-terminated lines with a hard length limit.
//!
//! Lines entirely inside one input chunk are handed out as borrowed slices (no copy). Only a line
//! that straddles chunks is buffered, and never beyond the limit: a longer line is dropped whole
//! (reported once as [`FramedLine::TooLong`]) and the framer skips to the next newline.

/// One framing result.
#[derive(Debug, PartialEq, Eq)]
pub enum FramedLine<'a> {
    /// A complete line without its `\n`.
    Line(&'a [u8]),
    /// A line longer than the limit was dropped.
    TooLong,
}

/// Stateful line splitter.
#[derive(Debug)]
pub struct Framer {
    pending: Vec<u8>,
    max_line: usize,
    discarding: bool,
}

impl Framer {
    /// A framer that drops lines longer than `max_line` bytes (excluding the newline).
    pub fn new(max_line: usize) -> Self {
        Framer {
            pending: Vec::new(),
            max_line: max_line.max(1),
            discarding: false,
        }
    }

    /// Feed a chunk; `emit` is called for every complete line (or dropped long line).
    pub fn push(&mut self, mut data: &[u8], mut emit: impl FnMut(FramedLine<'_>)) {
        while !data.is_empty() {
            match memchr::memchr(b'\n', data) {
                Some(pos) => {
                    let (line, rest) = (&data[..pos], &data[pos + 1..]);
                    data = rest;
                    if self.discarding {
                        self.discarding = false;
                        continue;
                    }
                    if self.pending.is_empty() {
                        if line.len() > self.max_line {
                            emit(FramedLine::TooLong);
                        } else {
                            emit(FramedLine::Line(line));
                        }
                    } else if self.pending.len() + line.len() > self.max_line {
                        self.pending.clear();
                        emit(FramedLine::TooLong);
                    } else {
                        self.pending.extend_from_slice(line);
                        emit(FramedLine::Line(&self.pending));
                        self.pending.clear();
                    }
                }
                None => {
                    if !self.discarding {
                        if self.pending.len() + data.len() > self.max_line {
                            self.pending.clear();
                            self.discarding = true;
                            emit(FramedLine::TooLong);
                        } else {
                            self.pending.extend_from_slice(data);
                        }
                    }
                    data = &[];
                }
            }
        }
        if self.pending.capacity() > 4 * self.max_line.min(1 << 20) && self.pending.is_empty() {
            self.pending = Vec::new();
        }
    }

    /// End of stream: emit a final unterminated line, if any.
    pub fn finish(&mut self, mut emit: impl FnMut(FramedLine<'_>)) {
        if !self.discarding && !self.pending.is_empty() {
            emit(FramedLine::Line(&self.pending));
        }
        self.pending.clear();
        self.discarding = false;
    }

    /// Bytes currently buffered for an incomplete line (bounded by the limit).
    pub fn buffered(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(f: &mut Framer, chunks: &[&[u8]]) -> Vec<Option<Vec<u8>>> {
        let mut out = Vec::new();
        for c in chunks {
            f.push(c, |l| match l {
                FramedLine::Line(b) => out.push(Some(b.to_vec())),
                FramedLine::TooLong => out.push(None),
            });
        }
        f.finish(|l| match l {
            FramedLine::Line(b) => out.push(Some(b.to_vec())),
            FramedLine::TooLong => out.push(None),
        });
        out
    }

    #[test]
    fn splits_lines_across_chunks() {
        let mut f = Framer::new(100);
        let out = collect(&mut f, &[b"|a|1|\n|b|", b"2|\n|c|3|"]);
        assert_eq!(
            out,
            vec![
                Some(b"|a|1|".to_vec()),
                Some(b"|b|2|".to_vec()),
                Some(b"|c|3|".to_vec())
            ]
        );
    }

    #[test]
    fn drops_long_lines_whole() {
        let mut f = Framer::new(8);
        let out = collect(&mut f, &[b"short\n0123456789abc\nok\n"]);
        assert_eq!(
            out,
            vec![Some(b"short".to_vec()), None, Some(b"ok".to_vec())]
        );
    }

    #[test]
    fn drops_long_line_spanning_chunks_once() {
        let mut f = Framer::new(8);
        let out = collect(&mut f, &[b"01234", b"56789", b"abcdef", b"gh\nok\n"]);
        assert_eq!(out, vec![None, Some(b"ok".to_vec())]);
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn exactly_at_limit_is_kept() {
        let mut f = Framer::new(5);
        let out = collect(&mut f, &[b"123", b"45\n123456\n"]);
        assert_eq!(out, vec![Some(b"12345".to_vec()), None]);
    }
}

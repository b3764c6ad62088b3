//! Readers for bytes from outside: a big-endian byte cursor for length-delimited records
//! (avcC, hvcC, OpusHead, FLAC metadata) and an MSB-first bit reader with Exp-Golomb for
//! bitstream syntax (SPS, AudioSpecificConfig, VP9 and AV1 headers).
//!
//! Both return [`CodecError`] instead of panicking and name what was being read, so an
//! error says "H.264 avcC: truncated SPS (3 of 12 bytes)" rather than "index out of
//! bounds". A small reader of our own rather than a crate: the syntax needed is a dozen
//! methods, and the error context is the part a crate would not give us.

use std::borrow::Cow;

use super::CodecError;

/// A cursor over a byte slice; every read is bounds-checked.
pub(crate) struct ByteReader<'a> {
    data: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> ByteReader<'a> {
    pub fn new(data: &'a [u8], what: &'static str) -> Self {
        ByteReader { data, pos: 0, what }
    }

    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], CodecError> {
        let have = self.remaining();
        if n > have {
            return Err(CodecError::Truncated {
                what: self.what,
                field,
                have,
                need: n,
            });
        }
        let out = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        let out = &self.data[self.pos..];
        self.pos = self.data.len();
        out
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], CodecError> {
        let b = self.bytes(N, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    pub fn u8(&mut self, field: &'static str) -> Result<u8, CodecError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub fn u16(&mut self, field: &'static str) -> Result<u16, CodecError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    pub fn u32(&mut self, field: &'static str) -> Result<u32, CodecError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    pub fn u16_le(&mut self, field: &'static str) -> Result<u16, CodecError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    pub fn u32_le(&mut self, field: &'static str) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    pub fn i16_le(&mut self, field: &'static str) -> Result<i16, CodecError> {
        Ok(i16::from_le_bytes(self.array(field)?))
    }
}

/// An MSB-first bit reader. `field` names the syntax structure being read (set it with
/// [`BitReader::field`]) so that running out of bits says where.
pub(crate) struct BitReader<'a> {
    data: &'a [u8],
    /// Position in bits.
    pos: usize,
    what: &'static str,
    field: &'static str,
}

impl<'a> BitReader<'a> {
    pub fn new(data: &'a [u8], what: &'static str) -> Self {
        BitReader {
            data,
            pos: 0,
            what,
            field: "header",
        }
    }

    /// Names the syntax structure the next reads belong to.
    pub fn field(&mut self, field: &'static str) {
        self.field = field;
    }

    pub fn what(&self) -> &'static str {
        self.what
    }

    pub fn bits_left(&self) -> usize {
        (self.data.len() * 8).saturating_sub(self.pos)
    }

    fn out_of_bits(&self, n: usize) -> CodecError {
        CodecError::OutOfBits {
            what: self.what,
            field: self.field,
            have: self.data.len() * 8,
            need: self.pos.saturating_add(n),
        }
    }

    pub fn bit(&mut self) -> Result<bool, CodecError> {
        let byte = self
            .data
            .get(self.pos / 8)
            .ok_or_else(|| self.out_of_bits(1))?;
        let b = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Ok(b == 1)
    }

    /// Up to 64 bits as an unsigned number.
    pub fn bits64(&mut self, n: u32) -> Result<u64, CodecError> {
        debug_assert!(n <= 64);
        let n = n.min(64);
        if n as usize > self.bits_left() {
            return Err(self.out_of_bits(n as usize));
        }
        let mut v = 0u64;
        for _ in 0..n {
            v = (v << 1) | u64::from(self.bit()?);
        }
        Ok(v)
    }

    /// Up to 32 bits as an unsigned number.
    pub fn bits(&mut self, n: u32) -> Result<u32, CodecError> {
        debug_assert!(n <= 32);
        // n ≤ 32, so the value fits.
        Ok(self.bits64(n.min(32))? as u32)
    }

    pub fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.bits(8)? as u8)
    }

    pub fn skip(&mut self, n: usize) -> Result<(), CodecError> {
        if n > self.bits_left() {
            return Err(self.out_of_bits(n));
        }
        self.pos += n;
        Ok(())
    }

    /// Unsigned Exp-Golomb, ue(v). Codes longer than 32 bits (values ≥ 2^32 − 1) are
    /// refused: no syntax element we read can be that large.
    pub fn ue(&mut self) -> Result<u32, CodecError> {
        let mut zeros = 0u32;
        while !self.bit()? {
            zeros += 1;
            if zeros > 31 {
                return Err(CodecError::Invalid {
                    what: self.what,
                    reason: format!("Exp-Golomb code in {} longer than 32 bits", self.field),
                });
            }
        }
        let rest = self.bits(zeros)?;
        // zeros ≤ 31: (2^zeros − 1) + rest ≤ 2^32 − 2.
        Ok(((1u64 << zeros) - 1 + u64::from(rest)) as u32)
    }

    /// Signed Exp-Golomb, se(v).
    pub fn se(&mut self) -> Result<i64, CodecError> {
        let k = i64::from(self.ue()?);
        Ok(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }

    /// ue(v) that must not exceed `max`; `name` is the syntax element.
    pub fn ue_max(&mut self, name: &'static str, max: u32) -> Result<u32, CodecError> {
        let v = self.ue()?;
        if v > max {
            return Err(CodecError::BadValue {
                what: self.what,
                field: name,
                value: u64::from(v),
                expected: max_text(max),
            });
        }
        Ok(v)
    }
}

/// "at most N" for the handful of bounds the parsers use, without allocating.
fn max_text(max: u32) -> &'static str {
    match max {
        0 => "at most 0",
        1 => "at most 1",
        2 => "at most 2",
        3 => "at most 3",
        6 => "at most 6",
        8 => "at most 8",
        12 => "at most 12",
        14 => "at most 14",
        15 => "at most 15",
        16 => "at most 16",
        31 => "at most 31",
        32 => "at most 32",
        255 => "at most 255",
        _ => "out of range",
    }
}

/// The RBSP of an H.264/H.265 NAL unit: the payload with every emulation prevention byte
/// (the 03 in 00 00 03) removed. Borrows when there is none, which is the common case.
pub fn nal_to_rbsp(nal: &[u8]) -> Cow<'_, [u8]> {
    let has_epb = nal.windows(3).any(|w| w == [0, 0, 3]);
    if !has_epb {
        return Cow::Borrowed(nal);
    }
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0usize;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    Cow::Owned(out)
}

/// Splits Annex B bytes (start codes 00 00 01 or 00 00 00 01) into NAL units. Bytes before
/// the first start code are ignored; trailing zero bytes of a NAL unit are dropped.
pub fn split_annex_b(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut out = Vec::with_capacity(starts.len());
    for (k, &s) in starts.iter().enumerate() {
        let end = starts.get(k + 1).map_or(data.len(), |&next| next - 3);
        let mut nal = &data[s..end.max(s)];
        while let Some((&0, head)) = nal.split_last() {
            nal = head;
        }
        if !nal.is_empty() {
            out.push(nal);
        }
    }
    out
}

/// Whether bytes start with an Annex B start code rather than a length or a record.
pub fn is_annex_b(data: &[u8]) -> bool {
    data.starts_with(&[0, 0, 1]) || data.starts_with(&[0, 0, 0, 1])
}

/// Splits length-prefixed NAL units (`len_size` bytes, big-endian, as in MP4/Matroska).
/// Stops at the first length that runs past the end.
pub fn split_length_prefixed(data: &[u8], len_size: u8) -> Vec<&[u8]> {
    let n = usize::from(len_size.clamp(1, 4));
    let mut out = Vec::new();
    let mut rest = data;
    while rest.len() >= n {
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        let Some(nal) = rest.get(n..n.saturating_add(len)) else {
            break;
        };
        if !nal.is_empty() {
            out.push(nal);
        }
        rest = &rest[n + len..];
    }
    out
}

/// An MSB-first bit writer, for the few records we build (AudioSpecificConfig).
#[derive(Default)]
pub(crate) struct BitWriter {
    out: Vec<u8>,
    bits: usize,
}

impl BitWriter {
    pub fn put(&mut self, n: u32, value: u32) {
        for i in (0..n).rev() {
            if self.bits.is_multiple_of(8) {
                self.out.push(0);
            }
            if (value >> i) & 1 == 1
                && let Some(last) = self.out.last_mut()
            {
                *last |= 0x80 >> (self.bits % 8);
            }
            self.bits += 1;
        }
    }

    /// The bytes, zero-padded to a whole byte.
    pub fn finish(self) -> Vec<u8> {
        self.out
    }
}

/// Writes bitstream syntax for hand-built test cases (the inverse of [`BitReader`]).
#[cfg(test)]
#[derive(Default)]
pub(crate) struct SpsWriter(pub BitWriter);

#[cfg(test)]
impl SpsWriter {
    pub fn u(&mut self, n: u32, v: u32) -> &mut Self {
        self.0.put(n, v);
        self
    }
    pub fn ue(&mut self, v: u32) -> &mut Self {
        let v1 = u64::from(v) + 1;
        let len = 64 - v1.leading_zeros();
        self.0.put(len - 1, 0);
        // len = 33 only for v = u32::MAX, which the tests never write.
        self.0.put(len, v1 as u32);
        self
    }
    pub fn se(&mut self, v: i32) -> &mut Self {
        let k = if v > 0 {
            2 * v as u32 - 1
        } else {
            (-2 * v) as u32
        };
        self.ue(k)
    }
    /// Adds the rbsp_stop_one_bit and inserts emulation prevention bytes.
    pub fn nal(mut self) -> Vec<u8> {
        self.0.put(1, 1);
        escape(&self.0.finish())
    }
}

/// Inserts emulation prevention bytes: the inverse of [`nal_to_rbsp`].
#[cfg(test)]
pub(crate) fn escape(rbsp: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut zeros = 0;
    for &b in rbsp {
        if zeros >= 2 && b <= 3 {
            out.push(3);
            zeros = 0;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_golomb() {
        // 1 | 010 | 011 | 00100 | 00101 → ue 0, 1, 2, 3, 4
        let data = [0b1010_0110, 0b0100_0010, 0b1000_0000];
        let mut r = BitReader::new(&data, "test");
        let v: Vec<u32> = (0..5).map(|_| r.ue().unwrap()).collect();
        assert_eq!(v, [0, 1, 2, 3, 4]);
        let mut r = BitReader::new(&data, "test");
        let v: Vec<i64> = (0..5).map(|_| r.se().unwrap()).collect();
        assert_eq!(v, [0, 1, -1, 2, -2]);
    }

    #[test]
    fn exp_golomb_limits() {
        // 31 zeros, a one, then 31 ones: the largest code we accept.
        let mut w = BitWriter::default();
        w.put(31, 0);
        w.put(1, 1);
        w.put(31, 0x7FFF_FFFF);
        let data = w.finish();
        assert_eq!(
            BitReader::new(&data, "t").ue().unwrap(),
            u32::MAX - 1,
            "2^32 - 2"
        );
        // 32 zeros: refused, not overflowed.
        let data = [0, 0, 0, 0, 0x80];
        let e = BitReader::new(&data, "t").ue().unwrap_err();
        assert!(e.to_string().contains("longer than 32 bits"), "{e}");
        // All zeros: runs out rather than looping.
        assert!(BitReader::new(&[0, 0], "t").ue().is_err());
        assert!(BitReader::new(&[], "t").ue().is_err());
    }

    #[test]
    fn out_of_bits_names_the_field() {
        let mut r = BitReader::new(&[0xFF], "H.264 SPS");
        r.field("vui_parameters");
        assert_eq!(r.bits(6).unwrap(), 0x3F);
        let e = r.bits(3).unwrap_err();
        assert_eq!(
            e.to_string(),
            "H.264 SPS: ends inside vui_parameters (needs 9 bits, has 8)"
        );
    }

    #[test]
    fn truncated_bytes_message() {
        let mut r = ByteReader::new(&[1, 2, 3], "H.264 avcC");
        let e = r.bytes(12, "SPS").unwrap_err();
        assert_eq!(e.to_string(), "H.264 avcC: truncated SPS (3 of 12 bytes)");
    }

    #[test]
    fn emulation_prevention() {
        assert_eq!(&*nal_to_rbsp(&[0x67, 1, 2]), &[0x67, 1, 2]);
        assert_eq!(
            &*nal_to_rbsp(&[0x67, 0, 0, 3, 1, 0, 0, 3, 0, 0, 3]),
            &[0x67, 0, 0, 1, 0, 0, 0, 0]
        );
        // 00 00 03 03: only the first 03 is an emulation prevention byte.
        assert_eq!(&*nal_to_rbsp(&[0, 0, 3, 3]), &[0, 0, 3]);
        // 00 03 is not one.
        assert_eq!(&*nal_to_rbsp(&[0, 3, 0, 0, 3]), &[0, 3, 0, 0]);
    }

    #[test]
    fn annex_b_and_length_prefixed() {
        let data = [
            9, 0, 0, 0, 1, 0x67, 1, 0, 0, 1, 0x68, 2, 0, 0, 0, 0, 1, 0x65,
        ];
        assert_eq!(
            split_annex_b(&data),
            vec![&[0x67u8, 1][..], &[0x68, 2], &[0x65]]
        );
        assert!(is_annex_b(&data[1..]));
        let lp = [0, 0, 0, 2, 0x67, 1, 0, 0, 0, 1, 0x68, 0, 0, 0, 9, 1];
        assert_eq!(
            split_length_prefixed(&lp, 4),
            vec![&[0x67u8, 1][..], &[0x68]]
        );
        assert!(split_length_prefixed(&[0xFF], 4).is_empty());
    }

    #[test]
    fn bit_writer() {
        let mut w = BitWriter::default();
        w.put(5, 2);
        w.put(4, 3);
        w.put(4, 2);
        w.put(3, 0);
        assert_eq!(w.finish(), [0x11, 0x90]);
    }
}

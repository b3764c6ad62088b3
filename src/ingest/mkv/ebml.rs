//! EBML framing: element IDs, sizes and the scalar payloads of header elements.
//!
//! Everything here reads from a slice and returns `Ok(None)` when the slice ends before the
//! thing being read does, so the same code serves the push-fed stream and the bodies of
//! elements that were buffered whole.

/// Element IDs this demuxer acts on. Matroska IDs are at most 4 bytes (EBMLMaxIDLength).
pub(super) mod id {
    pub const EBML: u32 = 0x1A45_DFA3;
    pub const DOC_TYPE: u32 = 0x4282;
    pub const EBML_MAX_ID_LENGTH: u32 = 0x42F2;
    pub const EBML_MAX_SIZE_LENGTH: u32 = 0x42F3;

    pub const SEGMENT: u32 = 0x1853_8067;
    pub const SEEK_HEAD: u32 = 0x114D_9B74;
    pub const INFO: u32 = 0x1549_A966;
    pub const TRACKS: u32 = 0x1654_AE6B;
    pub const CLUSTER: u32 = 0x1F43_B675;
    pub const CUES: u32 = 0x1C53_BB6B;
    pub const ATTACHMENTS: u32 = 0x1941_A469;
    pub const CHAPTERS: u32 = 0x1043_A770;
    pub const TAGS: u32 = 0x1254_C367;

    pub const VOID: u32 = 0xEC;
    pub const CRC32: u32 = 0xBF;

    pub const TIMESTAMP_SCALE: u32 = 0x2A_D7B1;

    pub const TIMESTAMP: u32 = 0xE7;
    pub const SILENT_TRACKS: u32 = 0x5854;
    pub const POSITION: u32 = 0xA7;
    pub const PREV_SIZE: u32 = 0xAB;
    pub const SIMPLE_BLOCK: u32 = 0xA3;
    pub const BLOCK_GROUP: u32 = 0xA0;
    pub const ENCRYPTED_BLOCK: u32 = 0xAF;
    pub const BLOCK: u32 = 0xA1;
    pub const BLOCK_DURATION: u32 = 0x9B;
    pub const REFERENCE_BLOCK: u32 = 0xFB;

    pub const TRACK_ENTRY: u32 = 0xAE;
    pub const TRACK_NUMBER: u32 = 0xD7;
    pub const TRACK_TYPE: u32 = 0x83;
    pub const CODEC_ID: u32 = 0x86;
    pub const CODEC_PRIVATE: u32 = 0x63A2;
    pub const DEFAULT_DURATION: u32 = 0x23_E383;
    pub const CODEC_DELAY: u32 = 0x56AA;
    pub const SEEK_PRE_ROLL: u32 = 0x56BB;
    pub const LANGUAGE: u32 = 0x22_B59C;
    pub const LANGUAGE_BCP47: u32 = 0x22_B59D;
    pub const VIDEO: u32 = 0xE0;
    pub const PIXEL_WIDTH: u32 = 0xB0;
    pub const PIXEL_HEIGHT: u32 = 0xBA;
    pub const DISPLAY_WIDTH: u32 = 0x54B0;
    pub const DISPLAY_HEIGHT: u32 = 0x54BA;
    pub const DISPLAY_UNIT: u32 = 0x54B2;
    pub const AUDIO: u32 = 0xE1;
    pub const SAMPLING_FREQUENCY: u32 = 0xB5;
    pub const CHANNELS: u32 = 0x9F;
    pub const BIT_DEPTH: u32 = 0x6264;
    pub const CONTENT_ENCODINGS: u32 = 0x6D80;
    pub const CONTENT_ENCODING: u32 = 0x6240;
    pub const CONTENT_ENCODING_ORDER: u32 = 0x5031;
    pub const CONTENT_ENCODING_SCOPE: u32 = 0x5032;
    pub const CONTENT_ENCODING_TYPE: u32 = 0x5033;
    pub const CONTENT_COMPRESSION: u32 = 0x5034;
    pub const CONTENT_COMP_ALGO: u32 = 0x4254;
    pub const CONTENT_COMP_SETTINGS: u32 = 0x4255;
    pub const CONTENT_ENCRYPTION: u32 = 0x5035;
}

/// The Segment-level (level 1) elements: each ends an unknown-size Cluster.
pub(super) fn is_level1(id: u32) -> bool {
    matches!(
        id,
        id::SEEK_HEAD
            | id::INFO
            | id::TRACKS
            | id::CLUSTER
            | id::CUES
            | id::ATTACHMENTS
            | id::CHAPTERS
            | id::TAGS
    )
}

/// An element's ID and size, read from the front of a slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ElementHeader {
    pub id: u32,
    /// `None` for the reserved all-ones "unknown size" of any width.
    pub size: Option<u64>,
    /// Bytes taken by the ID and the size.
    pub len: usize,
}

/// Why bytes are not EBML. Kept small: formatted into a message only when reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum VintError {
    /// A first byte of 0x00: an ID longer than 4 bytes, or a size longer than 8.
    TooLong,
    /// An ID whose value bits are all zeros or all ones (reserved).
    ReservedId,
}

impl std::fmt::Display for VintError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VintError::TooLong => f.write_str("variable-length integer longer than allowed"),
            VintError::ReservedId => f.write_str("reserved element ID"),
        }
    }
}

/// Width of a VINT from its first byte: the position of the first set bit (1..=8), or 9
/// for 0x00.
#[inline]
fn vint_width(first: u8) -> usize {
    first.leading_zeros() as usize + 1
}

/// Reads an element ID (1 to 4 bytes, marker bit kept, as IDs are written in the spec).
#[inline]
pub(super) fn read_id(b: &[u8]) -> Result<Option<(u32, usize)>, VintError> {
    let Some(&first) = b.first() else {
        return Ok(None);
    };
    let width = vint_width(first);
    if width > 4 {
        return Err(VintError::TooLong);
    }
    let Some(bytes) = b.get(..width) else {
        return Ok(None);
    };
    let id = bytes.iter().fold(0u32, |v, &x| (v << 8) | u32::from(x));
    let value_bits = id & ((1u32 << (7 * width)) - 1);
    if value_bits == 0 || value_bits == (1u32 << (7 * width)) - 1 {
        return Err(VintError::ReservedId);
    }
    Ok(Some((id, width)))
}

/// Reads an unsigned VINT (1 to 8 bytes). Returns the value without its marker, its width,
/// and whether all value bits were ones (the "unknown size" pattern).
#[inline]
pub(super) fn read_vint(b: &[u8]) -> Result<Option<(u64, usize, bool)>, VintError> {
    let Some(&first) = b.first() else {
        return Ok(None);
    };
    let width = vint_width(first);
    if width > 8 {
        return Err(VintError::TooLong);
    }
    let Some(bytes) = b.get(1..width) else {
        return Ok(None);
    };
    // width <= 8, so the shifts stay below 64 bits.
    let mut value = u64::from(first) & (0xFF >> width);
    for &x in bytes {
        value = (value << 8) | u64::from(x);
    }
    let all_ones = value == (1u64 << (7 * width)) - 1;
    Ok(Some((value, width, all_ones)))
}

/// Reads an element header: ID then size.
#[inline]
pub(super) fn read_header(b: &[u8]) -> Result<Option<ElementHeader>, VintError> {
    let Some((id, id_len)) = read_id(b)? else {
        return Ok(None);
    };
    let Some((size, size_len, unknown)) = read_vint(b.get(id_len..).unwrap_or_default())? else {
        return Ok(None);
    };
    Ok(Some(ElementHeader {
        id,
        size: if unknown { None } else { Some(size) },
        len: id_len + size_len,
    }))
}

/// The children of an element that was buffered whole: `(id, body)` pairs. Every child
/// must have a known size that fits inside the parent.
pub(super) struct Children<'a> {
    rest: &'a [u8],
}

pub(super) fn children(body: &[u8]) -> Children<'_> {
    Children { rest: body }
}

impl<'a> Iterator for Children<'a> {
    type Item = Result<(u32, &'a [u8]), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let result = match read_header(self.rest) {
            Err(e) => Err(e.to_string()),
            Ok(None) => Err("truncated child element header".to_string()),
            Ok(Some(h)) => match h.size {
                None => Err(format!("child element 0x{:X} has an unknown size", h.id)),
                Some(size) => {
                    let body = usize::try_from(size)
                        .ok()
                        .and_then(|size| h.len.checked_add(size))
                        .and_then(|end| self.rest.get(h.len..end));
                    match body {
                        Some(body) => {
                            self.rest = &self.rest[h.len + body.len()..];
                            return Some(Ok((h.id, body)));
                        }
                        None => Err(format!(
                            "child element 0x{:X} claims {size} bytes, more than its parent holds",
                            h.id
                        )),
                    }
                }
            },
        };
        // One error ends the iteration: what follows cannot be framed.
        self.rest = &[];
        Some(result)
    }
}

/// An unsigned integer element (0 to 8 bytes, big-endian; empty means 0).
pub(super) fn uint(id: u32, body: &[u8]) -> Result<u64, String> {
    if body.len() > 8 {
        return Err(format!(
            "integer element 0x{id:X} is {} bytes long (at most 8)",
            body.len()
        ));
    }
    Ok(body.iter().fold(0u64, |v, &x| (v << 8) | u64::from(x)))
}

/// A float element (0, 4 or 8 bytes; empty means 0.0).
pub(super) fn float(id: u32, body: &[u8]) -> Result<f64, String> {
    if body.is_empty() {
        return Ok(0.0);
    }
    if let Ok(b) = <[u8; 4]>::try_from(body) {
        return Ok(f64::from(f32::from_be_bytes(b)));
    }
    if let Ok(b) = <[u8; 8]>::try_from(body) {
        return Ok(f64::from_be_bytes(b));
    }
    Err(format!(
        "float element 0x{id:X} is {} bytes long (0, 4 or 8)",
        body.len()
    ))
}

/// A string element: ASCII or UTF-8, padded with zero bytes. Invalid UTF-8 is replaced
/// rather than refused: these strings are labels, not structure.
pub(super) fn string(body: &[u8]) -> String {
    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
    String::from_utf8_lossy(&body[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert_eq!(read_id(&[0x1A, 0x45, 0xDF, 0xA3]), Ok(Some((id::EBML, 4))));
        assert_eq!(read_id(&[0xEC]), Ok(Some((0xEC, 1))));
        assert_eq!(read_id(&[0x1A, 0x45]), Ok(None));
        assert_eq!(read_id(&[0x08]), Err(VintError::TooLong));
        assert_eq!(read_id(&[0xFF]), Err(VintError::ReservedId));
        assert_eq!(read_id(&[0x80]), Err(VintError::ReservedId));
        assert_eq!(read_id(&[0x40, 0x00]), Err(VintError::ReservedId));
    }

    #[test]
    fn sizes() {
        assert_eq!(read_vint(&[0x81]), Ok(Some((1, 1, false))));
        assert_eq!(read_vint(&[0xFF]), Ok(Some((127, 1, true))));
        assert_eq!(read_vint(&[0x7F, 0xFF]), Ok(Some((0x3FFF, 2, true))));
        assert_eq!(
            read_vint(&[0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]),
            Ok(Some(((1 << 56) - 1, 8, true)))
        );
        assert_eq!(
            read_vint(&[0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE]),
            Ok(Some(((1 << 56) - 2, 8, false)))
        );
        assert_eq!(read_vint(&[0x01, 0xFF]), Ok(None));
        assert_eq!(read_vint(&[0x00]), Err(VintError::TooLong));
    }

    #[test]
    fn scalars() {
        assert_eq!(uint(1, &[]), Ok(0));
        assert_eq!(uint(1, &[0x0F, 0x42, 0x40]), Ok(1_000_000));
        assert!(uint(1, &[0; 9]).is_err());
        assert_eq!(float(1, &48000f32.to_be_bytes()), Ok(48000.0));
        assert_eq!(float(1, &44100f64.to_be_bytes()), Ok(44100.0));
        assert!(float(1, &[0; 3]).is_err());
        assert_eq!(string(b"eng\0\0"), "eng");
    }
}

//! The body of a SimpleBlock or Block: track number, relative timestamp, flags and lacing.
//!
//! Written here rather than taken from webm-iterable, whose block helpers panic on corrupt
//! lacing. Every size read from the block is checked against the bytes that are there.

use std::ops::Range;

use super::ebml;

/// SimpleBlock flag: the frame is a random access point.
pub(super) const FLAG_KEYFRAME: u8 = 0x80;
const LACING_MASK: u8 = 0x06;
const LACING_XIPH: u8 = 0x02;
const LACING_EBML: u8 = 0x06;

/// The fixed part of a block, before its frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct BlockHeader {
    pub track: u64,
    /// Relative to the Cluster Timestamp, in TimestampScale units.
    pub timecode: i16,
    pub flags: u8,
}

/// Parses a block body and appends the byte range of each frame (relative to `body`) to
/// `frames`, which is cleared first. At least one range is produced on success.
pub(super) fn parse(body: &[u8], frames: &mut Vec<Range<usize>>) -> Result<BlockHeader, String> {
    frames.clear();
    let (track, width, _) = ebml::read_vint(body)
        .map_err(|e| format!("track number: {e}"))?
        .ok_or("block shorter than its header")?;
    let fixed = body
        .get(width..width + 3)
        .ok_or("block shorter than its header")?;
    let header = BlockHeader {
        track,
        timecode: i16::from_be_bytes([fixed[0], fixed[1]]),
        flags: fixed[2],
    };
    let mut pos = width + 3;

    let lacing = header.flags & LACING_MASK;
    if lacing == 0 {
        frames.push(pos..body.len());
        return Ok(header);
    }

    let count = usize::from(*body.get(pos).ok_or("laced block without a frame count")?) + 1;
    pos += 1;
    match lacing {
        LACING_XIPH => {
            // Sizes of all frames but the last: runs of 255 plus a final byte below 255.
            let mut sizes = [0usize; 255];
            for size in sizes.iter_mut().take(count - 1) {
                loop {
                    let byte = *body.get(pos).ok_or("Xiph lace sizes run past the block")?;
                    pos += 1;
                    *size += usize::from(byte);
                    if byte != 255 {
                        break;
                    }
                }
            }
            push_laces(body, pos, &sizes[..count - 1], frames)?;
        }
        LACING_EBML => {
            let mut sizes = [0usize; 255];
            if count > 1 {
                let (first, w, _) = ebml::read_vint(body.get(pos..).unwrap_or_default())
                    .map_err(|e| format!("EBML lace size: {e}"))?
                    .ok_or("EBML lace sizes run past the block")?;
                pos += w;
                let mut prev = i64::try_from(first).map_err(|_| "EBML lace size too large")?;
                sizes[0] = usize::try_from(prev).map_err(|_| "EBML lace size too large")?;
                for size in sizes.iter_mut().take(count - 1).skip(1) {
                    let (raw, w, _) = ebml::read_vint(body.get(pos..).unwrap_or_default())
                        .map_err(|e| format!("EBML lace size: {e}"))?
                        .ok_or("EBML lace sizes run past the block")?;
                    pos += w;
                    // A signed VINT: the raw value minus half its range (w <= 8, so the
                    // shift is at most 55 bits and the subtraction cannot overflow).
                    let bias = (1i64 << (7 * w - 1)) - 1;
                    let delta = raw as i64 - bias;
                    prev = prev
                        .checked_add(delta)
                        .filter(|&s| s >= 0)
                        .ok_or("EBML lace size out of range")?;
                    *size = usize::try_from(prev).map_err(|_| "EBML lace size too large")?;
                }
            }
            push_laces(body, pos, &sizes[..count - 1], frames)?;
        }
        // LACING_FIXED, the one value left of the two lacing bits.
        _ => {
            let rest = body.len() - pos.min(body.len());
            if !rest.is_multiple_of(count) {
                return Err(format!(
                    "fixed lacing of {count} frames over {rest} bytes does not divide evenly"
                ));
            }
            let each = rest / count;
            for k in 0..count {
                let start = pos + k * each;
                frames.push(start..start + each);
            }
        }
    }
    Ok(header)
}

/// Pushes the frames of explicit sizes, then the last frame taking the rest.
fn push_laces(
    body: &[u8],
    mut pos: usize,
    sizes: &[usize],
    frames: &mut Vec<Range<usize>>,
) -> Result<(), String> {
    if pos > body.len() {
        return Err("lace sizes run past the block".into());
    }
    for &size in sizes {
        let end = pos
            .checked_add(size)
            .filter(|&end| end <= body.len())
            .ok_or_else(|| format!("lace of {size} bytes runs past the block"))?;
        frames.push(pos..end);
        pos = end;
    }
    frames.push(pos..body.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames_of(body: &[u8]) -> Result<(BlockHeader, Vec<Vec<u8>>), String> {
        let mut ranges = Vec::new();
        let h = parse(body, &mut ranges)?;
        Ok((h, ranges.into_iter().map(|r| body[r].to_vec()).collect()))
    }

    #[test]
    fn unlaced() {
        let (h, f) = frames_of(&[0x81, 0x80, 0x00, 0x80, 1, 2, 3]).unwrap();
        assert_eq!(
            h,
            BlockHeader {
                track: 1,
                timecode: -32768,
                flags: 0x80
            }
        );
        assert_eq!(f, vec![vec![1, 2, 3]]);
        // Two-byte track number.
        let (h, f) = frames_of(&[0x40, 0x90, 0x00, 0x05, 0x00]).unwrap();
        assert_eq!((h.track, h.timecode), (0x90, 5));
        assert_eq!(f, vec![Vec::<u8>::new()]);
    }

    #[test]
    fn xiph() {
        let mut b = vec![0x81, 0, 0, 0x02, 2, 255, 1, 3];
        b.extend(std::iter::repeat_n(7, 256));
        b.extend([8, 8, 8]);
        b.extend([9, 9]);
        let (_, f) = frames_of(&b).unwrap();
        assert_eq!(f, vec![vec![7; 256], vec![8; 3], vec![9; 2]]);
    }

    #[test]
    fn ebml() {
        // Sizes 300, 298 (delta -2 as a 1-byte signed VINT: 63 - 2 = 61 → 0xBD), rest 5.
        let mut b = vec![0x81, 0, 0, 0x06, 2, 0x41, 0x2C, 0xBD];
        b.extend(std::iter::repeat_n(1, 300));
        b.extend(std::iter::repeat_n(2, 298));
        b.extend(std::iter::repeat_n(3, 5));
        let (_, f) = frames_of(&b).unwrap();
        assert_eq!(f, vec![vec![1; 300], vec![2; 298], vec![3; 5]]);
    }

    #[test]
    fn fixed() {
        let (_, f) = frames_of(&[0x81, 0, 0, 0x04, 2, 1, 1, 2, 2, 3, 3]).unwrap();
        assert_eq!(f, vec![vec![1, 1], vec![2, 2], vec![3, 3]]);
        assert!(frames_of(&[0x81, 0, 0, 0x04, 1, 1, 1, 2]).is_err());
    }

    #[test]
    fn corrupt_lacing_is_an_error() {
        assert!(frames_of(&[0x81, 0, 0]).is_err());
        assert!(frames_of(&[0x81, 0, 0, 0x02]).is_err());
        assert!(frames_of(&[0x81, 0, 0, 0x02, 3, 255, 255]).is_err());
        assert!(frames_of(&[0x81, 0, 0, 0x02, 1, 200, 1]).is_err());
        assert!(frames_of(&[0x81, 0, 0, 0x06, 1, 0x00]).is_err());
        // A negative size from a delta.
        assert!(frames_of(&[0x81, 0, 0, 0x06, 2, 0x81, 0x80, 0, 0]).is_err());
        assert!(frames_of(&[0x00, 0, 0, 0]).is_err());
    }
}

//! A small FLAC encoder for live audio we must re-encode for browsers (G.711 from cameras:
//! no browser's Media Source plays it, every one plays FLAC in fMP4), and the G.711 →
//! FLAC transcoder the CMAF pipeline uses.
//!
//! What it writes (RFC 9639): one frame per call, of exactly the samples given, so one
//! input frame becomes one MP4 sample of the same duration. Frames use the *variable*
//! blocking strategy (the header codes the number of the frame's first sample, not a frame
//! number), which is what a stream of frames of arbitrary length needs; STREAMINFO says so
//! by declaring every block size possible (16..65535). Subframes are CONSTANT (silence),
//! FIXED of the order 0..4 that codes smallest, with Rice-coded residuals in the best
//! partition order, or VERBATIM when prediction does not pay; samples with trailing zero
//! bits (all of G.711: A-law decodes to multiples of 8, µ-law of 4) are coded as
//! "wasted bits". Stereo tries left/side, right/side and mid/side too.
//!
//! Not written: LPC subframes (FIXED is within a few percent on 8 kHz speech and needs no
//! search), escaped Rice partitions (not every decoder has them — claxon does not; a
//! VERBATIM subframe is the fallback), and the MD5 in STREAMINFO (a live stream has no
//! end to sign).

use bytes::Bytes;

use crate::media::Codec;
use crate::media::codec::flac::{
    LIVE_MAX_BLOCK_SIZE, LIVE_MIN_BLOCK_SIZE, MAX_SAMPLE_RATE, StreamInfo,
};
use crate::media::g711;

/// The longest block one frame holds; longer input is split into several frames.
pub const MAX_BLOCK: usize = LIVE_MAX_BLOCK_SIZE as usize;

/// Bits per input sample: the encoder takes 16-bit PCM.
const BPS: u32 = 16;

/// Highest FIXED predictor order.
const MAX_ORDER: usize = 4;

/// Highest Rice partition order tried (each partition costs a 4-bit parameter, so finer
/// ones rarely pay).
const MAX_PARTITION_ORDER: u32 = 8;

/// Highest Rice parameter of the 4-bit coding method (15 is the escape code).
const MAX_RICE: usize = 14;

/// Encodes interleaved 16-bit PCM into FLAC frames.
#[derive(Debug)]
pub struct FlacEncoder {
    sample_rate: u32,
    channels: usize,
    /// The number of the next frame's first sample (36 bits, wraps).
    next_sample: u64,
    /// Per-channel samples of the block being encoded (and side/mid for stereo).
    signals: Vec<Vec<i32>>,
    residual: Vec<i32>,
    /// Longest frame, in samples per channel.
    max_block: usize,
}

impl FlacEncoder {
    /// `None` when FLAC cannot describe the stream: 1..=8 channels, 1..=1048575 Hz.
    pub fn new(sample_rate: u32, channels: u32) -> Option<Self> {
        if !(1..=8).contains(&channels) || !(1..=MAX_SAMPLE_RATE).contains(&sample_rate) {
            return None;
        }
        Some(FlacEncoder {
            sample_rate,
            channels: channels as usize,
            next_sample: 0,
            signals: Vec::new(),
            residual: Vec::new(),
            max_block: MAX_BLOCK,
        })
    }

    /// Frames of at most `samples` per channel (at least the 16 STREAMINFO promises).
    pub fn with_max_block(mut self, samples: usize) -> Self {
        self.max_block = samples.clamp(usize::from(LIVE_MIN_BLOCK_SIZE), MAX_BLOCK);
        self
    }

    /// The STREAMINFO the frames agree with (for `dfLa`, or a .flac stream's header).
    pub fn stream_info(&self) -> StreamInfo {
        StreamInfo::live(self.sample_rate, self.channels as u8, BPS as u8)
    }

    /// Encodes `interleaved` (channels interleaved; a trailing incomplete set of channels
    /// is ignored) into frames of at most the encoder's longest frame: one frame unless
    /// the input is longer, else frames of near-equal length (none shorter than the 16
    /// samples STREAMINFO promises, unless the input is). Returns each frame with its
    /// number of samples per channel; no frame for empty input. Never panics.
    pub fn encode(&mut self, interleaved: &[i16]) -> Vec<(Bytes, u32)> {
        let mut out = Vec::new();
        let total = interleaved.len() / self.channels;
        let frames = total.div_ceil(self.max_block);
        let mut start = 0;
        for i in 0..frames {
            // Frame i ends at sample ⌊total·(i+1)/frames⌋: lengths differ by one at most.
            let end = total * (i + 1) / frames;
            let block = &interleaved[start * self.channels..end * self.channels];
            let frame = self.encode_block(block, end - start);
            out.push((Bytes::from(frame), (end - start) as u32));
            start = end;
        }
        out
    }

    /// One frame of `n` (1..=MAX_BLOCK) samples per channel.
    fn encode_block(&mut self, block: &[i16], n: usize) -> Vec<u8> {
        let mut w = BitWriter::with_capacity(16 + block.len() * 2);
        // Split channels.
        let signal_count = if self.channels == 2 { 4 } else { self.channels };
        self.signals.resize_with(signal_count, Vec::new);
        for (c, s) in self.signals.iter_mut().enumerate().take(self.channels) {
            s.clear();
            s.extend(
                block
                    .iter()
                    .skip(c)
                    .step_by(self.channels)
                    .map(|&v| i32::from(v)),
            );
        }
        let mut plans = Vec::with_capacity(signal_count);
        let assignment;
        if self.channels == 2 {
            let (lr, ms) = self.signals.split_at_mut(2);
            let (l, r) = (&lr[0], &lr[1]);
            ms[0].clear();
            ms[0].extend(l.iter().zip(r).map(|(a, b)| a - b)); // side
            ms[1].clear();
            ms[1].extend(l.iter().zip(r).map(|(a, b)| (a + b) >> 1)); // mid
            let left = plan(l, BPS, &mut self.residual);
            let right = plan(r, BPS, &mut self.residual);
            let side = plan(&self.signals[2], BPS + 1, &mut self.residual);
            let mid = plan(&self.signals[3], BPS, &mut self.residual);
            // (assignment, first subframe, second subframe): RFC 9639 §9.1.3.
            let options = [
                (1u32, (0usize, left.clone()), (1usize, right.clone())),
                (8, (0, left), (2, side.clone())),
                (9, (2, side.clone()), (1, right)),
                (10, (3, mid), (2, side)),
            ];
            let best = options
                .into_iter()
                .min_by_key(|(_, a, b)| a.1.bits + b.1.bits)
                .expect("four options");
            assignment = best.0;
            plans.push(best.1);
            plans.push(best.2);
        } else {
            assignment = self.channels as u32 - 1;
            for c in 0..self.channels {
                plans.push((c, plan(&self.signals[c], BPS, &mut self.residual)));
            }
        }

        self.write_header(&mut w, n, assignment);
        for (signal, p) in &plans {
            write_subframe(&mut w, &self.signals[*signal], p, &mut self.residual);
        }
        w.align();
        let mut frame = w.into_bytes();
        let crc = crc16(&frame);
        frame.extend_from_slice(&crc.to_be_bytes());
        self.next_sample = (self.next_sample + n as u64) & 0xF_FFFF_FFFF;
        frame
    }

    fn write_header(&self, w: &mut BitWriter, n: usize, assignment: u32) {
        // Sync code, a reserved 0 bit, blocking strategy 1: variable.
        w.put(15, 0b111_1111_1111_1100);
        w.put(1, 1);
        let (bs_code, bs_extra) = match n {
            192 => (1, None),
            576 | 1152 | 2304 | 4608 => (2 + (n / 576).trailing_zeros(), None),
            256 | 512 | 1024 | 2048 | 4096 | 8192 | 16384 | 32768 => {
                (8 + (n / 256).trailing_zeros(), None)
            }
            1..=256 => (6, Some((8, n - 1))),
            _ => (7, Some((16, n - 1))),
        };
        w.put(4, u64::from(bs_code));
        let rate = self.sample_rate;
        let (sr_code, sr_extra) = match rate {
            88_200 => (1, None),
            176_400 => (2, None),
            192_000 => (3, None),
            8_000 => (4, None),
            16_000 => (5, None),
            22_050 => (6, None),
            24_000 => (7, None),
            32_000 => (8, None),
            44_100 => (9, None),
            48_000 => (10, None),
            96_000 => (11, None),
            r if r % 1000 == 0 && r / 1000 <= 255 => (12, Some((8, r / 1000))),
            r if r <= 65_535 => (13, Some((16, r))),
            r if r % 10 == 0 && r / 10 <= 65_535 => (14, Some((16, r / 10))),
            // Not codable in a frame header: "see STREAMINFO".
            _ => (0, None),
        };
        w.put(4, sr_code);
        w.put(4, u64::from(assignment));
        w.put(3, 0b100); // 16 bits per sample
        w.put(1, 0);
        put_utf8(w, self.next_sample);
        if let Some((bits, v)) = bs_extra {
            w.put(bits, v as u64);
        }
        if let Some((bits, v)) = sr_extra {
            w.put(bits, u64::from(v));
        }
        // The header is whole bytes here; its CRC-8 covers all of it.
        let crc = crc8(w.bytes());
        w.put(8, u64::from(crc));
    }
}

/// How one subframe is coded, and its size in bits.
#[derive(Clone, Debug)]
struct Plan {
    bits: u64,
    kind: PlanKind,
    /// Trailing zero bits common to every sample, removed before coding.
    wasted: u32,
    /// Bits per sample of the subframe, after the wasted bits.
    bps: u32,
}

#[derive(Clone, Debug)]
enum PlanKind {
    Constant,
    Verbatim,
    Fixed {
        order: usize,
        partition_order: u32,
        params: Vec<u8>,
    },
}

/// Chooses the smallest coding of `x` (at `bps` bits per sample).
fn plan(x: &[i32], bps: u32, residual: &mut Vec<i32>) -> Plan {
    let n = x.len();
    let first = x.first().copied().unwrap_or(0);
    if x.iter().all(|&v| v == first) {
        return Plan {
            bits: 8 + u64::from(bps),
            kind: PlanKind::Constant,
            wasted: 0,
            bps,
        };
    }
    // Not constant, so some sample is non-zero and the OR has a lowest set bit.
    let wasted = x
        .iter()
        .fold(0, |a, &v| a | v)
        .trailing_zeros()
        .min(bps - 1);
    let sbps = bps - wasted;
    // Header: 8 bits, plus the unary wasted-bits count.
    let header = 8 + if wasted > 0 { u64::from(wasted) } else { 0 };
    let mut best = Plan {
        bits: header + n as u64 * u64::from(sbps),
        kind: PlanKind::Verbatim,
        wasted,
        bps: sbps,
    };
    for order in 0..=MAX_ORDER.min(n - 1) {
        fixed_residual(x, wasted, order, residual);
        let (rice_bits, partition_order, params) = rice_plan(residual, n, order);
        let bits = header + (order as u64) * u64::from(sbps) + 6 + rice_bits;
        if bits < best.bits {
            best = Plan {
                bits,
                kind: PlanKind::Fixed {
                    order,
                    partition_order,
                    params,
                },
                wasted,
                bps: sbps,
            };
        }
    }
    best
}

/// The residual of the FIXED predictor of `order` over `x >> wasted`, for samples
/// `order..`: `residual[i - order]`. 16-bit input (17 for a side channel) keeps every
/// value within ±2^21.
fn fixed_residual(x: &[i32], wasted: u32, order: usize, residual: &mut Vec<i32>) {
    residual.clear();
    let s = |i: usize| x[i] >> wasted;
    residual.extend((order..x.len()).map(|i| match order {
        0 => s(i),
        1 => s(i) - s(i - 1),
        2 => s(i) - 2 * s(i - 1) + s(i - 2),
        3 => s(i) - 3 * s(i - 1) + 3 * s(i - 2) - s(i - 3),
        _ => s(i) - 4 * s(i - 1) + 6 * s(i - 2) - 4 * s(i - 3) + s(i - 4),
    }));
}

fn zigzag(v: i32) -> u64 {
    u64::from(((v << 1) ^ (v >> 31)) as u32)
}

/// The highest partition order allowed for `n` samples and a predictor of `order`: the
/// block divides evenly and the first partition is longer than the warm-up.
fn max_partition_order(n: usize, order: usize) -> u32 {
    let mut p = 0;
    while p < MAX_PARTITION_ORDER && n.is_multiple_of(1 << (p + 1)) && (n >> (p + 1)) > order {
        p += 1;
    }
    p
}

/// The best Rice partitioning of a residual (samples `order..n` of the block): its size
/// in bits (after the 6-bit method and order fields), the partition order and each
/// partition's parameter.
fn rice_plan(residual: &[i32], n: usize, order: usize) -> (u64, u32, Vec<u8>) {
    let max_p = max_partition_order(n, order);
    let parts = 1usize << max_p;
    let len = n >> max_p;
    // sums[j][k] = Σ (u >> k) over the finest partition j; counts[j] its sample count.
    let mut sums = vec![[0u64; MAX_RICE + 1]; parts];
    let mut counts = vec![0u64; parts];
    for (j, (s, c)) in sums.iter_mut().zip(&mut counts).enumerate() {
        let start = (j * len).max(order) - order;
        let end = (j + 1) * len - order;
        for &r in &residual[start..end] {
            let u = zigzag(r);
            for (k, acc) in s.iter_mut().enumerate() {
                *acc += u >> k;
            }
        }
        *c = (end - start) as u64;
    }
    let mut best: Option<(u64, u32, Vec<u8>)> = None;
    let mut p = max_p;
    loop {
        let mut bits = 0;
        let mut params = Vec::with_capacity(sums.len());
        for (s, &c) in sums.iter().zip(&counts) {
            let (k, cost) = (0..=MAX_RICE)
                .map(|k| (k, c * (k as u64 + 1) + s[k]))
                .min_by_key(|&(_, cost)| cost)
                .expect("a parameter");
            bits += 4 + cost;
            params.push(k as u8);
        }
        if best.as_ref().is_none_or(|b| bits <= b.0) {
            best = Some((bits, p, params));
        }
        if p == 0 {
            break;
        }
        p -= 1;
        // Merge neighbouring partitions into the next coarser order.
        sums = sums
            .chunks(2)
            .map(|pair| {
                let mut m = pair[0];
                for (a, b) in m.iter_mut().zip(&pair[1]) {
                    *a += b;
                }
                m
            })
            .collect();
        counts = counts.chunks(2).map(|pair| pair[0] + pair[1]).collect();
    }
    best.expect("partition order 0 is always tried")
}

fn write_subframe(w: &mut BitWriter, x: &[i32], p: &Plan, residual: &mut Vec<i32>) {
    let type_bits = match &p.kind {
        PlanKind::Constant => 0,
        PlanKind::Verbatim => 1,
        PlanKind::Fixed { order, .. } => 8 + *order as u64,
    };
    w.put(1, 0);
    w.put(6, type_bits);
    if p.wasted > 0 {
        w.put(1, 1);
        w.unary(p.wasted - 1);
    } else {
        w.put(1, 0);
    }
    match &p.kind {
        PlanKind::Constant => w.put_signed(p.bps, x.first().copied().unwrap_or(0)),
        PlanKind::Verbatim => {
            for &v in x {
                w.put_signed(p.bps, v >> p.wasted);
            }
        }
        PlanKind::Fixed {
            order,
            partition_order,
            params,
        } => {
            for &v in &x[..*order] {
                w.put_signed(p.bps, v >> p.wasted);
            }
            fixed_residual(x, p.wasted, *order, residual);
            w.put(2, 0); // 4-bit Rice parameters
            w.put(4, u64::from(*partition_order));
            let len = x.len() >> partition_order;
            let mut at = 0;
            for (j, &k) in params.iter().enumerate() {
                let count = if j == 0 { len - order } else { len };
                w.put(4, u64::from(k));
                for &r in &residual[at..at + count] {
                    let u = zigzag(r);
                    w.unary((u >> k) as u32);
                    w.put(u32::from(k), u & ((1 << k) - 1));
                }
                at += count;
            }
        }
    }
}

/// The frame header's "UTF-8" coded number (up to 36 bits: 1 to 7 bytes).
fn put_utf8(w: &mut BitWriter, v: u64) {
    if v < 0x80 {
        w.put(8, v);
        return;
    }
    // Bytes needed: a lead byte with 7 - n payload bits and n - 1 continuation bytes of 6.
    let n = (2..=7u32).find(|&n| v < 1 << (5 * n + 1)).unwrap_or(7);
    let lead = (0xFFu32 << (8 - n)) as u8;
    let top = (v >> (6 * (n - 1))) & ((1 << (7 - n)) - 1);
    w.put(8, u64::from(lead) | top);
    for i in (0..n - 1).rev() {
        w.put(8, 0x80 | ((v >> (6 * i)) & 0x3F));
    }
}

/// An MSB-first bit writer.
struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    /// Bits in `acc` not yet written (< 8 between calls).
    pending: u32,
}

impl BitWriter {
    fn with_capacity(bytes: usize) -> Self {
        BitWriter {
            out: Vec::with_capacity(bytes),
            acc: 0,
            pending: 0,
        }
    }

    /// Writes the low `bits` (0..=32) bits of `value`.
    fn put(&mut self, bits: u32, value: u64) {
        debug_assert!(bits <= 32);
        if bits == 0 {
            return;
        }
        self.acc = (self.acc << bits) | (value & ((1u64 << bits) - 1));
        self.pending += bits;
        while self.pending >= 8 {
            self.pending -= 8;
            self.out.push((self.acc >> self.pending) as u8);
        }
        self.acc &= (1u64 << self.pending) - 1;
    }

    fn put_signed(&mut self, bits: u32, value: i32) {
        self.put(bits, u64::from(value as u32));
    }

    /// `q` zero bits, then a one.
    fn unary(&mut self, mut q: u32) {
        while q >= 32 {
            self.put(32, 0);
            q -= 32;
        }
        self.put(q + 1, 1);
    }

    /// Pads with zero bits to a byte boundary.
    fn align(&mut self) {
        if self.pending > 0 {
            self.put(8 - self.pending, 0);
        }
    }

    /// The whole bytes written so far.
    fn bytes(&self) -> &[u8] {
        &self.out
    }

    fn into_bytes(mut self) -> Vec<u8> {
        self.align();
        self.out
    }
}

const fn crc8_table() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u8;
        let mut b = 0;
        while b < 8 {
            c = if c & 0x80 != 0 {
                (c << 1) ^ 0x07
            } else {
                c << 1
            };
            b += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

const fn crc16_table() -> [u16; 256] {
    let mut t = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = (i as u16) << 8;
        let mut b = 0;
        while b < 8 {
            c = if c & 0x8000 != 0 {
                (c << 1) ^ 0x8005
            } else {
                c << 1
            };
            b += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CRC8: [u8; 256] = crc8_table();
static CRC16: [u16; 256] = crc16_table();

/// CRC-8 of a frame header: polynomial x^8 + x^2 + x + 1, initial 0.
fn crc8(data: &[u8]) -> u8 {
    data.iter().fold(0, |c, &b| CRC8[usize::from(c ^ b)])
}

/// CRC-16 of a frame: polynomial x^16 + x^15 + x^2 + 1, initial 0.
fn crc16(data: &[u8]) -> u16 {
    data.iter()
        .fold(0, |c, &b| (c << 8) ^ CRC16[usize::from((c >> 8) as u8 ^ b)])
}

/// G.711 frames in, FLAC frames out: decode with the G.711 table, encode FLAC frames of
/// at most 20 ms. Short frames keep LL-HLS parts near PART-TARGET: a G.711 packet of 1024
/// samples (128 ms at 8 kHz, as ffmpeg packs it) made parts of 128 and 256 ms against a
/// 200 ms target, and hls.js stopped loading audio parts and stalled.
pub const G711_FLAC_FRAME_MS: u32 = 20;

/// Decodes G.711 with its table and encodes FLAC (see [`G711_FLAC_FRAME_MS`]).
#[derive(Debug)]
pub struct G711ToFlac {
    table: &'static [i16; 256],
    encoder: FlacEncoder,
    pcm: Vec<i16>,
}

impl G711ToFlac {
    /// `None` for a codec that is not G.711 or a stream FLAC cannot describe.
    pub fn new(codec: Codec, sample_rate: u32, channels: u32) -> Option<Self> {
        Some(G711ToFlac {
            table: g711::table(codec)?,
            encoder: FlacEncoder::new(sample_rate, channels)?
                .with_max_block((sample_rate * G711_FLAC_FRAME_MS / 1000) as usize),
            pcm: Vec::new(),
        })
    }

    pub fn stream_info(&self) -> StreamInfo {
        self.encoder.stream_info()
    }

    /// One G.711 frame (one byte per sample, channels interleaved) as FLAC frames with
    /// their sample counts: none for an empty frame, several for a frame longer than
    /// 20 ms. Never panics.
    pub fn transcode(&mut self, g711: &[u8]) -> Vec<(Bytes, u32)> {
        self.pcm.clear();
        g711::decode(self.table, g711, &mut self.pcm);
        self.encoder.encode(&self.pcm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crcs_match_the_reference_check_values() {
        // CRC-8/SMBUS and CRC-16/UMTS (a.k.a. BUYPASS) of "123456789".
        assert_eq!(crc8(b"123456789"), 0xF4);
        assert_eq!(crc16(b"123456789"), 0xFEE8);
    }

    #[test]
    fn utf8_numbers() {
        let enc = |v: u64| {
            let mut w = BitWriter::with_capacity(8);
            put_utf8(&mut w, v);
            w.into_bytes()
        };
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(0x7F), [0x7F]);
        assert_eq!(enc(0x80), [0xC2, 0x80]);
        assert_eq!(enc(0x7FF), [0xDF, 0xBF]);
        assert_eq!(enc(0x800), [0xE0, 0xA0, 0x80]);
        assert_eq!(enc(0xFFFF), [0xEF, 0xBF, 0xBF]);
        assert_eq!(enc(0x10000), [0xF0, 0x90, 0x80, 0x80]);
        assert_eq!(enc(0x7FFF_FFFF), [0xFD, 0xBF, 0xBF, 0xBF, 0xBF, 0xBF]);
        assert_eq!(
            enc(0xF_FFFF_FFFF),
            [0xFE, 0xBF, 0xBF, 0xBF, 0xBF, 0xBF, 0xBF]
        );
        assert_eq!(enc(0x8000_0000), [0xFE, 0x82, 0x80, 0x80, 0x80, 0x80, 0x80]);
    }

    /// A .flac byte stream: "fLaC", STREAMINFO as the last metadata block, the frames.
    fn flac_file(si: &StreamInfo, frames: &[(Bytes, u32)]) -> Vec<u8> {
        let mut f = b"fLaC".to_vec();
        f.extend_from_slice(&[0x80, 0, 0, 34]);
        f.extend_from_slice(&si.to_bytes());
        for (frame, _) in frames {
            f.extend_from_slice(frame);
        }
        f
    }

    /// Decodes with claxon: every block's first sample number and length, and the
    /// interleaved samples.
    fn claxon_decode(file: &[u8]) -> (Vec<(u64, u32)>, Vec<i16>) {
        let mut reader = claxon::FlacReader::new(std::io::Cursor::new(file)).expect("header");
        let channels = reader.streaminfo().channels;
        let mut blocks = Vec::new();
        let mut pcm = Vec::new();
        let mut frames = reader.blocks();
        let mut buffer = Vec::new();
        while let Some(block) = frames.read_next_or_eof(buffer).expect("a valid frame") {
            assert_eq!(block.channels(), channels);
            blocks.push((block.time(), block.duration()));
            for i in 0..block.duration() {
                for c in 0..channels {
                    pcm.push(i16::try_from(block.sample(c, i)).expect("16-bit"));
                }
            }
            buffer = block.into_buffer();
        }
        (blocks, pcm)
    }

    /// Encodes each chunk as one call, decodes the whole stream with claxon, checks the
    /// exact samples and the frames' sample numbers. Returns the encoded size in bytes.
    fn round_trip(channels: u32, chunks: &[Vec<i16>]) -> usize {
        let mut enc = FlacEncoder::new(8000, channels).unwrap();
        let mut frames = Vec::new();
        let mut expected = Vec::new();
        let mut lengths = Vec::new();
        for chunk in chunks {
            let got = enc.encode(chunk);
            let whole = chunk.len() / channels as usize * channels as usize;
            expected.extend_from_slice(&chunk[..whole]);
            let n: u32 = got.iter().map(|f| f.1).sum();
            assert_eq!(n as usize, whole / channels as usize);
            lengths.extend(got.iter().map(|f| f.1));
            frames.extend(got);
        }
        let file = flac_file(&enc.stream_info(), &frames);
        let (blocks, pcm) = claxon_decode(&file);
        assert!(
            pcm == expected,
            "{channels} channels: decoded samples differ"
        );
        let mut at = 0u64;
        for (&(time, len), &n) in blocks.iter().zip(&lengths) {
            assert_eq!((time, len), (at, n));
            at += u64::from(n);
        }
        assert_eq!(blocks.len(), lengths.len());
        frames.iter().map(|f| f.0.len()).sum()
    }

    /// A deterministic pseudo-random sequence (xorshift).
    fn noise(seed: u64, n: usize) -> Vec<i16> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as i16
            })
            .collect()
    }

    fn sine(n: usize, period: f64, amplitude: f64) -> Vec<i16> {
        (0..n)
            .map(|i| (amplitude * (i as f64 * std::f64::consts::TAU / period).sin()) as i16)
            .collect()
    }

    #[test]
    fn signals_round_trip_exactly_through_claxon() {
        let extremes: Vec<i16> = (0..500)
            .map(|i| if (i / 3) % 2 == 0 { i16::MAX } else { i16::MIN })
            .collect();
        let mut chunks = vec![
            sine(160, 40.0, 12000.0),
            vec![0; 160],
            vec![-7; 33],
            noise(1, 1024),
            extremes.clone(),
            sine(192, 17.0, 32767.0),
            sine(4608, 100.0, 3000.0),
            vec![5],
            vec![1, -1],
            sine(4096, 9.0, 20000.0).iter().map(|v| v & !7).collect(),
        ];
        // Every short length, and the block sizes with their own header codes.
        for n in (1..=40).chain([255, 256, 257, 576, 1023, 1152, 2304, 8192, 32768]) {
            chunks.push(
                sine(n, 23.0, 9000.0)
                    .iter()
                    .zip(noise(n as u64, n))
                    .map(|(s, r)| s + (r >> 10))
                    .collect(),
            );
        }
        round_trip(1, &chunks);
        // Stereo: the same material interleaved with a second, related channel, so each
        // decorrelation mode wins somewhere; extremes make a 17-bit side channel.
        let stereo: Vec<Vec<i16>> = chunks
            .iter()
            .enumerate()
            .map(|(k, c)| {
                c.iter()
                    .enumerate()
                    .flat_map(|(i, &v)| {
                        let other = match k % 4 {
                            0 => v,
                            1 => v.wrapping_neg(),
                            2 => v / 2 + (i as i16 & 3),
                            _ => noise(k as u64, 1)[0],
                        };
                        [v, other]
                    })
                    .collect()
            })
            .collect();
        round_trip(2, &stereo);
        // Opposite extremes in the two channels: a side channel of ±65535 (17 bits).
        let lr: Vec<i16> = extremes
            .iter()
            .flat_map(|&v| [v, if v == i16::MAX { i16::MIN } else { i16::MAX }])
            .collect();
        round_trip(2, &[lr]);
        for channels in [3, 6, 8] {
            let c: Vec<i16> = noise(channels as u64, 160 * channels as usize)
                .iter()
                .map(|v| v >> 4)
                .collect();
            round_trip(channels, &[c.clone(), vec![0; 16 * channels as usize], c]);
        }
    }

    #[test]
    fn g711_becomes_flac_frames_of_20_ms_at_most() {
        for (rate, packet, want) in [
            // ffmpeg's 1024-sample packets at 8 kHz: seven frames of 146 or 147.
            (8000, 1024, 7),
            // The usual RTP packet, 20 ms: one frame.
            (8000, 160, 1),
            (8000, 161, 2),
            (16000, 1000, 4),
        ] {
            let mut t = G711ToFlac::new(Codec::Mulaw, rate, 1).unwrap();
            let bytes: Vec<u8> = (0..=255u8).cycle().take(packet).collect();
            let frames = t.transcode(&bytes);
            let lens: Vec<u32> = frames.iter().map(|f| f.1).collect();
            assert_eq!(lens.iter().sum::<u32>() as usize, packet);
            assert!(lens.iter().all(|&n| n <= rate * 20 / 1000), "{lens:?}");
            let (lo, hi) = (lens.iter().min().unwrap(), lens.iter().max().unwrap());
            assert!(hi - lo <= 1, "{lens:?}");
            assert_eq!(lens.len(), want, "{rate} Hz, {packet}: {lens:?}");
        }
    }

    #[test]
    fn long_frames_are_split_and_odd_lengths_never_panic() {
        // Past 65535 samples: several frames, each ≤ MAX_BLOCK.
        let long = sine(MAX_BLOCK * 2 + 100, 80.0, 10000.0);
        let mut enc = FlacEncoder::new(8000, 1).unwrap();
        let frames = enc.encode(&long);
        // Near-equal frames rather than two full ones and a stub.
        assert_eq!(
            frames.iter().map(|f| f.1).collect::<Vec<_>>(),
            [43723, 43723, 43724]
        );
        round_trip(1, &[long]);
        // Empty input: no frame. An incomplete last set of channels is dropped.
        let mut t = G711ToFlac::new(Codec::Mulaw, 8000, 2).unwrap();
        assert!(t.transcode(&[]).is_empty());
        assert!(t.transcode(&[0x12]).is_empty());
        assert_eq!(t.transcode(&[1, 2, 3]).len(), 1);
        let bytes: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        for channels in 1..=8 {
            let mut t = G711ToFlac::new(Codec::Alaw, 8000, channels).unwrap();
            for len in 0..300 {
                let frames = t.transcode(&bytes[len..len * 2 + len % 7]);
                let n: u32 = frames.iter().map(|f| f.1).sum();
                assert_eq!(n as usize, (len + len % 7) / channels as usize);
            }
        }
    }

    /// Decodes testdata's G.711 with this crate's demuxer, transcodes frame by frame,
    /// decodes the FLAC with claxon: the PCM is exactly the G.711 table's.
    #[test]
    fn testdata_g711_round_trips() {
        use crate::ingest::mkv::{DemuxEvent, DemuxLimits, MkvDemuxer};
        for (file, codec) in [
            ("h264_mulaw.mkv", Codec::Mulaw),
            ("h264_alaw.mkv", Codec::Alaw),
        ] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("testdata")
                .join(file);
            let mut d = MkvDemuxer::new(DemuxLimits::default());
            d.feed(&std::fs::read(path).unwrap());
            let mut audio = None;
            let mut t = None;
            let mut frames = Vec::new();
            let mut expected = Vec::new();
            let mut g711_bytes = 0;
            while let Some(ev) = d.next_event().unwrap() {
                match ev {
                    DemuxEvent::Tracks(tracks) => {
                        let i = tracks.iter().position(|t| t.codec == codec).unwrap();
                        let a = tracks[i].audio.clone().unwrap();
                        t = G711ToFlac::new(codec, a.sample_rate as u32, a.channels);
                        audio = Some(i);
                    }
                    DemuxEvent::Frame(f) if Some(f.track) == audio => {
                        let t = t.as_mut().unwrap();
                        g711::decode(t.table, &f.data, &mut expected);
                        g711_bytes += f.data.len();
                        let got = t.transcode(&f.data);
                        let samples: u32 = got.iter().map(|g| g.1).sum();
                        assert_eq!(samples as usize, f.data.len());
                        assert!(got.iter().all(|g| g.1 <= 160), "20 ms at most");
                        frames.extend(got);
                    }
                    _ => {}
                }
            }
            let si = t.unwrap().stream_info();
            let (_, pcm) = claxon_decode(&flac_file(&si, &frames));
            assert!(pcm == expected, "{file}");
            let flac_bytes: usize = frames.iter().map(|f| f.0.len()).sum();
            // Lossless PCM of 8-bit G.711 cannot promise to be smaller than the G.711 (its
            // quantisation noise is the residual's floor): on this tone it is about as
            // big, plus a frame header and warm-up samples every 20 ms (~8 %). Bound it, to
            // catch a coding that stopped choosing well.
            assert!(
                flac_bytes * 100 < g711_bytes * 115,
                "{file}: {flac_bytes} ≥ 1.15 × {g711_bytes}"
            );
            eprintln!("{file}: G.711 {g711_bytes} bytes → FLAC {flac_bytes} bytes");
        }
    }

    #[test]
    fn rejects_what_flac_cannot_say() {
        assert!(FlacEncoder::new(8000, 0).is_none());
        assert!(FlacEncoder::new(8000, 9).is_none());
        assert!(FlacEncoder::new(0, 1).is_none());
        assert!(FlacEncoder::new(MAX_SAMPLE_RATE + 1, 1).is_none());
        assert!(G711ToFlac::new(Codec::Aac, 8000, 1).is_none());
        assert!(G711ToFlac::new(Codec::Alaw, 8000, 1).is_some());
    }
}

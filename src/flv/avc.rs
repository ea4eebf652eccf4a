//! H.264 in FLV: the AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.2.4.1), length-prefixed NAL units,
//! and just enough of the SPS (ITU-T H.264 §7.3.2.1) to report the picture size.

use bytes::Bytes;

use super::{FlvError, need};
use crate::media::AvcConfig;

pub const NAL_SPS: u8 = 7;
pub const NAL_PPS: u8 = 8;
pub const NAL_AUD: u8 = 9;
pub const NAL_IDR: u8 = 5;

pub fn parse_config(rec: &Bytes) -> Result<AvcConfig, FlvError> {
    need("AVCDecoderConfigurationRecord", rec, 6)?;
    if rec[0] != 1 {
        return Err(FlvError::BadAvcConfig("configurationVersion is not 1"));
    }
    let nal_length_size = (rec[4] & 3) + 1;
    if nal_length_size == 3 {
        return Err(FlvError::BadAvcConfig("NAL length size 3 is not allowed"));
    }
    let mut pos = 5;
    let sps_count = usize::from(rec[pos] & 0x1f);
    pos += 1;
    let sps = read_parameter_sets(rec, sps_count, &mut pos)?;
    need("PPS count", &rec[pos..], 1)?;
    let pps_count = usize::from(rec[pos]);
    pos += 1;
    let pps = read_parameter_sets(rec, pps_count, &mut pos)?;
    if sps.is_empty() {
        return Err(FlvError::BadAvcConfig("no SPS"));
    }
    let size = sps_picture_size(&sps[0]);
    Ok(AvcConfig {
        profile: rec[1],
        level: rec[3],
        nal_length_size,
        width: size.map(|s| s.0),
        height: size.map(|s| s.1),
        sps,
        pps,
    })
}

fn read_parameter_sets(rec: &Bytes, count: usize, pos: &mut usize) -> Result<Vec<Bytes>, FlvError> {
    let mut sets = Vec::with_capacity(count);
    for _ in 0..count {
        need("parameter set length", &rec[*pos..], 2)?;
        let len = usize::from(u16::from_be_bytes([rec[*pos], rec[*pos + 1]]));
        *pos += 2;
        need("parameter set", &rec[*pos..], len)?;
        if len > 0 {
            // A copy, not a slice: the record shares its buffer with other messages (`rtmp::blocks`), and
            // the parameter sets are kept for the whole publish.
            sets.push(Bytes::copy_from_slice(&rec[*pos..*pos + len]));
        }
        *pos += len;
    }
    Ok(sets)
}

/// Iterates the NAL units of an AVCC access unit, validating every length against the buffer.
pub fn nal_units(data: &[u8], length_size: u8) -> NalUnits<'_> {
    NalUnits { data, length_size: usize::from(length_size) }
}

#[derive(Clone)]
pub struct NalUnits<'a> {
    data: &'a [u8],
    length_size: usize,
}

impl<'a> Iterator for NalUnits<'a> {
    type Item = Result<&'a [u8], FlvError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.data.is_empty() {
            return None;
        }
        if self.data.len() < self.length_size {
            let remaining = self.data.len();
            self.data = &[];
            return Some(Err(FlvError::BadNalLength { len: self.length_size, remaining }));
        }
        let len = self.data[..self.length_size].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        let rest = &self.data[self.length_size..];
        if len > rest.len() {
            self.data = &[];
            return Some(Err(FlvError::BadNalLength { len, remaining: rest.len() }));
        }
        let (nal, tail) = rest.split_at(len);
        self.data = tail;
        Some(Ok(nal))
    }
}

/// Exp-Golomb reader over an RBSP with emulation-prevention bytes skipped on the fly.
struct Rbsp<'a> {
    data: &'a [u8],
    byte: usize,
    bit: u8,
    zeros: u8,
}

impl Rbsp<'_> {
    fn bit(&mut self) -> Option<u32> {
        if self.bit == 0 {
            // 0x000003 -> drop the 03.
            if self.zeros >= 2 && self.data.get(self.byte) == Some(&3) {
                self.byte += 1;
                self.zeros = 0;
            }
        }
        let b = *self.data.get(self.byte)?;
        let v = (b >> (7 - self.bit)) & 1;
        self.bit += 1;
        if self.bit == 8 {
            self.bit = 0;
            self.byte += 1;
            self.zeros = if b == 0 { self.zeros + 1 } else { 0 };
        }
        Some(u32::from(v))
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        (0..n).try_fold(0u32, |acc, _| Some((acc << 1) | self.bit()?))
    }

    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some((1u32 << zeros) - 1 + self.bits(zeros)?)
    }

    fn se(&mut self) -> Option<i32> {
        let k = self.ue()?;
        Some(if k % 2 == 1 { k.div_ceil(2) as i32 } else { -((k / 2) as i32) })
    }
}

/// Width and height in pixels from an SPS NAL unit (with its header byte), after cropping.
pub fn sps_picture_size(sps: &[u8]) -> Option<(u32, u32)> {
    let mut r = Rbsp { data: sps.get(1..)?, byte: 0, bit: 0, zeros: 0 };
    let profile_idc = r.bits(8)?;
    r.bits(16)?; // constraint flags + level_idc
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format_idc = 1;
    if matches!(profile_idc, 100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc == 3 {
            r.bit()?; // separate_colour_plane_flag
        }
        r.ue()?; // bit_depth_luma
        r.ue()?; // bit_depth_chroma
        r.bit()?; // qpprime_y_zero_transform_bypass_flag
        if r.bit()? == 1 {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit()? == 1 {
                    let size = if i < 6 { 16 } else { 64 };
                    let (mut last, mut next) = (8i32, 8i32);
                    for _ in 0..size {
                        if next != 0 {
                            next = (i64::from(last) + i64::from(r.se()?)).rem_euclid(256) as i32;
                        }
                        last = if next == 0 { last } else { next };
                    }
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    let poc_type = r.ue()?;
    if poc_type == 0 {
        r.ue()?;
    } else if poc_type == 1 {
        r.bit()?;
        r.se()?;
        r.se()?;
        for _ in 0..r.ue()? {
            r.se()?;
        }
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?; // gaps_in_frame_num_value_allowed_flag
    // Checked: the sizes are 32-bit codes from outside, and an absurd one must fail the parse, not the
    // arithmetic.
    let width_mbs = r.ue()?.checked_add(1)?;
    let height_map_units = r.ue()?.checked_add(1)?;
    let frame_mbs_only = r.bit()?;
    if frame_mbs_only == 0 {
        r.bit()?;
    }
    r.bit()?; // direct_8x8_inference_flag
    let (mut cl, mut cr, mut ct, mut cb) = (0, 0, 0, 0);
    if r.bit()? == 1 {
        cl = r.ue()?;
        cr = r.ue()?;
        ct = r.ue()?;
        cb = r.ue()?;
    }
    let (sub_w, sub_h) = match chroma_format_idc {
        1 => (2, 2),
        2 => (2, 1),
        _ => (1, 1),
    };
    let crop_x = sub_w;
    let crop_y = sub_h * (2 - frame_mbs_only);
    let crop = |a: u32, b: u32, unit: u32| a.checked_add(b)?.checked_mul(unit);
    let width = width_mbs.checked_mul(16)?.checked_sub(crop(cl, cr, crop_x)?)?;
    let height =
        height_map_units.checked_mul(16)?.checked_mul(2 - frame_mbs_only)?.checked_sub(crop(ct, cb, crop_y)?)?;
    Some((width, height))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bits into bytes, for hand-made SPSs.
    fn pack(bits: &str) -> Vec<u8> {
        let bits: Vec<u8> = bits.bytes().filter(|b| *b == b'0' || *b == b'1').map(|b| b - b'0').collect();
        bits.chunks(8).map(|c| c.iter().enumerate().fold(0u8, |acc, (i, b)| acc | (b << (7 - i)))).collect()
    }

    /// Found by the rtmp_session fuzz target: a width or height near 2^32 macroblocks overflowed.
    #[test]
    fn an_sps_with_an_absurd_picture_size_is_refused_not_overflowed() {
        let ue_max = format!("{}1{}", "0".repeat(31), "1".repeat(30) + "0");
        for (width, height) in [(ue_max.as_str(), "1"), ("1", ue_max.as_str())] {
            // Baseline profile, level 3.0, ids and orders 0, then the picture size, frame_mbs_only, no crop.
            let sps = pack(&format!("01100111 01000010 00000000 00011110 1 1 1 1 1 0 {width} {height} 1 1 0 1"));
            assert_eq!(sps_picture_size(&sps), None);
        }
        // Scaling-list deltas at the ends of their range (High profile) do not overflow either.
        let big_se = format!("{}1{}", "0".repeat(31), "1".repeat(31));
        let sps = pack(&format!("01100111 01100100 00000000 00011111 1 010 1 1 0 1 1 {big_se} {big_se}"));
        let _ = sps_picture_size(&sps);
    }

    // SPS/PPS of a 1280x720 High-profile stream made by ffmpeg's libx264 (ffmpeg -f lavfi -i testsrc=size=1280x720).
    const SPS_720P: &[u8] = &[
        0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00,
        0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x19, 0x60,
    ];

    fn record(sps: &[u8], pps: &[u8]) -> Bytes {
        let mut r = vec![1, sps[1], sps[2], sps[3], 0xff, 0xe1];
        r.extend_from_slice(&(sps.len() as u16).to_be_bytes());
        r.extend_from_slice(sps);
        r.push(1);
        r.extend_from_slice(&(pps.len() as u16).to_be_bytes());
        r.extend_from_slice(pps);
        Bytes::from(r)
    }

    #[test]
    fn a_record_yields_sps_pps_length_size_and_picture_size() {
        let c = parse_config(&record(SPS_720P, &[0x68, 0xeb, 0xe3, 0xcb])).unwrap();
        assert_eq!(c.nal_length_size, 4);
        assert_eq!(c.profile, 100);
        assert_eq!(c.sps.len(), 1);
        assert_eq!(&c.pps[0][..], &[0x68, 0xeb, 0xe3, 0xcb]);
        assert_eq!((c.width, c.height), (Some(1280), Some(720)));
    }

    #[test]
    fn truncated_records_are_errors_at_every_length() {
        let full = record(SPS_720P, &[0x68, 0xeb, 0xe3, 0xcb]);
        for n in 0..full.len() {
            assert!(parse_config(&full.slice(..n)).is_err(), "prefix of {n} bytes parsed");
        }
    }

    #[test]
    fn nal_units_are_split_by_length_and_overruns_are_errors() {
        let data = [0, 0, 0, 2, 0x65, 0xaa, 0, 0, 0, 1, 0x06];
        let nals: Vec<_> = nal_units(&data, 4).collect::<Result<_, _>>().unwrap();
        assert_eq!(nals, vec![&[0x65, 0xaa][..], &[0x06][..]]);
        let bad = [0, 0, 0, 9, 0x65];
        assert_eq!(nal_units(&bad, 4).next(), Some(Err(FlvError::BadNalLength { len: 9, remaining: 1 })));
        assert!(nal_units(&[0, 0], 4).next().unwrap().is_err());
    }
}

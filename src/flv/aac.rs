//! AAC: AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1) in, ADTS headers (§1.A.2.2) out.

use super::FlvError;
use crate::media::AacConfig;

const SAMPLE_RATES: [u32; 13] =
    [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350];

/// Size of the ADTS header we write (no CRC).
pub const ADTS_HEADER_LEN: usize = 7;
/// ADTS frame_length is 13 bits and includes the header.
pub const MAX_ADTS_PAYLOAD: usize = 0x1fff - ADTS_HEADER_LEN;

struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn read(&mut self, n: usize) -> Result<u32, FlvError> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = *self.data.get(self.pos / 8).ok_or(FlvError::BadAacConfig("truncated"))?;
            v = (v << 1) | u32::from((byte >> (7 - self.pos % 8)) & 1);
            self.pos += 1;
        }
        Ok(v)
    }

    fn object_type(&mut self) -> Result<u8, FlvError> {
        let t = self.read(5)?;
        Ok(if t == 31 { 32 + self.read(6)? } else { t } as u8)
    }

    fn sample_rate(&mut self) -> Result<(u8, u32), FlvError> {
        let index = self.read(4)? as u8;
        if index == 15 {
            // An explicit rate has no ADTS index; map it to the nearest one we can signal.
            let rate = self.read(24)?;
            let index =
                SAMPLE_RATES.iter().enumerate().min_by_key(|(_, r)| r.abs_diff(rate)).map_or(4, |(i, _)| i as u8);
            return Ok((index, rate));
        }
        let rate =
            *SAMPLE_RATES.get(usize::from(index)).ok_or(FlvError::BadAacConfig("reserved sampling frequency index"))?;
        Ok((index, rate))
    }
}

pub fn parse_config(asc: &[u8]) -> Result<AacConfig, FlvError> {
    let mut bits = Bits { data: asc, pos: 0 };
    let mut object_type = bits.object_type()?;
    let (sample_rate_index, sample_rate) = bits.sample_rate()?;
    let channel_config = bits.read(4)? as u8;
    // HE-AAC (SBR, 5) and HE-AACv2 (PS, 29) signal explicitly: the extension rate, then the core type.
    // ADTS carries the core (LC) profile and core rate; decoders find SBR/PS implicitly.
    if object_type == 5 || object_type == 29 {
        bits.sample_rate()?;
        object_type = bits.object_type()?;
    }
    if !(1..=4).contains(&object_type) {
        return Err(FlvError::BadAacConfig("audio object type cannot be carried in ADTS"));
    }
    if channel_config == 0 || channel_config > 7 {
        return Err(FlvError::BadAacConfig("channel configuration must be 1..7"));
    }
    Ok(AacConfig { object_type, sample_rate_index, sample_rate, channel_config })
}

/// The 7-byte ADTS header for one raw AAC frame of `payload_len` bytes.
pub fn adts_header(config: &AacConfig, payload_len: usize) -> Result<[u8; ADTS_HEADER_LEN], FlvError> {
    if payload_len > MAX_ADTS_PAYLOAD {
        return Err(FlvError::BadAacConfig("AAC frame too large for ADTS"));
    }
    let len = (payload_len + ADTS_HEADER_LEN) as u16;
    let profile = config.object_type - 1;
    let ch = config.channel_config;
    Ok([
        0xff,
        0xf1, // MPEG-4, layer 0, no CRC
        (profile << 6) | (config.sample_rate_index << 2) | (ch >> 2),
        ((ch & 3) << 6) | (len >> 11) as u8,
        (len >> 3) as u8,
        (((len & 7) as u8) << 5) | 0x1f,
        0xfc, // buffer fullness 0x7ff (VBR), one raw data block
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lc_stereo_44100_is_parsed_from_the_two_byte_config() {
        let c = parse_config(&[0x12, 0x10]).unwrap();
        assert_eq!(c, AacConfig { object_type: 2, sample_rate_index: 4, sample_rate: 44100, channel_config: 2 });
        assert_eq!(c.frame_ticks(), 2089);
    }

    #[test]
    fn he_aac_is_carried_as_its_lc_core() {
        // AOT 5 (SBR), core index 6 (24 kHz), stereo, extension index 3 (48 kHz), core AOT 2.
        let c = parse_config(&[0x2b, 0x11, 0x88, 0x00]).unwrap();
        assert_eq!(c.object_type, 2);
        assert_eq!(c.sample_rate, 24000);
    }

    #[test]
    fn adts_header_matches_a_known_ffmpeg_header() {
        // ffmpeg -c:a aac -ar 44100 -ac 2 writes FF F1 50 80 xx xx FC for LC stereo 44.1 kHz.
        let c = parse_config(&[0x12, 0x10]).unwrap();
        let h = adts_header(&c, 371 - 7).unwrap();
        assert_eq!(h, [0xff, 0xf1, 0x50, 0x80, 0x2e, 0x7f, 0xfc]);
        let frame_len = ((u32::from(h[3]) & 3) << 11) | (u32::from(h[4]) << 3) | (u32::from(h[5]) >> 5);
        assert_eq!(frame_len, 371);
    }

    #[test]
    fn bad_configs_are_errors() {
        assert!(parse_config(&[]).is_err());
        assert!(parse_config(&[0x12]).is_err());
        assert!(parse_config(&[0x12, 0x00]).is_err(), "channel config 0 (PCE) is not supported");
        assert!(parse_config(&[0x3a, 0x10]).is_err(), "object type 7 has no ADTS profile");
        let c = parse_config(&[0x12, 0x10]).unwrap();
        assert!(adts_header(&c, 9000).is_err());
    }
}

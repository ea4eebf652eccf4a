//! Reads a TS segment back with `mpeg2ts`'s reader and reports what a player would care about.
//!
//! Used by the tests (ours and end-to-end) and by tools that verify segments; it is deliberately built on
//! the independent `mpeg2ts` parser, not on our muxer's code.

use mpeg2ts::ts::{ReadTsPacket, TsPacketReader, TsPayload};

/// One reassembled PES.
#[derive(Debug, Clone)]
pub struct PesInfo {
    pub pid: u16,
    pub pts: Option<u64>,
    pub dts: Option<u64>,
    pub random_access: bool,
    pub payload: Vec<u8>,
}

#[derive(Debug, Default, Clone)]
pub struct Report {
    pub packets: usize,
    /// PIDs in order of the first two packets (should be PAT then PMT).
    pub first_pids: Vec<u16>,
    pub pmt_streams: Vec<(u16, u8)>,
    pub pcr_pid: Option<u16>,
    pub continuity_errors: usize,
    /// PCR values in 27 MHz units, in order.
    pub pcrs: Vec<u64>,
    pub pes: Vec<PesInfo>,
}

impl Report {
    pub fn video(&self) -> impl Iterator<Item = &PesInfo> {
        self.pes.iter().filter(|p| p.pid == super::VIDEO_PID)
    }

    pub fn audio(&self) -> impl Iterator<Item = &PesInfo> {
        self.pes.iter().filter(|p| p.pid == super::AUDIO_PID)
    }

    /// Largest gap between consecutive PCRs, in 90 kHz ticks.
    pub fn max_pcr_gap_90k(&self) -> u64 {
        self.pcrs.windows(2).map(|w| w[1].saturating_sub(w[0]) / 300).max().unwrap_or(0)
    }
}

pub fn inspect(segment: &[u8]) -> Result<Report, mpeg2ts::Error> {
    let mut reader = TsPacketReader::new(segment);
    let mut report = Report::default();
    let mut last_cc: std::collections::HashMap<u16, u8> = Default::default();
    let mut open: std::collections::HashMap<u16, usize> = Default::default();
    while let Some(packet) = reader.read_ts_packet()? {
        let pid = packet.header.pid.as_u16();
        if report.first_pids.len() < 2 {
            report.first_pids.push(pid);
        }
        report.packets += 1;
        if let Some(pcr) = packet.adaptation_field.as_ref().and_then(|af| af.pcr) {
            report.pcrs.push(pcr.as_u64());
        }
        let cc = packet.header.continuity_counter.as_u8();
        if packet.payload.is_some()
            && let Some(prev) = last_cc.insert(pid, cc)
            && (prev + 1) & 0x0f != cc
        {
            report.continuity_errors += 1;
        }
        match packet.payload {
            Some(TsPayload::Pmt(pmt)) => {
                report.pcr_pid = pmt.pcr_pid.map(|p| p.as_u16());
                report.pmt_streams =
                    pmt.es_info.iter().map(|e| (e.elementary_pid.as_u16(), e.stream_type as u8)).collect();
            }
            Some(TsPayload::PesStart(pes)) => {
                open.insert(pid, report.pes.len());
                report.pes.push(PesInfo {
                    pid,
                    pts: pes.header.pts.map(|t| t.as_u64()),
                    dts: pes.header.dts.map(|t| t.as_u64()),
                    random_access: packet.adaptation_field.as_ref().is_some_and(|af| af.random_access_indicator),
                    payload: pes.data.to_vec(),
                });
            }
            Some(TsPayload::PesContinuation(data)) => {
                if let Some(&i) = open.get(&pid) {
                    report.pes[i].payload.extend_from_slice(&data);
                }
            }
            _ => {}
        }
    }
    Ok(report)
}

/// NAL unit types of an Annex B access unit, in order.
pub fn annexb_nal_types(au: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    let mut i = 0;
    while i + 3 < au.len() {
        if au[i] == 0 && au[i + 1] == 0 && au[i + 2] == 1 {
            types.push(au[i + 3] & 0x1f);
            i += 3;
        } else {
            i += 1;
        }
    }
    types
}

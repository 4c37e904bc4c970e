//! Real Opus audio for the test client: a speech-like source and a decoding receiver.
//!
//! Audio goes through the SFU unchanged, but what it carries still matters: speaker detection
//! reads audio levels, browsers on the other side have to play it, and a packet mangled on the
//! way is only noticed if someone decodes it. So the sender encodes a synthetic voice (a
//! harmonic tone with a wandering pitch, formant weighting and a syllable-like on/off envelope)
//! with libopus, and the receiver decodes every packet, filling sequence gaps with Opus packet
//! loss concealment, and counts what it did.
//!
//! Nothing is embedded in the Opus payload, so the audio delay is *relative*: for each packet,
//! `arrival time - RTP timestamp / 48 kHz` is its transit time plus an unknown constant offset;
//! the report gives the percentiles of the transit time minus the smallest one seen on the same
//! stream (SSRC). It shows queueing and jitter added on the path, not the absolute latency
//! (the video frames carry a send time for that).
//!
//! Both halves are sans-I/O: the caller drives them at 20 ms intervals and passes times in.

use std::f64::consts::PI;
use std::time::Duration;

use rtc::rtp;

use crate::delay::DelaySamples;
use crate::seq::Unwrapper;

/// Sample rate of the synthetic voice and of the Opus RTP clock.
pub const SAMPLE_RATE: u32 = 48_000;
/// Duration of one Opus frame / RTP packet.
pub const FRAME_DURATION: Duration = Duration::from_millis(20);
/// Samples in one 20 ms frame at 48 kHz (mono).
pub const FRAME_SAMPLES: usize = 960;
/// Default Opus bitrate.
pub const DEFAULT_BITRATE_BPS: i32 = 32_000;
/// A sequence gap longer than this is concealed only this far (1 s of audio): a longer one is a
/// stream discontinuity, not loss worth synthesising.
pub const MAX_CONCEALED_PER_GAP: i64 = 50;

/// Largest decoded frame: 120 ms at 48 kHz.
const MAX_FRAME_SAMPLES: usize = 5760;
/// Largest Opus packet we let the encoder produce.
const MAX_PACKET_BYTES: usize = 1500;

/// An audio encoding or decoding failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AudioError {
    /// libopus refused to create a codec or to encode.
    #[error("opus: {0}")]
    Opus(#[from] opus::Error),
}

/// A deterministic speech-like signal, 48 kHz mono.
#[derive(Debug, Clone, Default)]
pub struct SpeechSynth {
    sample: u64,
    phase: f64,
    noise: u32,
}

impl SpeechSynth {
    /// A synthesiser at time zero.
    pub fn new() -> Self {
        Self { noise: 0x1234_5678, ..Self::default() }
    }

    /// Relative weight of a harmonic at `freq` Hz: three formant bumps over a small floor.
    fn formant_gain(freq: f64) -> f64 {
        let bump = |center: f64, width: f64| (-((freq - center) / width).powi(2)).exp();
        0.1 + bump(700.0, 250.0) + 0.6 * bump(1200.0, 300.0) + 0.3 * bump(2500.0, 400.0)
    }

    fn next_sample(&mut self) -> f64 {
        let t = self.sample as f64 / f64::from(SAMPLE_RATE);
        self.sample += 1;

        // Four syllables a second; every eighth is a pause.
        let syllables = t * 4.0;
        let index = syllables.floor() as u64;
        let within = syllables.fract();
        let envelope = if index % 8 == 7 { 0.0 } else { (PI * within).sin().powi(2) };

        // Pitch wanders around 130 Hz, different per syllable (intonation).
        let intonation = [0.0, 15.0, -10.0, 25.0, 5.0, -15.0, 10.0][(index % 7) as usize];
        let f0 = 130.0 + intonation + 8.0 * (2.0 * PI * 0.7 * t).sin();
        self.phase = (self.phase + 2.0 * PI * f0 / f64::from(SAMPLE_RATE)) % (2.0 * PI);

        let mut voiced = 0.0;
        for h in 1..=12 {
            let h = f64::from(h);
            voiced += Self::formant_gain(h * f0) / h * (h * self.phase).sin();
        }
        // A little breath noise (LCG), so the encoder sees a non-periodic component too.
        self.noise = self.noise.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let noise = f64::from(self.noise >> 8) / f64::from(1u32 << 24) * 2.0 - 1.0;

        envelope * (0.35 * voiced + 0.02 * noise)
    }

    /// The next 20 ms of signal.
    pub fn next_frame(&mut self) -> Vec<i16> {
        (0..FRAME_SAMPLES).map(|_| (self.next_sample() * 32767.0).clamp(-32768.0, 32767.0) as i16).collect()
    }
}

/// The synthetic voice, Opus-encoded: one packet per 20 ms.
pub struct AudioSource {
    synth: SpeechSynth,
    encoder: opus::Encoder,
    buf: Vec<u8>,
}

impl std::fmt::Debug for AudioSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioSource").field("synth", &self.synth).finish_non_exhaustive()
    }
}

impl AudioSource {
    /// A source encoding 48 kHz mono VoIP at `bitrate_bps`.
    pub fn new(bitrate_bps: i32) -> Result<Self, AudioError> {
        let mut encoder = opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)?;
        encoder.set_bitrate(opus::Bitrate::Bits(bitrate_bps))?;
        Ok(Self { synth: SpeechSynth::new(), encoder, buf: vec![0; MAX_PACKET_BYTES] })
    }

    /// Encodes the next 20 ms.
    pub fn next_packet(&mut self) -> Result<Vec<u8>, AudioError> {
        let pcm = self.synth.next_frame();
        let n = self.encoder.encode(&pcm, &mut self.buf)?;
        Ok(self.buf[..n].to_vec())
    }
}

/// Counters of one received audio track.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AudioStats {
    /// RTP packets received (late and duplicate ones included).
    pub packets_received: u64,
    /// Packets decoded successfully.
    pub packets_decoded: u64,
    /// Frames synthesised by packet loss concealment for sequence gaps.
    pub packets_concealed: u64,
    /// Packets that arrived after their slot was concealed, or twice; not decoded.
    pub packets_late: u64,
    /// Packets libopus could not decode.
    pub decode_errors: u64,
    /// Median relative delay in ms (see the module doc).
    pub delay_ms_p50: Option<f64>,
    /// 99th-percentile relative delay in ms.
    pub delay_ms_p99: Option<f64>,
}

/// Decodes one received Opus track and keeps [`AudioStats`].
///
/// Packets are decoded in arrival order. When a packet's sequence number jumps past the next
/// expected one, each missing packet is concealed first (at most [`MAX_CONCEALED_PER_GAP`]);
/// a packet older than the next expected one is counted late and dropped, as a jitter buffer
/// that has already played out its slot would. A new SSRC starts a new stream.
pub struct AudioReceiver {
    decoder: opus::Decoder,
    ssrc: Option<u32>,
    seq: Unwrapper,
    ts: Unwrapper,
    next_seq: Option<i64>,
    last_frame_samples: usize,
    pcm: Vec<i16>,
    stats: AudioStats,
    /// Transit times (ms, with an unknown offset), one list per SSRC.
    transit: Vec<DelaySamples>,
}

impl std::fmt::Debug for AudioReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioReceiver").field("stats", &self.stats).finish_non_exhaustive()
    }
}

impl AudioReceiver {
    /// A receiver with a 48 kHz mono decoder (stereo packets are down-mixed).
    pub fn new() -> Result<Self, AudioError> {
        Ok(Self {
            decoder: opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono)?,
            ssrc: None,
            seq: Unwrapper::new(),
            ts: Unwrapper::new(),
            next_seq: None,
            last_frame_samples: FRAME_SAMPLES,
            pcm: vec![0; MAX_FRAME_SAMPLES],
            stats: AudioStats::default(),
            transit: Vec::new(),
        })
    }

    /// The PCM of the last decoded or concealed frame.
    pub fn last_pcm(&self) -> &[i16] {
        &self.pcm[..self.last_frame_samples.min(self.pcm.len())]
    }

    fn conceal_one(&mut self) {
        let n = self.last_frame_samples.clamp(1, MAX_FRAME_SAMPLES);
        match self.decoder.decode(&[], &mut self.pcm[..n], false) {
            Ok(_) => self.stats.packets_concealed += 1,
            Err(_) => self.stats.decode_errors += 1,
        }
    }

    /// Takes one RTP packet received at `now_us` (µs since the UNIX epoch).
    pub fn handle_packet(&mut self, packet: &rtp::Packet, now_us: u64) {
        self.stats.packets_received += 1;
        if self.ssrc != Some(packet.header.ssrc) {
            self.ssrc = Some(packet.header.ssrc);
            self.seq = Unwrapper::new();
            self.ts = Unwrapper::new();
            self.next_seq = None;
            self.transit.push(DelaySamples::new());
            // A new stream: do not let the old one's state colour the first frames.
            let _ = self.decoder.reset_state();
        }
        let seq = self.seq.unwrap_u16(packet.header.sequence_number);
        if let Some(next) = self.next_seq {
            if seq < next {
                self.stats.packets_late += 1;
                return;
            }
            for _ in 0..(seq - next).min(MAX_CONCEALED_PER_GAP) {
                self.conceal_one();
            }
        }
        self.next_seq = Some(seq + 1);

        if packet.payload.is_empty() {
            self.conceal_one();
        } else {
            match self.decoder.decode(&packet.payload, &mut self.pcm, false) {
                Ok(n) => {
                    self.stats.packets_decoded += 1;
                    if n > 0 {
                        self.last_frame_samples = n;
                    }
                }
                Err(_) => self.stats.decode_errors += 1,
            }
        }

        let media_ms = self.ts.unwrap_u32(packet.header.timestamp) as f64 * 1000.0 / f64::from(SAMPLE_RATE);
        let transit_ms = now_us as f64 / 1000.0 - media_ms;
        if let Some(current) = self.transit.last_mut() {
            current.record(transit_ms);
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> AudioStats {
        let mut relative = DelaySamples::new();
        for stream in &self.transit {
            relative.extend(&stream.relative_to_min());
        }
        AudioStats {
            delay_ms_p50: relative.percentile(50.0),
            delay_ms_p99: relative.percentile(99.0),
            ..self.stats.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn rms(pcm: &[i16]) -> f64 {
        (pcm.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / pcm.len() as f64).sqrt()
    }

    /// `n` packets with sequence numbers from `first_seq`, 20 ms apart.
    fn packets(n: usize, first_seq: u16, ssrc: u32) -> Vec<rtp::Packet> {
        let mut src = AudioSource::new(DEFAULT_BITRATE_BPS).unwrap();
        (0..n)
            .map(|i| rtp::Packet {
                header: rtp::header::Header {
                    version: 2,
                    payload_type: 111,
                    sequence_number: first_seq.wrapping_add(i as u16),
                    timestamp: (i as u32).wrapping_mul(FRAME_SAMPLES as u32),
                    ssrc,
                    ..Default::default()
                },
                payload: Bytes::from(src.next_packet().unwrap()),
            })
            .collect()
    }

    #[test]
    fn synth_sounds_like_syllables() {
        let mut s = SpeechSynth::new();
        let frames: Vec<Vec<i16>> = (0..100).map(|_| s.next_frame()).collect();
        // 4 syllables/s = 12.5 frames per syllable; the middle of the first syllable is loud,
        // its edges and the pause (syllable 7, 1.75 s..2.0 s) are quiet.
        assert!(rms(&frames[6]) > 2000.0, "voiced rms {}", rms(&frames[6]));
        assert!(rms(&frames[0]) < rms(&frames[6]) / 4.0);
        assert!(rms(&frames[92]) < 1.0, "pause rms {}", rms(&frames[92]));
    }

    #[test]
    fn encode_decode_round_trip() {
        let mut src = AudioSource::new(DEFAULT_BITRATE_BPS).unwrap();
        let mut synth = SpeechSynth::new();
        let mut dec = opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono).unwrap();
        let mut out = vec![0i16; MAX_FRAME_SAMPLES];
        let (mut in_energy, mut out_energy) = (0.0, 0.0);
        for _ in 0..50 {
            let pkt = src.next_packet().unwrap();
            assert!(!pkt.is_empty() && pkt.len() < 400, "packet of {} bytes", pkt.len());
            let n = dec.decode(&pkt, &mut out, false).unwrap();
            assert_eq!(n, FRAME_SAMPLES);
            in_energy += rms(&synth.next_frame());
            out_energy += rms(&out[..n]);
        }
        // Lossy, but the loudness survives within a factor of two.
        let ratio = out_energy / in_energy;
        assert!((0.5..2.0).contains(&ratio), "energy ratio {ratio}");
    }

    #[test]
    fn receiver_scenarios() {
        struct Case {
            name: &'static str,
            first_seq: u16,
            order: Vec<usize>,
            // received, decoded, concealed, late
            expect: (u64, u64, u64, u64),
        }
        let all: Vec<usize> = (0..50).collect();
        let without = |skip: &[usize]| -> Vec<usize> { all.iter().copied().filter(|i| !skip.contains(i)).collect() };
        let mut swapped = all.clone();
        swapped.swap(20, 21);
        let cases = vec![
            Case { name: "clean", first_seq: 1000, order: all.clone(), expect: (50, 50, 0, 0) },
            Case { name: "seq wraps", first_seq: 65530, order: all.clone(), expect: (50, 50, 0, 0) },
            Case { name: "two lost", first_seq: 65530, order: without(&[5, 6]), expect: (48, 48, 2, 0) },
            Case { name: "first packets lost", first_seq: 7, order: without(&[0, 1]), expect: (48, 48, 0, 0) },
            Case { name: "reordered", first_seq: 7, order: swapped, expect: (50, 49, 1, 1) },
            Case {
                name: "duplicate",
                first_seq: 7,
                order: {
                    let mut o = all.clone();
                    o.insert(10, 9);
                    o
                },
                expect: (51, 50, 0, 1),
            },
        ];
        for case in cases {
            let pkts = packets(50, case.first_seq, 42);
            let mut rx = AudioReceiver::new().unwrap();
            for &i in &case.order {
                rx.handle_packet(&pkts[i], 1_000_000 + i as u64 * 20_000);
            }
            let s = rx.stats();
            assert_eq!(
                (s.packets_received, s.packets_decoded, s.packets_concealed, s.packets_late),
                case.expect,
                "{}",
                case.name
            );
            assert_eq!(s.decode_errors, 0, "{}", case.name);
        }
    }

    #[test]
    fn concealment_is_capped_and_new_ssrc_resets() {
        let a = packets(3, 0, 1);
        let b = packets(3, 500, 2);
        let mut rx = AudioReceiver::new().unwrap();
        rx.handle_packet(&a[0], 0);
        let mut far = a[1].clone();
        far.header.sequence_number = 1000;
        rx.handle_packet(&far, 0);
        assert_eq!(rx.stats().packets_concealed, MAX_CONCEALED_PER_GAP as u64);
        // Concealed output is audio-shaped, not garbage: the right length.
        assert_eq!(rx.last_pcm().len(), FRAME_SAMPLES);
        for p in &b {
            rx.handle_packet(p, 0);
        }
        let s = rx.stats();
        assert_eq!(s.packets_concealed, MAX_CONCEALED_PER_GAP as u64, "no PLC across SSRCs");
        assert_eq!(s.packets_decoded, 5);
    }

    #[test]
    fn relative_delay() {
        let pkts = packets(10, 0, 9);
        let mut rx = AudioReceiver::new().unwrap();
        // Arrivals: on time except packet 5, 30 ms late. Media time of packet i is 20*i ms.
        for (i, p) in pkts.iter().enumerate() {
            let extra = if i == 5 { 30_000 } else { 0 };
            rx.handle_packet(p, 7_000_000 + i as u64 * 20_000 + extra);
        }
        let s = rx.stats();
        assert_eq!(s.delay_ms_p50, Some(0.0));
        assert_eq!(s.delay_ms_p99, Some(30.0));
        assert_eq!(AudioReceiver::new().unwrap().stats().delay_ms_p50, None);
    }
}

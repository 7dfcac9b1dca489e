//! In-band DTMF: a Goertzel detector for 8 kHz 16-bit PCM that follows the usual ITU-T
//! Q.24 acceptance rules, and a tone generator for relaying digits as audio.
//!
//! # Block size
//!
//! The detector works on blocks of [`BLOCK`] = 106 samples (13.25 ms) and needs two
//! consecutive good blocks to accept a digit:
//! - any tone of 40 ms (320 samples, Q.24's shortest digit to accept) holds two whole
//!   blocks wherever it starts, because 3·N − 1 ≤ 320, i.e. N ≤ 107;
//! - a tone of 20 ms (160 samples) cannot fill two blocks, and a block it fills only
//!   partly fails the energy test (85 % of the block's energy in the two tones), so
//!   such tones are rejected;
//! - the larger N, the narrower each filter: at 106 the neighbouring rows (697 and
//!   770 Hz, 73 Hz apart) sit near each other's first null (8000 / 106 = 75.5 Hz),
//!   about 30 dB down.
//!
//! # Frequency tolerance
//!
//! A 106-sample filter is too wide to tell 1.5 % (accept) from 3.5 % (reject) by
//! magnitude: at 697 Hz that is 10 Hz against 24 Hz, both inside the main lobe. So the
//! detector measures each tone's frequency from the phase advance of its filter output
//! between two consecutive blocks (a tone Δf off the filter's frequency turns by
//! 2π·Δf·N/8000 per block), accepts within ±2.5 % (between Q.24's two limits) and
//! corrects the measured power for the filter's response at that offset. The phase is
//! unambiguous within ±37.7 Hz, which covers the low group's reject limit (33 Hz at
//! 941 Hz); high-group tones further off than that alias, but by then the filter has
//! lost more than 5 dB and the twist and energy tests reject them.
//!
//! # Talk-off
//!
//! Speech rarely puts 85 % of its energy into one row and one column
//! frequency for 26 ms, and when it is that tonal it is harmonic: the detector requires
//! both ([`DetectorConfig::min_energy_ratio`], [`DetectorConfig::max_harmonic_db`]).

use std::collections::VecDeque;
use std::f32::consts::PI;
use std::time::Duration;

use super::{Digit, DtmfEvent, DtmfSignal, DtmfSource, HIGH_GROUP, LOW_GROUP};

/// Samples per second the detector and the default generator work at.
pub const SAMPLE_RATE: u32 = 8000;
/// Goertzel block length (see the module docs for why 106).
pub const BLOCK: usize = 106;

/// Peak of a 0 dBm0 sine in 16-bit linear PCM: G.711's full scale (8159 in 14 bits,
/// 32,636 in 16) is +3.17 dBm0 (ITU-T G.711 Table 1/2 and G.168's usual reference).
const DBM0_PEAK: f32 = 22_767.0;

fn dbm0_to_power(dbm0: f32) -> f32 {
    // Mean square of a sine of that level.
    DBM0_PEAK * DBM0_PEAK / 2.0 * 10f32.powf(dbm0 / 10.0)
}

fn db_to_ratio(db: f32) -> f32 {
    10f32.powf(db / 10.0)
}

/// Acceptance rules. The defaults are the usual reading of ITU-T Q.24 (the North
/// American / Bellcore column where Q.24 lets administrations differ).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorConfig {
    /// Each tone at least this strong (dBm0). Q.24 asks for acceptance down to about
    /// −25 dBm0 per tone; −30 leaves margin for line loss.
    pub min_level_dbm0: f32,
    /// High tone louder than the low one by at most this (dB, "normal" twist).
    pub normal_twist_db: f32,
    /// Low tone louder than the high one by at most this (dB, "reverse" twist).
    pub reverse_twist_db: f32,
    /// Largest accepted frequency error, as a fraction: Q.24 wants acceptance within
    /// 1.5 % and rejection beyond 3.5 %; the cut is in between.
    pub freq_tolerance: f32,
    /// The two tones' share of the block's whole energy (talk-off, noise).
    pub min_energy_ratio: f32,
    /// Every other filter of the same group at least this far (dB) below the strongest.
    pub relative_peak_db: f32,
    /// Each tone's second harmonic at most this (dB) relative to the tone: DTMF is two
    /// pure sines, voiced speech is harmonic.
    pub max_harmonic_db: f32,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            min_level_dbm0: -30.0,
            normal_twist_db: 8.0,
            reverse_twist_db: 4.0,
            freq_tolerance: 0.025,
            min_energy_ratio: 0.85,
            relative_peak_db: 10.0,
            max_harmonic_db: -15.0,
        }
    }
}

/// What one block showed.
#[derive(Debug, Clone, Copy, Default)]
struct BlockInfo {
    /// Goertzel output per frequency (rows then columns), as (re, im).
    y: [(f32, f32); 8],
    /// Power of a sine at each frequency, as mean square.
    p: [f32; 8],
    /// Mean square of the block.
    energy: f32,
    /// Strongest row and column, when each stands out of its group.
    cand: Option<(usize, usize)>,
    /// Second-harmonic power of the candidate's row and column.
    harm: (f32, f32),
}

/// Where the detector is (Q.24's "digit present" logic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No digit; waiting for two good blocks.
    Idle,
    /// A digit was reported; `blocks` long so far, `misses` blocks without it in a row.
    On {
        digit: Digit,
        blocks: u32,
        misses: u32,
    },
}

/// Goertzel DTMF detector for one audio stream at 8 kHz (resample other rates first).
///
/// Feed PCM with [`InbandDetector::process`] in any slice sizes; read signals with
/// [`InbandDetector::poll_signal`]. A digit is reported (`Begin`) after two good blocks,
/// 26.5 ms of tone, so 27-40 ms after it starts; it ends after two blocks without it,
/// which any 40 ms pause contains, while a drop-out of 10 ms spoils at most one and is
/// bridged (Q.24's interruption rule).
#[derive(Debug)]
pub struct InbandDetector {
    config: DetectorConfig,
    min_power: f32,
    normal_twist: f32,
    reverse_twist: f32,
    relative_peak: f32,
    max_harmonic: f32,
    /// 2·cos(ω), cos(ω), sin(ω) per frequency; rows then columns.
    coeff: [f32; 8],
    cos: [f32; 8],
    sin: [f32; 8],
    /// ω·N wrapped to (−π, π]: the phase a tone exactly on frequency turns per block.
    turn: [f32; 8],
    /// Second-harmonic filters: 2·cos(2ω).
    harm_coeff: [f32; 8],
    buf: [f32; BLOCK],
    fill: usize,
    /// Sum of squares of the block's samples so far, exact.
    sum_sq: u64,
    prev: Option<BlockInfo>,
    state: State,
    out: VecDeque<DtmfSignal>,
}

fn wrap(phase: f32) -> f32 {
    let mut p = phase % (2.0 * PI);
    if p > PI {
        p -= 2.0 * PI;
    } else if p <= -PI {
        p += 2.0 * PI;
    }
    p
}

fn freq(i: usize) -> f32 {
    if i < 4 {
        LOW_GROUP[i]
    } else {
        HIGH_GROUP[i - 4]
    }
}

#[allow(clippy::cast_precision_loss)]
const N_F32: f32 = BLOCK as f32;

impl Default for InbandDetector {
    fn default() -> Self {
        InbandDetector::new(DetectorConfig::default())
    }
}

impl InbandDetector {
    #[must_use]
    pub fn new(config: DetectorConfig) -> InbandDetector {
        let fs = 8000.0f32;
        let mut d = InbandDetector {
            config,
            min_power: dbm0_to_power(config.min_level_dbm0),
            normal_twist: db_to_ratio(config.normal_twist_db),
            reverse_twist: db_to_ratio(config.reverse_twist_db),
            relative_peak: db_to_ratio(config.relative_peak_db),
            max_harmonic: db_to_ratio(config.max_harmonic_db),
            coeff: [0.0; 8],
            cos: [0.0; 8],
            sin: [0.0; 8],
            turn: [0.0; 8],
            harm_coeff: [0.0; 8],
            buf: [0.0; BLOCK],
            fill: 0,
            sum_sq: 0,
            prev: None,
            state: State::Idle,
            out: VecDeque::new(),
        };
        for i in 0..8 {
            let w = 2.0 * PI * freq(i) / fs;
            d.coeff[i] = 2.0 * w.cos();
            d.cos[i] = w.cos();
            d.sin[i] = w.sin();
            d.turn[i] = wrap(w * N_F32);
            d.harm_coeff[i] = 2.0 * (2.0 * w).cos();
        }
        d
    }

    /// Audio, 8 kHz mono.
    pub fn process(&mut self, pcm: &[i16]) {
        let mut rest = pcm;
        while !rest.is_empty() {
            // A whole run of the block at once (the loop vectorises), not sample by sample.
            let take = (BLOCK - self.fill).min(rest.len());
            let (run, later) = rest.split_at(take);
            let mut sum_sq = 0u64;
            for (d, &x) in self.buf[self.fill..self.fill + take].iter_mut().zip(run) {
                *d = f32::from(x);
                sum_sq += u64::from(x.unsigned_abs()) * u64::from(x.unsigned_abs());
            }
            self.sum_sq += sum_sq;
            self.fill += take;
            rest = later;
            if self.fill == BLOCK {
                self.fill = 0;
                let block = self.analyse();
                self.sum_sq = 0;
                self.step(block);
            }
        }
    }

    /// The next signal, in order.
    pub fn poll_signal(&mut self) -> Option<DtmfSignal> {
        self.out.pop_front()
    }

    /// Forgets the stream so far (a new stream, or after a gap in the audio); a digit
    /// in progress is ended.
    pub fn reset(&mut self) {
        if let State::On { digit, blocks, .. } = self.state {
            self.push_end(digit, blocks);
        }
        self.state = State::Idle;
        self.prev = None;
        self.fill = 0;
        self.sum_sq = 0;
    }

    /// The 8 Goertzel filters over the block, one pass (the inner loop over 8 lanes
    /// vectorises), then the second harmonics of the candidate only.
    ///
    /// A quiet block (silence, most of a call's audio) skips the filters: no filter can
    /// hear more than twice the block's mean square (|y|² ≤ N·Σx², Cauchy–Schwarz), so
    /// below half the candidate floor none reaches it, there is no candidate, and a
    /// block without one is never looked at again (its `y` and `p` only matter next to
    /// a candidate). Exactly what the full analysis would decide, for a fraction of it.
    fn analyse(&self) -> BlockInfo {
        // The floor a candidate's tones must reach (see below).
        let floor = self.min_power / 8.0;
        #[allow(clippy::cast_precision_loss)]
        let mean_sq = self.sum_sq as f32 / N_F32;
        // 4× rather than 2×: a margin for the filters' rounding.
        if mean_sq * 4.0 < floor {
            return BlockInfo {
                energy: mean_sq,
                ..BlockInfo::default()
            };
        }
        let mut s1 = [0f32; 8];
        let mut s2 = [0f32; 8];
        let mut energy = 0f32;
        for &x in &self.buf {
            energy += x * x;
            for i in 0..8 {
                let s0 = x + self.coeff[i] * s1[i] - s2[i];
                s2[i] = s1[i];
                s1[i] = s0;
            }
        }
        let mut info = BlockInfo {
            energy: energy / N_F32,
            ..BlockInfo::default()
        };
        // y = s[N−1] − e^{−jω}·s[N−2]; a sine of amplitude A gives |y| ≈ A·N/2, so its
        // mean square A²/2 is 2|y|²/N².
        let scale = 2.0 / (N_F32 * N_F32);
        for i in 0..8 {
            let re = s1[i] - s2[i] * self.cos[i];
            let im = s2[i] * self.sin[i];
            info.y[i] = (re, im);
            info.p[i] = (re * re + im * im) * scale;
        }
        let strongest = |p: &[f32]| -> Option<usize> {
            let (best, &pb) = p.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1))?;
            let clear = p
                .iter()
                .enumerate()
                .all(|(i, &pi)| i == best || pi * self.relative_peak <= pb);
            clear.then_some(best)
        };
        if let (Some(r), Some(c)) = (strongest(&info.p[..4]), strongest(&info.p[4..])) {
            // Below a quarter of the minimum even the largest correction for frequency
            // error cannot bring it up: skip the harmonic filters.
            if info.p[r] >= floor && info.p[4 + c] >= floor {
                info.cand = Some((r, c));
                info.harm = (
                    self.power_at(self.harm_coeff[r]),
                    self.power_at(self.harm_coeff[4 + c]),
                );
            }
        }
        info
    }

    /// One Goertzel filter over the block, as sine mean square.
    fn power_at(&self, coeff: f32) -> f32 {
        let (mut s1, mut s2) = (0f32, 0f32);
        for &x in &self.buf {
            let s0 = x + coeff * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        (s1 * s1 + s2 * s2 - coeff * s1 * s2) * 2.0 / (N_F32 * N_F32)
    }

    /// Frequency error (Hz) of the tone in filter `i`, from its phase turn between two
    /// consecutive blocks.
    fn freq_error(&self, prev: &BlockInfo, cur: &BlockInfo, i: usize) -> f32 {
        let (a, b) = cur.y[i];
        let (c, d) = prev.y[i];
        // cur · conj(prev)
        let turn = (b * c - a * d).atan2(a * c + b * d);
        wrap(turn - self.turn[i]) * 8000.0 / (2.0 * PI * N_F32)
    }

    /// The filter's power response to a tone `df` Hz off its frequency (Dirichlet
    /// kernel of the rectangular window).
    fn response(df: f32) -> f32 {
        Self::kernel(df).max(1e-3)
    }

    fn kernel(df: f32) -> f32 {
        let half = PI * df / 8000.0;
        if half.sin().abs() < 1e-6 {
            return 1.0;
        }
        let g = (N_F32 * half).sin() / (N_F32 * half.sin());
        g * g
    }

    /// Whether `prev` and `cur` together hold a valid digit: both blocks pass every
    /// rule, with the powers corrected for the measured frequency error.
    fn pair_digit(&self, prev: &BlockInfo, cur: &BlockInfo) -> Option<Digit> {
        let (r, c) = cur.cand?;
        if prev.cand != Some((r, c)) {
            return None;
        }
        let (ir, ic) = (r, 4 + c);
        let dfr = self.freq_error(prev, cur, ir);
        let dfc = self.freq_error(prev, cur, ic);
        if dfr.abs() > freq(ir) * self.config.freq_tolerance
            || dfc.abs() > freq(ic) * self.config.freq_tolerance
        {
            return None;
        }
        let (gr, gc) = (Self::response(dfr), Self::response(dfc));
        // Each second-harmonic filter also hears the digit's other tone through its
        // side lobes (2 × 697 = 1394 Hz is only 58 Hz from 1336 Hz): allow for that
        // leak, added in phase to the harmonic allowance, the worst case.
        let leak_r = Self::kernel(2.0 * freq(ir) - freq(ic) - dfc);
        let leak_c = Self::kernel(2.0 * freq(ic) - freq(ir) - dfr);
        let allowed = |tone: f32, other: f32, leak: f32| {
            let a = (tone * self.max_harmonic).sqrt() + (other * leak).sqrt();
            a * a
        };
        for b in [prev, cur] {
            let (pr, pc) = (b.p[ir] / gr, b.p[ic] / gc);
            let ok = pr >= self.min_power
                && pc >= self.min_power
                && pc <= pr * self.normal_twist
                && pr <= pc * self.reverse_twist
                && pr + pc >= b.energy * self.config.min_energy_ratio
                && b.harm.0 <= allowed(pr, pc, leak_r)
                && b.harm.1 <= allowed(pc, pr, leak_c);
            if !ok {
                return None;
            }
        }
        Digit::from_row_col(r, c)
    }

    /// Whether a digit already on is still there: looser than acceptance (Q.24 asks
    /// that a digit not be split by a short drop-out or a noisy block).
    fn still_present(&self, cur: &BlockInfo, digit: Digit) -> bool {
        let (r, c) = digit.row_col();
        cur.cand == Some((r, c))
            && cur.p[r] >= self.min_power / 4.0
            && cur.p[4 + c] >= self.min_power / 4.0
            && cur.p[r] + cur.p[4 + c] >= cur.energy * 0.4
    }

    fn step(&mut self, cur: BlockInfo) {
        let hit = self
            .prev
            .as_ref()
            .and_then(|prev| self.pair_digit(prev, &cur));
        self.state = match (self.state, hit) {
            (State::Idle, Some(d)) => {
                self.push_begin(d, 2);
                State::On {
                    digit: d,
                    blocks: 2,
                    misses: 0,
                }
            }
            (State::Idle, None) => State::Idle,
            (
                State::On {
                    digit,
                    blocks,
                    misses,
                },
                hit,
            ) => {
                if hit.is_some_and(|d| d != digit) {
                    // Another key with no pause we could see: end one, start the other.
                    self.push_end(digit, blocks);
                    let d = hit.unwrap_or(digit);
                    self.push_begin(d, 2);
                    State::On {
                        digit: d,
                        blocks: 2,
                        misses: 0,
                    }
                } else if hit == Some(digit) || self.still_present(&cur, digit) {
                    State::On {
                        digit,
                        blocks: blocks + misses + 1,
                        misses: 0,
                    }
                } else if misses + 1 >= 2 {
                    self.push_end(digit, blocks);
                    State::Idle
                } else {
                    State::On {
                        digit,
                        blocks,
                        misses: misses + 1,
                    }
                }
            }
        };
        self.prev = Some(cur);
    }

    fn blocks_duration(blocks: u32) -> Duration {
        Duration::from_micros(u64::from(blocks) * (BLOCK as u64) * 1_000_000 / 8000)
    }

    fn push_begin(&mut self, digit: Digit, blocks: u32) {
        self.out.push_back(DtmfSignal::Begin(DtmfEvent {
            digit,
            duration: Self::blocks_duration(blocks),
            source: DtmfSource::InBand,
        }));
    }

    fn push_end(&mut self, digit: Digit, blocks: u32) {
        self.out.push_back(DtmfSignal::End(DtmfEvent {
            digit,
            duration: Self::blocks_duration(blocks),
            source: DtmfSource::InBand,
        }));
    }
}

/// Per-tone send levels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ToneLevels {
    /// Low-group tone, dBm0.
    pub low_dbm0: f32,
    /// High-group tone, dBm0 (2 dB above the low one: the normal twist phones use to
    /// make up for the line's loss at higher frequencies).
    pub high_dbm0: f32,
}

impl Default for ToneLevels {
    fn default() -> Self {
        ToneLevels {
            low_dbm0: -7.0,
            high_dbm0: -5.0,
        }
    }
}

/// One queued press: tone, then the pause after it, in samples.
#[derive(Debug, Clone, Copy)]
struct Press {
    digit: Digit,
    on: u64,
    off: u64,
}

/// Writes DTMF tones into PCM, for a leg that negotiated no telephone-event: queue
/// presses with [`ToneGenerator::push`], then [`ToneGenerator::fill`] the leg's next
/// frames; while it is busy its output replaces the leg's audio.
#[derive(Debug)]
pub struct ToneGenerator {
    sample_rate: u32,
    amp: (f32, f32),
    queue: VecDeque<Press>,
    /// Samples of the front press already written.
    pos: u64,
}

impl ToneGenerator {
    #[must_use]
    pub fn new(sample_rate: u32, levels: ToneLevels) -> ToneGenerator {
        let amp = |dbm0: f32| DBM0_PEAK * 10f32.powf(dbm0 / 20.0);
        ToneGenerator {
            sample_rate: sample_rate.max(1),
            amp: (amp(levels.low_dbm0), amp(levels.high_dbm0)),
            queue: VecDeque::new(),
            pos: 0,
        }
    }

    fn samples(&self, d: Duration) -> u64 {
        u64::try_from(d.as_nanos() * u128::from(self.sample_rate) / 1_000_000_000)
            .unwrap_or(u64::MAX)
    }

    /// Queues a press: `on` of tone (at least 40 ms, Q.24), then `off` of silence (at
    /// least 40 ms, Q.24's shortest pause).
    pub fn push(&mut self, digit: Digit, on: Duration, off: Duration) {
        let min = Duration::from_millis(40);
        let press = Press {
            digit,
            on: self.samples(on.max(min)),
            off: self.samples(off.max(min)),
        };
        self.queue.push_back(press);
    }

    /// Nothing queued.
    #[must_use]
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty()
    }

    /// Writes tone and pause samples into the front of `out`; returns how many. Less
    /// than `out.len()` only when the queue ran out.
    pub fn fill(&mut self, out: &mut [i16]) -> usize {
        let mut n = 0;
        #[allow(clippy::cast_precision_loss)]
        let fs = self.sample_rate as f32;
        while n < out.len() {
            let Some(p) = self.queue.front().copied() else {
                break;
            };
            let (fl, fh) = p.digit.frequencies();
            let (wl, wh) = (2.0 * PI * fl / fs, 2.0 * PI * fh / fs);
            while n < out.len() && self.pos < p.on + p.off {
                out[n] = if self.pos < p.on {
                    // The phase from the sample index within the press, reduced modulo
                    // one second so f32 keeps its precision on long presses.
                    #[allow(clippy::cast_precision_loss)]
                    let t = (self.pos % u64::from(self.sample_rate)) as f32;
                    let v = self.amp.0 * (wl * t).sin() + self.amp.1 * (wh * t).sin();
                    #[allow(clippy::cast_possible_truncation)]
                    let s = v.clamp(-32_768.0, 32_767.0) as i16;
                    s
                } else {
                    0
                };
                self.pos += 1;
                n += 1;
            }
            if self.pos >= p.on + p.off {
                self.queue.pop_front();
                self.pos = 0;
            }
        }
        n
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

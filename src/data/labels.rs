//! Label converters (deep-text-recognition-benchmark's `CTCLabelConverter` and `AttnLabelConverter`): CTC
//! (blank = 0, characters at i + 1, decoding collapses repeats then drops blanks) and attention ([GO] = 0, [s] = 1,
//! characters at i + 2; targets `[GO] text [s]` padded with 0; decoding stops at the first [s]).

use crate::spec::arch::{Arch, Prediction};
use crate::spec::charset::Charset;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoding {
    Ctc,
    Attention,
}

impl Decoding {
    pub fn name(self) -> &'static str {
        match self {
            Decoding::Ctc => "ctc",
            Decoding::Attention => "attention",
        }
    }
}

/// Attention tokens.
pub const GO: i64 = 0;
pub const EOS: i64 = 1;

#[derive(Debug, Clone)]
pub struct LabelCodec {
    pub charset: Charset,
    pub decoding: Decoding,
    pub max_len: usize,
}

impl LabelCodec {
    pub fn from_arch(arch: &Arch) -> Self {
        let decoding = match arch.prediction {
            Prediction::Ctc { .. } => Decoding::Ctc,
            Prediction::Attention { .. } => Decoding::Attention,
        };
        LabelCodec { charset: arch.charset.clone(), decoding, max_len: arch.batch_max_length as usize }
    }

    fn offset(&self) -> i64 {
        match self.decoding {
            Decoding::Ctc => 1,
            Decoding::Attention => 2,
        }
    }

    pub fn num_classes(&self) -> usize {
        self.charset.len() + self.offset() as usize
    }

    /// Class of one character (must be in the charset: labels pass `Charset::normalize_label` first).
    fn class(&self, c: char) -> i64 {
        self.charset.index(c).expect("label was filtered against the charset") as i64 + self.offset()
    }

    /// CTC targets: all labels' classes concatenated, and each label's length.
    pub fn encode_ctc(&self, labels: &[String]) -> (Vec<i64>, Vec<i64>) {
        let mut targets = vec![];
        let mut lengths = vec![];
        for l in labels {
            let before = targets.len();
            targets.extend(l.chars().map(|c| self.class(c)));
            lengths.push((targets.len() - before) as i64);
        }
        (targets, lengths)
    }

    /// Attention targets `[b, max_len + 2]`, row-major: `[GO] text [s] 0...`.
    pub fn encode_attention(&self, labels: &[String]) -> Vec<i64> {
        let w = self.max_len + 2;
        let mut out = vec![0i64; labels.len() * w];
        for (row, l) in out.chunks_mut(w).zip(labels) {
            row[0] = GO;
            let mut n = 1;
            for c in l.chars().take(self.max_len) {
                row[n] = self.class(c);
                n += 1;
            }
            row[n] = EOS;
        }
        out
    }

    /// Text of one sample's per-step argmax classes, and how many steps it used (for confidence: every
    /// frame for CTC, up to and including [s] for attention).
    pub fn decode(&self, classes: &[i64]) -> (String, usize) {
        let chars = self.charset.chars();
        let ch = |k: i64| chars.get((k - self.offset()) as usize).copied();
        match self.decoding {
            Decoding::Ctc => {
                let mut s = String::new();
                let mut prev = -1;
                for &k in classes {
                    if k != prev && k != 0 {
                        s.extend(ch(k));
                    }
                    prev = k;
                }
                (s, classes.len())
            }
            Decoding::Attention => {
                let mut s = String::new();
                for (i, &k) in classes.iter().enumerate() {
                    if k == EOS {
                        return (s, i + 1);
                    }
                    if k != GO {
                        s.extend(ch(k));
                    }
                }
                (s, classes.len())
            }
        }
    }

    /// Reference confidence: the product of the per-step maximum probabilities over the steps `decode` used.
    pub fn confidence(max_probs: &[f32], used_steps: usize) -> f32 {
        max_probs.iter().take(used_steps).product()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(d: Decoding) -> LabelCodec {
        LabelCodec { charset: Charset::default_lowercase(), decoding: d, max_len: 25 }
    }

    #[test]
    fn ctc_round_trip_and_collapse() {
        let c = codec(Decoding::Ctc);
        assert_eq!(c.num_classes(), 37);
        let (t, l) = c.encode_ctc(&["ab0".into(), "zz".into()]);
        assert_eq!(t, vec![11, 12, 1, 36, 36]);
        assert_eq!(l, vec![3, 2]);
        // "zz" needs a blank between the repeats; "a a" collapses.
        assert_eq!(c.decode(&[0, 11, 11, 0, 12, 1, 1, 0]).0, "ab0");
        assert_eq!(c.decode(&[36, 0, 36]).0, "zz");
        assert_eq!(c.decode(&[36, 36]).0, "z");
    }

    #[test]
    fn attention_round_trip() {
        let c = codec(Decoding::Attention);
        assert_eq!(c.num_classes(), 38);
        let t = c.encode_attention(&["hi".into()]);
        assert_eq!(&t[..5], &[0, 19, 20, 1, 0]);
        assert_eq!(t.len(), 27);
        // Decoding reads the shifted targets (text[1:]) back.
        assert_eq!(c.decode(&t[1..]), ("hi".to_string(), 3));
        assert_eq!(LabelCodec::confidence(&[0.5, 0.5, 1.0, 0.1], 3), 0.25);
    }
}

//! Character sets and label normalisation (deep-text-recognition-benchmark's label converters and LMDB label
//! filter).

use super::file::CharsetSpec;

/// The reference default: digits then lowercase letters (36 characters).
pub const LOWERCASE_ALNUM: &str = "0123456789abcdefghijklmnopqrstuvwxyz";

/// The reference `--sensitive` set: Python's `string.printable[:-6]` (94 characters, no whitespace).
pub const PRINTABLE_94: &str = concat!(
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
);

/// An ordered, duplicate-free set of characters; class index = position (heads add their own special tokens).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charset {
    chars: Vec<char>,
    case_sensitive: bool,
}

/// The most characters a charset may hold (keeps class counts, and so every count, in range).
pub const MAX_CLASSES: usize = 65_536;

impl Charset {
    pub fn default_lowercase() -> Self {
        Charset { chars: LOWERCASE_ALNUM.chars().collect(), case_sensitive: false }
    }

    /// Builds the set a spec asks for; the error text describes the problem in `chars`.
    pub fn from_spec(spec: &CharsetSpec) -> Result<Self, String> {
        let default = if spec.case_sensitive { PRINTABLE_94 } else { LOWERCASE_ALNUM };
        let text = spec.chars.as_deref().unwrap_or(default);
        let chars: Vec<char> = text.chars().collect();
        if chars.is_empty() {
            return Err("must not be empty".into());
        }
        if chars.len() > MAX_CLASSES {
            return Err(format!("{} characters; at most {MAX_CLASSES} (every character is a class of the head)", chars.len()));
        }
        let mut seen = std::collections::HashSet::new();
        let dups: String = chars.iter().filter(|c| !seen.insert(**c)).collect();
        if !dups.is_empty() {
            return Err(format!("duplicate characters {dups:?}"));
        }
        if let Some(c) = chars.iter().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{c:?}: whitespace and control characters cannot be classes"));
        }
        if !spec.case_sensitive {
            let upper: String = chars.iter().filter(|c| c.is_uppercase()).collect();
            if !upper.is_empty() {
                return Err(format!(
                    "{upper:?}: uppercase characters never match because labels are lowercased; \
                     set charset.case_sensitive: true to keep case"
                ));
            }
        }
        Ok(Charset { chars, case_sensitive: spec.case_sensitive })
    }

    pub fn len(&self) -> usize {
        self.chars.len()
    }
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }
    pub fn chars(&self) -> &[char] {
        &self.chars
    }
    pub fn as_string(&self) -> String {
        self.chars.iter().collect()
    }
    pub fn case_sensitive(&self) -> bool {
        self.case_sensitive
    }
    /// Position of `c` in the set.
    pub fn index(&self, c: char) -> Option<usize> {
        self.chars.iter().position(|&x| x == c)
    }

    /// The reference's label filter: lowercase unless case-sensitive, then keep the label only when it is
    /// non-empty, at most `max_len` characters, and every character is in the set.
    pub fn normalize_label(&self, label: &str, max_len: usize) -> Option<String> {
        let label = if self.case_sensitive { label.to_string() } else { label.to_lowercase() };
        let n = label.chars().count();
        (n > 0 && n <= max_len && label.chars().all(|c| self.index(c).is_some())).then_some(label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_have_reference_sizes() {
        assert_eq!(Charset::from_spec(&CharsetSpec::default()).unwrap().len(), 36);
        let cs = Charset::from_spec(&CharsetSpec { chars: None, case_sensitive: true }).unwrap();
        assert_eq!(cs.len(), 94);
    }

    #[test]
    fn label_filter_follows_reference() {
        let cs = Charset::default_lowercase();
        assert_eq!(cs.normalize_label("HeLLo", 25).as_deref(), Some("hello"));
        assert_eq!(cs.normalize_label("can't", 25), None);
        assert_eq!(cs.normalize_label(&"a".repeat(26), 25), None);
        assert_eq!(cs.normalize_label("", 25), None);
    }

    #[test]
    fn rejects_bad_sets() {
        let bad = |s: &str, cs: bool| Charset::from_spec(&CharsetSpec { chars: Some(s.into()), case_sensitive: cs });
        assert!(bad("abca", false).unwrap_err().contains("duplicate"));
        assert!(bad("abC", false).unwrap_err().contains("case_sensitive"));
        assert!(bad("ab c", true).unwrap_err().contains("whitespace"));
        assert!(bad("abC", true).is_ok());
    }
}

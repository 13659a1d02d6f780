//! `StartWait` filters: which readers' cards a waiting client hears about.
//!
//! A reader matches when (reader flags AND mask) = (flags AND mask), the flags taken as
//! sets of words compared without regard to case. An empty mask matches every reader.

use std::collections::BTreeSet;

/// The `flags` and `mask` of a `StartWait`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WaitFilter {
    flags: BTreeSet<String>,
    mask: BTreeSet<String>,
}

fn word_set<S: AsRef<str>>(words: &[S]) -> BTreeSet<String> {
    words
        .iter()
        .map(|w| w.as_ref().trim().to_ascii_uppercase())
        .filter(|w| !w.is_empty())
        .collect()
}

impl WaitFilter {
    /// A filter from the request's `flags` and `mask`.
    pub fn new<S: AsRef<str>, T: AsRef<str>>(flags: &[S], mask: &[T]) -> WaitFilter {
        WaitFilter {
            flags: word_set(flags),
            mask: word_set(mask),
        }
    }

    /// True when a reader with `reader_flags` matches.
    pub fn matches<S: AsRef<str>>(&self, reader_flags: &[S]) -> bool {
        let reader = word_set(reader_flags);
        self.mask
            .iter()
            .all(|m| reader.contains(m) == self.flags.contains(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_mask_matches_everything() {
        let f = WaitFilter::new(&["KEYPAD"], &[] as &[&str]);
        assert!(f.matches(&[] as &[&str]));
        assert!(f.matches(&["DISPLAY"]));
    }

    #[test]
    fn masked_flags_must_agree() {
        // Wants a keypad, does not care about a display.
        let f = WaitFilter::new(&["keypad"], &["KEYPAD"]);
        assert!(f.matches(&["KEYPAD"]));
        assert!(f.matches(&["Keypad", "DISPLAY"]));
        assert!(!f.matches(&["DISPLAY"]));
        // Wants no keypad.
        let f = WaitFilter::new(&[] as &[&str], &["KEYPAD"]);
        assert!(!f.matches(&["KEYPAD"]));
        assert!(f.matches(&["DISPLAY"]));
        // Both in the mask, only a display wanted.
        let f = WaitFilter::new(&["DISPLAY", "KEYPAD"], &["DISPLAY", "KEYPAD"]);
        assert!(f.matches(&["KEYPAD", "DISPLAY"]));
        assert!(!f.matches(&["DISPLAY"]));
        // Flags outside the mask are ignored.
        let f = WaitFilter::new(&["KEYPAD", "DISPLAY"], &["DISPLAY"]);
        assert!(f.matches(&["DISPLAY"]));
    }
}

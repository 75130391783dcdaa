//! The MAC address of a phone: the key of everything deskboot knows about it.
//!
//! Phones, administrators and CSV files write MACs in four forms; all parse to
//! one [`Mac`], stored as six bytes and printed in whichever form a vendor's
//! file names need. The parser is strict on purpose: a MAC that is half-right
//! would point a configuration, and its SIP password, at the wrong phone.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A MAC address. `Display` is the canonical lower-case bare form (`001565aabbcc`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac([u8; 6]);

/// Why a string is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MacError {
    /// The string has none of the accepted lengths.
    #[error(
        "a MAC address has 12 hex digits, written 001565aabbcc, 00:15:65:aa:bb:cc, 00-15-65-aa-bb-cc or 0015.65aa.bbcc (got {0} characters)"
    )]
    Length(usize),
    /// A character that is not a hex digit where a digit belongs.
    #[error("'{found}' at position {position} is not a hex digit")]
    NotHex {
        /// Where in the text, from 0.
        position: usize,
        /// The character found there.
        found: char,
    },
    /// A separator missing, or not the same all along.
    #[error("expected '{expected}' at position {position}, found '{found}'")]
    Separator {
        /// Where in the text, from 0.
        position: usize,
        /// The separator that belongs there.
        expected: char,
        /// The character found there.
        found: char,
    },
}

impl Mac {
    /// The six bytes, e.g. for a store key.
    pub fn bytes(&self) -> [u8; 6] {
        self.0
    }

    /// Builds a MAC from its six bytes.
    pub fn from_bytes(bytes: [u8; 6]) -> Self {
        Mac(bytes)
    }

    /// `001565aabbcc`: Yealink, Fanvil, Grandstream file names.
    pub fn lower(&self) -> String {
        self.to_string()
    }

    /// `001565AABBCC`: Snom, Aastra, Cisco `SEP` file names.
    pub fn upper(&self) -> String {
        self.lower().to_ascii_uppercase()
    }

    /// `00:15:65:aa:bb:cc`: User-Agents and admin screens.
    pub fn colon(&self) -> String {
        let parts: Vec<String> = self.0.iter().map(|b| format!("{b:02x}")).collect();
        parts.join(":")
    }

    /// The first three bytes (the vendor's OUI) as lower-case hex.
    pub fn oui(&self) -> String {
        self.lower()[..6].to_string()
    }
}

impl FromStr for Mac {
    type Err = MacError;

    fn from_str(s: &str) -> Result<Self, MacError> {
        let chars: Vec<char> = s.chars().collect();
        // The digit positions for each accepted layout; every other position
        // must hold the layout's separator.
        let (separator, digit_positions): (Option<char>, Vec<usize>) = match chars.len() {
            12 => (None, (0..12).collect()),
            17 => {
                let sep = chars[2];
                if sep != ':' && sep != '-' {
                    return Err(MacError::Separator {
                        position: 2,
                        expected: ':',
                        found: sep,
                    });
                }
                (Some(sep), (0..17).filter(|i| i % 3 != 2).collect())
            }
            14 => (Some('.'), (0..14).filter(|i| i % 5 != 4).collect()),
            n => return Err(MacError::Length(n)),
        };
        let mut digits = String::with_capacity(12);
        for (position, &c) in chars.iter().enumerate() {
            if digit_positions.contains(&position) {
                if !c.is_ascii_hexdigit() {
                    return Err(MacError::NotHex { position, found: c });
                }
                digits.push(c);
            } else if let Some(expected) = separator.filter(|&sep| sep != c) {
                return Err(MacError::Separator {
                    position,
                    expected,
                    found: c,
                });
            }
        }
        let mut bytes = [0u8; 6];
        for (i, byte) in bytes.iter_mut().enumerate() {
            // Checked above: every digit is ASCII hex.
            *byte = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16)
                .map_err(|_| MacError::Length(chars.len()))?;
        }
        Ok(Mac(bytes))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mac({self})")
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_the_four_forms_in_any_case() {
        let expected: Mac = "001565aabbcc".parse().unwrap();
        for s in [
            "00:15:65:AA:BB:CC",
            "00-15-65-aa-bb-cc",
            "0015.65aa.bbcc",
            "001565AABBCC",
            "00:15:65:aA:Bb:cC",
        ] {
            assert_eq!(s.parse::<Mac>(), Ok(expected), "{s}");
        }
    }

    #[test]
    fn rejects_what_other_parsers_let_through() {
        for s in [
            "+01565aabbcc",
            "001:002:003:004:0",
            "0:1:2:3:4:5:6:7:8",
            "00:15-65:aa-bb:cc",
            "001565aabbc",
            "001565aabbccd",
            "0x1565aabbcc",
            " 001565aabbcc",
            "001565aabbcc\n",
            "00156.5aabb.cc",
            "",
            "00:15:65:aa:bb:çc",
        ] {
            assert!(s.parse::<Mac>().is_err(), "{s:?} should be refused");
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let err = "00:15:65:aa:bb:zz".parse::<Mac>().unwrap_err();
        assert_eq!(err.to_string(), "'z' at position 15 is not a hex digit");
        let err = "00:15-65:aa:bb:cc".parse::<Mac>().unwrap_err();
        assert_eq!(err.to_string(), "expected ':' at position 5, found '-'");
    }

    #[test]
    fn renders_vendor_forms() {
        let mac: Mac = "00:15:65:AA:BB:CC".parse().unwrap();
        assert_eq!(mac.lower(), "001565aabbcc");
        assert_eq!(mac.upper(), "001565AABBCC");
        assert_eq!(mac.colon(), "00:15:65:aa:bb:cc");
        assert_eq!(mac.oui(), "001565");
    }

    proptest! {
        #[test]
        fn every_rendered_form_parses_back(bytes in any::<[u8; 6]>()) {
            let mac = Mac::from_bytes(bytes);
            let b = mac.lower();
            let dotted = format!("{}.{}.{}", &b[0..4], &b[4..8], &b[8..12]);
            let dashed = mac.colon().replace(':', "-").to_uppercase();
            for form in [mac.lower(), mac.upper(), mac.colon(), dotted, dashed] {
                prop_assert_eq!(form.parse::<Mac>(), Ok(mac));
            }
        }

        #[test]
        fn arbitrary_strings_never_panic(s in "\\PC{0,20}") {
            let _ = s.parse::<Mac>();
        }
    }
}

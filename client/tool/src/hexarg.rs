//! Command APDUs given in hex on the command line.
//!
//! The words of the command line are read as follows:
//! - `,` or `;` (as a word of its own or inside a word) separates APDUs:
//!   `00 A4 00 0C 02 3F 00 , 00 B0 00 00 00` or `"00A4000C023F00; 00B0000000"`;
//! - between separators, if every word is two characters long (a byte), the words are one
//!   APDU: `00 A4 00 0C 02 3F 00`;
//! - else each word is one APDU: `00A4000C023F00 00B0000000`, or `"00 A4 00 0C 02 3F 00"`
//!   as one quoted word.
//!
//! Within an APDU, blanks and `:` are ignored; hex digits may be in either case.

/// The shortest APDU: CLA INS P1 P2.
const MIN_APDU: usize = 4;

/// Parses the hex words of the `apdu` subcommand into command APDUs.
pub fn parse_apdus(words: &[String]) -> Result<Vec<Vec<u8>>, String> {
    if words.is_empty() {
        return Err("no APDU given".into());
    }
    // Cut the words at the separators into segments of fragments.
    let mut segments: Vec<Vec<&str>> = vec![Vec::new()];
    for word in words {
        for (i, piece) in word.split([',', ';']).enumerate() {
            if i > 0 {
                segments.push(Vec::new());
            }
            let piece = piece.trim();
            if let (false, Some(segment)) = (piece.is_empty(), segments.last_mut()) {
                segment.push(piece);
            }
        }
    }
    let mut texts: Vec<String> = Vec::new();
    for segment in &segments {
        if segment.is_empty() || segment.iter().all(|f| f.chars().count() == 2) {
            texts.push(segment.join(" "));
        } else {
            texts.extend(segment.iter().map(|f| (*f).to_owned()));
        }
    }
    texts
        .iter()
        .enumerate()
        .map(|(i, text)| parse_apdu(text).map_err(|why| format!("APDU {} '{text}': {why}", i + 1)))
        .collect()
}

/// One APDU from hex digits, ignoring blanks and `:`.
fn parse_apdu(text: &str) -> Result<Vec<u8>, String> {
    let bytes = parse_hex(text)?;
    if bytes.len() < MIN_APDU {
        return Err(format!(
            "{} byte(s); an APDU has at least 4 (CLA INS P1 P2)",
            bytes.len()
        ));
    }
    Ok(bytes)
}

/// Bytes from hex digits, ignoring blanks and `:`; at least one byte.
pub fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b':')
        .collect();
    if digits.is_empty() {
        return Err("empty".into());
    }
    if let Some(bad) = digits.iter().find(|b| !b.is_ascii_hexdigit()) {
        return Err(format!("'{}' is not a hex digit", char::from(*bad)));
    }
    if digits.len() % 2 != 0 {
        return Err(format!("odd number of hex digits ({})", digits.len()));
    }
    Ok(digits
        .chunks(2)
        .map(|pair| (nibble(pair[0]) << 4) | nibble(pair[1]))
        .collect())
}

fn nibble(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        b'A'..=b'F' => digit - b'A' + 10,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &[&str]) -> Vec<String> {
        s.iter().map(|w| (*w).to_owned()).collect()
    }

    const SELECT_MF: [u8; 7] = [0x00, 0xA4, 0x00, 0x0C, 0x02, 0x3F, 0x00];
    const READ: [u8; 5] = [0x00, 0xB0, 0x00, 0x00, 0x00];

    #[test]
    fn single_byte_words_are_one_apdu() {
        let apdus = parse_apdus(&words(&["00", "A4", "00", "0c", "02", "3F", "00"]));
        assert_eq!(apdus, Ok(vec![SELECT_MF.to_vec()]));
    }

    #[test]
    fn one_quoted_string_is_one_apdu() {
        assert_eq!(
            parse_apdus(&words(&["00 A4 00 0C 02 3F 00"])),
            Ok(vec![SELECT_MF.to_vec()])
        );
        assert_eq!(
            parse_apdus(&words(&["00a4000c023f00"])),
            Ok(vec![SELECT_MF.to_vec()])
        );
        assert_eq!(
            parse_apdus(&words(&["00:A4:00:0C:02:3F:00"])),
            Ok(vec![SELECT_MF.to_vec()])
        );
    }

    #[test]
    fn long_words_are_one_apdu_each() {
        assert_eq!(
            parse_apdus(&words(&["00A4000C023F00", "00B0000000"])),
            Ok(vec![SELECT_MF.to_vec(), READ.to_vec()])
        );
    }

    #[test]
    fn separators_split_apdus() {
        let expected = Ok(vec![SELECT_MF.to_vec(), READ.to_vec()]);
        assert_eq!(
            parse_apdus(&words(&[
                "00", "A4", "00", "0C", "02", "3F", "00", ",", "00", "B0", "00", "00", "00"
            ])),
            expected
        );
        assert_eq!(
            parse_apdus(&words(&["00A4000C023F00;00B0000000"])),
            expected
        );
        assert_eq!(
            parse_apdus(&words(&["00 A4 00 0C 02 3F 00,", "00 B0 00 00 00"])),
            expected
        );
        // Separators and whole-APDU words mix.
        assert_eq!(
            parse_apdus(&words(&["00A4000C023F00; 00B0000000", "00CA006E00"])),
            Ok(vec![
                SELECT_MF.to_vec(),
                READ.to_vec(),
                vec![0x00, 0xCA, 0x00, 0x6E, 0x00]
            ])
        );
        assert_eq!(
            parse_apdus(&words(&[
                "00A4000C023F00",
                ";",
                "00",
                "B0",
                "00",
                "00",
                "00"
            ])),
            expected
        );
    }

    #[test]
    fn bad_hex_is_reported_with_its_position() {
        assert_eq!(
            parse_apdus(&words(&["00A4000G"])),
            Err("APDU 1 '00A4000G': 'G' is not a hex digit".into())
        );
        assert_eq!(
            parse_apdus(&words(&["00A4000C023F00", "00B000000"])),
            Err("APDU 2 '00B000000': odd number of hex digits (9)".into())
        );
        assert_eq!(
            parse_apdus(&words(&["00A4"])),
            Err("APDU 1 '00A4': 2 byte(s); an APDU has at least 4 (CLA INS P1 P2)".into())
        );
        assert_eq!(
            parse_apdus(&words(&["00A4000C", ","])),
            Err("APDU 2 '': empty".into())
        );
        assert_eq!(parse_apdus(&[]), Err("no APDU given".into()));
        assert_eq!(
            parse_apdus(&words(&["00", "A4", "0G", "00"])),
            Err("APDU 1 '00 A4 0G 00': 'G' is not a hex digit".into())
        );
        // A mix of long and single-byte words is one APDU per word: the byte is too short.
        assert!(parse_apdus(&words(&["00A4000C", "02", "3F00"])).is_err());
    }
}

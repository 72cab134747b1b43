//! Salesforce record ids: a 3-character key prefix naming the object type, 12 more
//! case-sensitive characters, and a 3-character suffix that makes the 18-character
//! form safe to compare without case (it encodes which letters are upper case).

use rand::Rng;

/// Key prefixes of the objects the sandbox serves and of the things it names.
pub(crate) const USER: &str = "005";
pub(crate) const LEAD: &str = "00Q";
pub(crate) const CONTACT: &str = "003";
pub(crate) const ACCOUNT: &str = "001";
pub(crate) const TASK: &str = "00T";
pub(crate) const ORG: &str = "00D";
pub(crate) const INGEST_JOB: &str = "750";
pub(crate) const QUERY_LOCATOR: &str = "01g";

/// The two "pod" characters after the prefix; real ids carry the instance here.
const POD: &str = "4H";

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const SUFFIX: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";

/// The 18-character id number `n` of the type with key prefix `prefix`.
/// Ids of one type sort in the order of `n` (base 62 in ASCII order, fixed width).
pub(crate) fn make(prefix: &str, n: u64) -> String {
    let mut digits = [b'0'; 9];
    let mut rest = n;
    for digit in digits.iter_mut().rev() {
        *digit = BASE62[(rest % 62) as usize];
        rest /= 62;
    }
    let body = format!(
        "{prefix}{POD}0{}",
        std::str::from_utf8(&digits).unwrap_or("000000000")
    );
    with_suffix(&body)
}

/// A random-looking 18-character id with `prefix` (query locators, jobs are counted).
pub(crate) fn random(prefix: &str) -> String {
    let mut rng = rand::rng();
    let tail: String = (0..10)
        .map(|_| BASE62[rng.random_range(0..62)] as char)
        .collect();
    with_suffix(&format!("{prefix}{POD}{tail}"))
}

/// Appends the case-encoding suffix to a 15-character id.
fn with_suffix(id15: &str) -> String {
    let bytes = id15.as_bytes();
    let mut out = String::with_capacity(18);
    out.push_str(id15);
    for chunk in bytes.chunks(5) {
        let bits = chunk
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_ascii_uppercase())
            .fold(0_usize, |acc, (i, _)| acc | (1 << i));
        out.push(SUFFIX[bits] as char);
    }
    out
}

/// The canonical 18-character form of a 15- or 18-character id, or `None` when the
/// text is not an id. An 18-character id's suffix restores the case of its letters, so
/// `00q…` with the right suffix is the same id as `00Q…`, as in Salesforce.
pub(crate) fn normalize(text: &str) -> Option<String> {
    let text = text.trim();
    if !text.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    match text.len() {
        15 => Some(with_suffix(text)),
        18 => {
            let (body, suffix) = text.split_at(15);
            let mut fixed = body.as_bytes().to_vec();
            for (chunk, code) in fixed.chunks_mut(5).zip(suffix.bytes()) {
                let bits = SUFFIX
                    .iter()
                    .position(|s| *s == code.to_ascii_uppercase())?;
                for (i, c) in chunk.iter_mut().enumerate() {
                    let upper = bits & (1 << i) != 0;
                    if c.is_ascii_alphabetic() {
                        *c = if upper {
                            c.to_ascii_uppercase()
                        } else {
                            c.to_ascii_lowercase()
                        };
                    } else if upper {
                        // A digit cannot be upper case: the suffix does not belong to this id.
                        return None;
                    }
                }
            }
            let fixed = String::from_utf8(fixed).ok()?;
            Some(with_suffix(&fixed))
        }
        _ => None,
    }
}

/// The first 15 characters: the org id as it appears in an access token.
pub(crate) fn short(id: &str) -> &str {
    id.get(..15).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_match_salesforce() {
        // Known pairs from Salesforce documentation and orgs.
        assert_eq!(with_suffix("001A0000006Vm9r"), "001A0000006Vm9rIAC");
        assert_eq!(with_suffix("003000000000000"), "003000000000000AAA");
        assert_eq!(
            normalize("001a0000006vm9riac").as_deref(),
            Some("001A0000006Vm9rIAC")
        );
        assert_eq!(
            normalize("001A0000006Vm9r").as_deref(),
            Some("001A0000006Vm9rIAC")
        );
    }

    #[test]
    fn made_ids_are_18_characters_and_ordered() {
        let a = make(LEAD, 1);
        let b = make(LEAD, 62);
        let c = make(LEAD, 63);
        assert_eq!(a.len(), 18);
        assert!(a.starts_with("00Q"));
        assert!(a < b && b < c, "{a} {b} {c}");
        assert_eq!(normalize(&a), Some(a.clone()));
        assert_eq!(normalize(&a.to_lowercase()), Some(a));
    }

    #[test]
    fn non_ids_are_refused() {
        for text in [
            "",
            "abc",
            "00Q4H0000000001AA!",
            "00Q4H000000000",
            "00Q4H00000000012AZ",
        ] {
            assert_eq!(normalize(text), None, "{text}");
        }
        // A suffix claiming an upper-case digit.
        assert_eq!(normalize("003000000000000BAA"), None);
    }
}

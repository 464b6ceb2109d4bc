//! What a user name may be, and when two names are one.
//!
//! From rules 1 (see `Started.rules_version`) a new user name:
//! - has 1 to [`NAME_BYTES_MAX`] bytes, in Unicode NFKC form (so `ｆｕｌｌ`
//!   width letters or a composed `é` spelled as two code points are refused,
//!   with the form to use instead);
//! - has no spaces, control characters, or default-ignorable code points:
//!   zero-width spaces and joiners, bidirectional controls such as the
//!   right-to-left override, variation selectors, soft hyphens;
//! - is unique by its *key*: the UTS #39 confusable skeleton of the name in
//!   lower case. So `Alice` beside `alice`, or `аlice` with a Cyrillic `а`,
//!   is `USER_EXISTS`.
//!
//! Names are matched exactly everywhere else (logins, recipients): the key
//! only keeps new names from looking like old ones. Names registered under
//! rules 0 replay as they were, look-alikes included.

use unicode_normalization::{is_nfkc_quick, IsNormalized, UnicodeNormalization};
use unicode_security::skeleton;

use super::NAME_BYTES_MAX;

/// Whether `name` is a user name new registrations may take under
/// `rules_version`; the error says what is wrong with it.
pub(super) fn check_user_name(name: &str, rules_version: u32) -> Result<(), String> {
    check_name("user name", name)?;
    if rules_version == 0 {
        return Ok(());
    }
    if let Some(c) = name.chars().find(|&c| invisible(c)) {
        return Err(format!(
            "a user name has no invisible or direction-changing characters (U+{:04X})",
            c as u32
        ));
    }
    let normal = match is_nfkc_quick(name.chars()) {
        IsNormalized::Yes => return Ok(()),
        _ => name.nfkc().collect::<String>(),
    };
    if normal == name {
        return Ok(());
    }
    Err(format!(
        "a user name is in Unicode NFKC form: {normal:?} instead of {name:?}"
    ))
}

/// Whether `name` is a device id (or, under rules 0, a user name): 1 to
/// [`NAME_BYTES_MAX`] bytes without spaces or control characters.
pub(super) fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > NAME_BYTES_MAX {
        return Err(format!("a {what} has 1 to {NAME_BYTES_MAX} bytes"));
    }
    if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("a {what} has no spaces or control characters"));
    }
    Ok(())
}

/// The key two names that look alike share: the confusable skeleton of the
/// name in lower case.
pub(super) fn name_key(name: &str) -> String {
    skeleton(&name.to_lowercase()).collect()
}

/// A default-ignorable code point (Unicode's DerivedCoreProperties): drawn
/// as nothing, so a name holding one looks like the name without it. The
/// bidirectional controls are among them.
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFF8}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        // Each case: a name, whether rules 0 and rules 1 accept it.
        let cases = [
            ("ana", true, true),
            ("", false, false),
            ("a b", false, false),
            ("tab\t", false, false),
            (&"x".repeat(NAME_BYTES_MAX), true, true),
            (&"x".repeat(NAME_BYTES_MAX + 1), false, false),
            ("名字", true, true),
            ("Zoë", true, true),
            ("alice\u{200b}", true, false), // zero-width space
            ("\u{202e}ecila", true, false), // right-to-left override
            ("al\u{00ad}ice", true, false), // soft hyphen
            ("Zoe\u{0308}", true, false),   // decomposed: NFKC composes it
            ("ｆｕｌｌ", true, false),      // full-width letters
            ("ﬁsh", true, false),           // a ligature
            ("аlice", true, true),          // Cyrillic а: refused by key, not form
        ];
        for (name, rules_0, rules_1) in cases {
            assert_eq!(
                check_user_name(name, 0).is_ok(),
                rules_0,
                "rules 0: {name:?}"
            );
            assert_eq!(
                check_user_name(name, 1).is_ok(),
                rules_1,
                "rules 1: {name:?}"
            );
        }
        let error = check_user_name("ｆｕｌｌ", 1).unwrap_err();
        assert!(error.contains("\"full\""), "{error}");
    }

    #[test]
    fn look_alikes_share_a_key() {
        // Each case: two names, and whether they are one by their key.
        let cases = [
            ("alice", "Alice", true),
            ("alice", "ALICE", true),
            ("alice", "\u{0430}lice", true), // Cyrillic а
            ("paypal", "paypa1", true),      // digit one for l
            ("bob", "rob", false),
            ("ana", "anna", false),
            ("名字", "名子", false),
        ];
        for (a, b, same) in cases {
            assert_eq!(name_key(a) == name_key(b), same, "{a:?} and {b:?}");
        }
    }
}

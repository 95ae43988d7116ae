//! Text normalisation shared by every parser of outside input.

/// Maps full-width ASCII (U+FF01..U+FF5E, e.g. `０`-`９`, `Ａ`) to ASCII and the
/// ideographic space to a space; everything else is kept. Municipal systems and
/// camera OCR both produce full-width digits.
pub fn to_halfwidth(input: &str) -> std::borrow::Cow<'_, str> {
    if input.is_ascii() {
        return std::borrow::Cow::Borrowed(input);
    }
    std::borrow::Cow::Owned(
        input
            .chars()
            .map(|c| match c {
                '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
                '\u{3000}' => ' ',
                _ => c,
            })
            .collect(),
    )
}

/// `true` when `s` is non-empty and made only of ASCII digits.
pub fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fullwidth_digits_and_space_become_ascii() {
        assert_eq!(to_halfwidth("０１２３ ４５６７８９\u{3000}Ａ"), "0123 456789 A");
        assert_eq!(to_halfwidth("山田"), "山田");
    }
}

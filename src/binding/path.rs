//! Request paths split for the URL tables of the adapters on the HTTP port (`http::table`,
//! `legacy::table`): segments borrowed from the path, parameters percent-decoded only when they
//! hold an escape. No I/O and no knowledge of any adapter's URLs.

use std::borrow::Cow;

/// The `/`-separated segments of `rest` (a path after its fixed prefix and that prefix's `/`),
/// or None when there are more than `N`. Empty segments are kept, for the table to refuse.
pub(crate) fn segments<const N: usize>(rest: &str) -> Option<([&str; N], usize)> {
    let mut raw = [""; N];
    let mut count = 0;
    for segment in rest.split('/') {
        *raw.get_mut(count)? = segment;
        count += 1;
    }
    Some((raw, count))
}

/// One path parameter, decoded (`%2F` included): None when empty or not UTF-8 once decoded.
pub(crate) fn param(raw: &str) -> Option<Cow<'_, str>> {
    if raw.is_empty() {
        return None;
    }
    if !raw.contains('%') {
        return Some(Cow::Borrowed(raw));
    }
    percent_encoding::percent_decode_str(raw).decode_utf8().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_counted_up_to_the_bound() {
        assert_eq!(segments::<3>("a/b"), Some((["a", "b", ""], 2)));
        assert_eq!(segments::<3>("a//"), Some((["a", "", ""], 3)));
        assert_eq!(segments::<2>("a/b/c"), None);
    }

    #[test]
    fn parameters_are_decoded_only_when_escaped() {
        assert!(matches!(param("lamp"), Some(Cow::Borrowed("lamp"))));
        assert_eq!(param("%C3%A9t%2Fat").as_deref(), Some("ét/at"));
        assert_eq!(param(""), None);
        assert_eq!(param("%FF"), None);
    }
}

//! Wall-clock timestamps in the one format every WoT document uses: RFC 3339 in UTC with `Z`
//! (TD `td-datetime-recommended-type`). Nothing else lives here.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub(crate) fn now_rfc3339() -> String {
    format_rfc3339(OffsetDateTime::now_utc())
}

pub(crate) fn format_rfc3339(t: OffsetDateTime) -> String {
    // Formatting a UTC time as RFC 3339 only fails for years outside 0..=9999.
    t.format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// The time an RFC 3339 timestamp names; `None` when it is not one.
pub(crate) fn parse_rfc3339(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

//! Content negotiation of `/metrics`: the exposition format from `Accept` (q-values), gzip from
//! `Accept-Encoding`. Anything unknown or unacceptable falls back to the classic text format
//! without compression, as the Prometheus client libraries do.

use axum::http::header::{ACCEPT, ACCEPT_ENCODING};
use axum::http::HeaderMap;

use crate::export::prometheus::Format;

/// `Content-Type` of the classic text format.
pub const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// `Content-Type` of OpenMetrics 1.0.0.
pub const OPENMETRICS_1_0_0: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// `Content-Type` of OpenMetrics 0.0.1 (same body: nothing the daemon writes differs).
pub const OPENMETRICS_0_0_1: &str = "application/openmetrics-text; version=0.0.1; charset=utf-8";

/// What one scrape gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Body format.
    pub format: Format,
    /// `Content-Type` header value.
    pub content_type: &'static str,
    /// Whether the body is gzip-compressed.
    pub gzip: bool,
}

/// The answer to a request with these headers; with `openmetrics` false only the classic text
/// format is offered (`web_server.openmetrics = off`).
pub fn negotiate(headers: &HeaderMap, openmetrics: bool) -> Negotiated {
    let accept = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let (format, content_type) = if openmetrics {
        choose_format(accept)
    } else {
        (Format::Text, TEXT)
    };
    let encoding = headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok());
    Negotiated {
        format,
        content_type,
        gzip: gzip_accepted(encoding),
    }
}

/// The formats offered, in the server's order of preference when q-values tie.
const OFFERS: [(Format, &str, Offer); 3] = [
    (Format::Text, TEXT, Offer::Text),
    (
        Format::OpenMetrics,
        OPENMETRICS_1_0_0,
        Offer::OpenMetrics("1.0.0"),
    ),
    (
        Format::OpenMetrics,
        OPENMETRICS_0_0_1,
        Offer::OpenMetrics("0.0.1"),
    ),
];

#[derive(Debug, Clone, Copy)]
enum Offer {
    Text,
    OpenMetrics(&'static str),
}

/// How well a media range matches an offer: 0 = not at all, then `*/*`, `type/*`, `type/subtype`
/// and `type/subtype;version=…`.
fn specificity(range: &MediaRange<'_>, offer: Offer) -> u8 {
    let (ty, sub, version) = match offer {
        Offer::Text => ("text", "plain", None),
        Offer::OpenMetrics(v) => ("application", "openmetrics-text", Some(v)),
    };
    if range.ty == "*" && range.sub == "*" {
        return 1;
    }
    if !range.ty.eq_ignore_ascii_case(ty) {
        return 0;
    }
    if range.sub == "*" {
        return 2;
    }
    if !range.sub.eq_ignore_ascii_case(sub) {
        return 0;
    }
    match (range.version, version) {
        (None, _) => 3,
        // Any text/plain version gets 0.0.4, the only classic text format there is.
        (Some(_), None) => 4,
        (Some(asked), Some(offered)) if asked == offered => 4,
        (Some(_), Some(_)) => 0,
    }
}

struct MediaRange<'a> {
    ty: &'a str,
    sub: &'a str,
    version: Option<&'a str>,
    q: f32,
}

fn parse_range(text: &str) -> Option<MediaRange<'_>> {
    let mut parts = text.split(';');
    let (ty, sub) = parts.next()?.trim().split_once('/')?;
    let mut range = MediaRange {
        ty: ty.trim(),
        sub: sub.trim(),
        version: None,
        q: 1.0,
    };
    for param in parts {
        let Some((k, v)) = param.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"');
        match k.trim() {
            k if k.eq_ignore_ascii_case("q") => range.q = parse_q(v)?,
            k if k.eq_ignore_ascii_case("version") => range.version = Some(v),
            _ => {}
        }
    }
    Some(range)
}

/// A q-value in 0..=1; anything else makes the whole range invalid (ignored).
fn parse_q(v: &str) -> Option<f32> {
    v.parse::<f32>().ok().filter(|q| (0.0..=1.0).contains(q))
}

/// The offer with the highest q-value, taken from the most specific range matching it (RFC 9110
/// §12.5.1); ties go to the server's preference (classic text first). No `Accept`, or nothing
/// acceptable, gives the classic text format.
fn choose_format<'a>(accept: impl Iterator<Item = &'a str>) -> (Format, &'static str) {
    let ranges: Vec<MediaRange<'_>> = accept
        .flat_map(|v| v.split(','))
        .filter_map(parse_range)
        .collect();
    let mut best: Option<(f32, Format, &'static str)> = None;
    for (format, content_type, offer) in OFFERS {
        let q = ranges
            .iter()
            .map(|r| (specificity(r, offer), r.q))
            .filter(|(s, _)| *s > 0)
            .max_by_key(|(s, _)| *s)
            .map_or(0.0, |(_, q)| q);
        if q > 0.0 && best.is_none_or(|(bq, _, _)| q > bq) {
            best = Some((q, format, content_type));
        }
    }
    best.map_or((Format::Text, TEXT), |(_, f, c)| (f, c))
}

/// Whether gzip is acceptable and not less preferred than the uncompressed body.
fn gzip_accepted<'a>(accept_encoding: impl Iterator<Item = &'a str>) -> bool {
    let (mut gzip, mut star, mut identity) = (None, None, None);
    for coding in accept_encoding.flat_map(|v| v.split(',')) {
        let mut parts = coding.split(';');
        let name = parts.next().unwrap_or("").trim();
        let mut q = Some(1.0);
        for param in parts {
            if let Some((k, v)) = param.split_once('=') {
                if k.trim().eq_ignore_ascii_case("q") {
                    q = parse_q(v.trim());
                }
            }
        }
        let Some(q) = q else { continue };
        if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
            gzip = Some(q);
        } else if name == "*" {
            star = Some(q);
        } else if name.eq_ignore_ascii_case("identity") {
            identity = Some(q);
        }
    }
    let gzip = gzip.or(star).unwrap_or(0.0);
    gzip > 0.0 && gzip >= identity.unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(accept: &str) -> (Format, &'static str) {
        choose_format(std::iter::once(accept))
    }

    #[test]
    fn accept_header_picks_the_format() {
        // Prometheus 2.x (before 2.49) and its explicit scrape_protocols form.
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                    version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(format(prom), (Format::OpenMetrics, OPENMETRICS_1_0_0));
        let prom3 = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;\
                     encoding=delimited;q=0.5,application/openmetrics-text;version=1.0.0;q=0.4,\
                     application/openmetrics-text;version=0.0.1;q=0.3,text/plain;version=1.0.0;\
                     escaping=allow-utf-8;q=0.2,text/plain;version=0.0.4;q=0.1,*/*;q=0.05";
        assert_eq!(format(prom3), (Format::OpenMetrics, OPENMETRICS_1_0_0));
        assert_eq!(
            format("application/openmetrics-text; version=0.0.1"),
            (Format::OpenMetrics, OPENMETRICS_0_0_1)
        );
        assert_eq!(
            format("application/openmetrics-text"),
            (Format::OpenMetrics, OPENMETRICS_1_0_0)
        );
        assert_eq!(
            format("text/plain;version=0.0.4;q=0.9, application/openmetrics-text;q=0.8"),
            (Format::Text, TEXT)
        );
        // Ties go to the classic format; wildcards and unknown types give it too.
        assert_eq!(
            format("application/openmetrics-text, text/plain"),
            (Format::Text, TEXT)
        );
        for text in [
            "",
            "*/*",
            "text/*",
            "text/html",
            "application/json",
            "garbage",
        ] {
            assert_eq!(format(text), (Format::Text, TEXT), "{text:?}");
        }
        // Unsupported versions, q=0 and invalid q-values do not select OpenMetrics.
        for text in [
            "application/openmetrics-text;version=2.0.0",
            "application/openmetrics-text;q=0",
            "application/openmetrics-text;q=1.5",
            "application/openmetrics-text;q=x",
        ] {
            assert_eq!(format(text), (Format::Text, TEXT), "{text:?}");
        }
        // A more specific range overrides a wildcard.
        assert_eq!(
            format("application/*;q=0.9, application/openmetrics-text;version=0.0.1;q=0"),
            (Format::OpenMetrics, OPENMETRICS_1_0_0)
        );
        assert_eq!(
            format("*/*;q=0.5, text/plain;q=0, application/openmetrics-text;q=0.2"),
            (Format::OpenMetrics, OPENMETRICS_1_0_0)
        );
    }

    #[test]
    fn gzip_when_accepted() {
        let gz = |v: &str| gzip_accepted(std::iter::once(v));
        assert!(gz("gzip"));
        assert!(gz("gzip, deflate, br"));
        assert!(gz("GZIP;q=0.5"));
        assert!(gz("x-gzip"));
        assert!(gz("*"));
        assert!(gz("identity;q=0.5, gzip"));
        assert!(!gz(""));
        assert!(!gz("deflate, br"));
        assert!(!gz("gzip;q=0"));
        assert!(!gz("*, gzip;q=0"));
        assert!(!gz("identity, gzip;q=0.5"));
        assert!(!gz("gzip;q=2"));
        assert!(!gzip_accepted(std::iter::empty()));
    }

    #[test]
    fn headers_together() {
        let mut h = HeaderMap::new();
        assert_eq!(
            negotiate(&h, true),
            Negotiated {
                format: Format::Text,
                content_type: TEXT,
                gzip: false
            }
        );
        h.insert(
            ACCEPT,
            "application/openmetrics-text;version=1.0.0"
                .parse()
                .unwrap(),
        );
        h.insert(ACCEPT_ENCODING, "gzip".parse().unwrap());
        assert_eq!(
            negotiate(&h, true),
            Negotiated {
                format: Format::OpenMetrics,
                content_type: OPENMETRICS_1_0_0,
                gzip: true
            }
        );
        // web_server.openmetrics = off: the same request gets the classic text, still gzipped.
        assert_eq!(
            negotiate(&h, false),
            Negotiated {
                format: Format::Text,
                content_type: TEXT,
                gzip: true
            }
        );
    }
}

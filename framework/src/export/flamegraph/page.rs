//! The `GET /flamegraph/` HTML page: every profile of the index, or why there is none. Every
//! piece of text is HTML-escaped (a process's `comm` is untrusted), control and bidirectional
//! formatting characters are shown as `\u{…}`, and the page carries no script.

use std::fmt::Write as _;

use super::index::{Artifact, Index, Profile};

/// Append `s` HTML-escaped (for text and double-quoted attribute values).
pub fn escape_into(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Shown, not obeyed: a comm could otherwise reorder or hide the text around it.
            c if c.is_control()
                || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') =>
            {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// `s` HTML-escaped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_into(s, &mut out);
    out
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    // Howard Hinnant's algorithm.
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Unix ms as `YYYY-MM-DD HH:MM:SS UTC` (`-` for 0).
pub fn utc(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    let secs = (ms / 1000) as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

const HEAD: &str = "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\
<meta name=\"referrer\" content=\"no-referrer\">\
<title>gala-gopher flame graphs</title>\
<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}\
td,th{padding:.2em .6em;border-bottom:1px solid #ddd;text-align:left}\
td.n{text-align:right;font-variant-numeric:tabular-nums}.old{color:#888}</style>\
</head><body>\n<h1>Flame graphs</h1>\n";

const TAIL: &str = "</body></html>\n";

/// A page with only a message (no profiles, and why).
pub fn message(title: &str, detail: &str) -> String {
    let mut out = String::from(HEAD);
    out.push_str("<p><b>");
    escape_into(title, &mut out);
    out.push_str("</b></p>\n<p>");
    escape_into(detail, &mut out);
    out.push_str("</p>\n");
    out.push_str(TAIL);
    out
}

fn row(idx: &Index, p: &Profile, out: &mut String) {
    let latest = idx.is_latest(p);
    out.push_str(if latest { "<tr>" } else { "<tr class=\"old\">" });
    let _ = write!(out, "<td class=\"n\">{}</td><td>", p.pid);
    escape_into(&p.comm, out);
    let _ = write!(
        out,
        "</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>",
        p.kind.as_str(),
        utc(p.start_ms),
        utc(p.end_ms),
        p.samples
    );
    if latest {
        let mut first = true;
        for a in Artifact::ALL {
            // Only a file the latest entry has is what the link serves.
            if idx.serves(p, a) {
                if !first {
                    out.push_str(" · ");
                }
                first = false;
                // Relative links: the page also works behind a proxy's path prefix.
                let href = format!("{}/{}{}", p.pid, p.kind.as_str(), a.ext());
                let _ = write!(out, "<a href=\"{href}\">{}</a>", &a.ext()[1..]);
            }
        }
    } else {
        out.push_str("superseded");
    }
    out.push_str("</td></tr>\n");
}

/// The listing of `idx` (read from `dir`, written by probe `probe`).
pub fn listing(idx: &Index, probe: &str, dir: &str) -> String {
    let mut out = String::with_capacity(4096 + idx.profiles.len() * 320);
    out.push_str(HEAD);
    out.push_str("<p>");
    let _ = write!(
        out,
        "{} profiles written by probe <code>{}</code> into <code>{}</code>; index updated {}.",
        idx.profiles.len(),
        escape(probe),
        escape(dir),
        utc(idx.updated_ms)
    );
    out.push_str(" A link serves the latest file of that process and kind; periods are UTC.</p>\n");
    if !idx.refused.is_empty() {
        let _ = write!(
            out,
            "<p>{} entries or paths of the index were refused (they break the file layout):</p>\n<ul>\n",
            idx.refused.len()
        );
        for r in idx.refused.iter().take(20) {
            out.push_str("<li>");
            escape_into(r, &mut out);
            out.push_str("</li>\n");
        }
        out.push_str("</ul>\n");
    }
    let mut rows: Vec<&Profile> = idx.profiles.iter().collect();
    // Newest first, then by pid and kind.
    rows.sort_by(|a, b| {
        (b.end_ms, a.pid, a.kind)
            .cmp(&(a.end_ms, b.pid, b.kind))
            .then(b.start_ms.cmp(&a.start_ms))
    });
    out.push_str(
        "<table>\n<tr><th>pid</th><th>comm</th><th>kind</th><th>period start</th>\
         <th>period end</th><th>samples</th><th>files</th></tr>\n",
    );
    for p in rows {
        row(idx, p, &mut out);
    }
    out.push_str("</table>\n");
    out.push_str(TAIL);
    out
}

#[cfg(test)]
mod tests {
    use super::super::index::parse;
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "-");
        assert_eq!(utc(1_000), "1970-01-01 00:00:01 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_764_950_000_000), "2025-12-05 15:53:20 UTC");
        assert_eq!(utc(4_107_542_399_999), "2100-02-28 23:59:59 UTC");
    }

    #[test]
    fn untrusted_text_is_escaped() {
        assert_eq!(
            escape("<img src=x onerror='a&b'>\"\u{202e}\n"),
            "&lt;img src=x onerror=&#39;a&amp;b&#39;&gt;&quot;\\u{202e}\\u{a}"
        );
        let idx = parse(
            br#"{"version":1,"updated_ms":1764950000000,"profiles":[
            {"pid":123,"comm":"<script>alert(1)</script>","kind":"oncpu","start_ms":1764950000000,
             "end_ms":1764950180000,"samples":950,"svg":"oncpu/20251205/20251205155320-123.svg",
             "pprof":"../x"}]}"#,
        )
        .unwrap();
        let page = listing(&idx, "stack</code>", "/var/<b>");
        assert!(!page.contains("<script>"), "{page}");
        assert!(!page.contains("<b>"));
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("stack&lt;/code&gt;"));
        assert!(page.contains("<a href=\"123/oncpu.svg\">svg</a>"));
        // The refused pprof path is named, not linked.
        assert!(!page.contains("oncpu.pb.gz"));
        assert!(page.contains("pb.gz path refused"));
        assert!(page.contains("2025-12-05 15:53:20 UTC"));
        assert!(page.contains("2025-12-05 15:56:20 UTC"));
        assert!(page.contains("<td class=\"n\">950</td>"));
    }

    #[test]
    fn a_full_index_lists_every_profile_with_one_link_set_per_process() {
        // MAX_PROFILES entries of few processes: the listing stays linear (no per-row scan).
        let entries: Vec<String> = (0..super::super::index::MAX_PROFILES)
            .map(|i| {
                let pid = 100 + i % 8;
                format!(
                    r#"{{"pid":{pid},"kind":"oncpu","end_ms":{i},"svg":"oncpu/20251205/20251205155320-{pid}.svg"}}"#
                )
            })
            .collect();
        let bytes = format!(r#"{{"version":1,"profiles":[{}]}}"#, entries.join(","));
        let idx = parse(bytes.as_bytes()).unwrap();
        let started = std::time::Instant::now();
        let page = listing(&idx, "p", "/d");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        assert_eq!(page.matches("<tr").count(), 1 + idx.profiles.len());
        assert_eq!(page.matches("/oncpu.svg\">").count(), 8);
        assert_eq!(page.matches("superseded").count(), idx.profiles.len() - 8);
        // The latest of each pid is the last one written.
        let l = idx.latest(107, super::super::index::Kind::OnCpu, Artifact::Svg);
        assert_eq!(l.map(|p| p.end_ms), Some(4095));
    }

    #[test]
    fn only_the_latest_entry_links() {
        let idx = parse(
            br#"{"version":1,"profiles":[
            {"pid":5,"kind":"offcpu","end_ms":1,"svg":"offcpu/20251205/20251205155320-5.svg"},
            {"pid":5,"kind":"offcpu","end_ms":2,"svg":"offcpu/20251205/20251205155620-5.svg"}]}"#,
        )
        .unwrap();
        let page = listing(&idx, "p", "/d");
        assert_eq!(page.matches("5/offcpu.svg").count(), 1);
        assert_eq!(page.matches("superseded").count(), 1);
    }
}

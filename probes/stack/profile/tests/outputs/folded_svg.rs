//! Folded text and SVG, including names chosen by a hostile process.

use quick_xml::events::Event;
use quick_xml::Reader;

use stack_profile::{folded, svg, Frame, Kind, Profile};

use crate::{at, profile, sample, T};

#[test]
fn folded_text_of_a_hand_built_profile() {
    assert_eq!(
        folded::render(&profile(42, Kind::OnCpu, T)),
        "[42]app;main 1\n\
         [42]app;main;work;do_syscall_64_[k] 9\n\
         [42]app;main;work;hot_leaf 90\n"
    );
    // Off-CPU: microseconds (the fixture blocks 1 ms per stretch).
    assert_eq!(
        folded::render(&profile(42, Kind::OffCpu, T)),
        "[42]app;main 1000\n\
         [42]app;main;work;do_syscall_64_[k] 9000\n\
         [42]app;main;work;hot_leaf 90000\n"
    );
}

const HOSTILE: [&str; 9] = [
    "a;b",
    "with space",
    "line\nbreak",
    "cr\rtab\t",
    "</text><script>alert(1)</script>",
    "&amp; \"quoted\" 'single'",
    "\u{1b}[31mred\u{7}",
    "sep\u{2028}\u{85}",
    "",
];

fn hostile_profile(kind: Kind) -> Profile {
    Profile {
        pid: 66,
        comm: "evil\n;</title>".into(),
        kind,
        start: at(T - 180),
        end: at(T),
        sample_period_ns: 10_000_000,
        samples: HOSTILE
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let i = i as u64 + 1;
                sample(&[Frame::user("main"), Frame::user(name)], i, i * 1000)
            })
            .collect(),
    }
}

#[test]
fn hostile_names_keep_one_line_per_stack() {
    let p = hostile_profile(Kind::OnCpu);
    let text = folded::render(&p);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), HOSTILE.len(), "{text}");
    for line in &lines {
        let (stack, value) = line.rsplit_once(' ').unwrap_or_default();
        assert!(value.parse::<u64>().is_ok(), "{line:?}");
        // process frame, main, the hostile frame
        assert_eq!(stack.split(';').count(), 3, "{line:?}");
        assert!(stack.starts_with("[66]evil_:</title>;main;"), "{line:?}");
        assert!(!line.chars().any(|c| c.is_control()), "{line:?}");
    }
    assert!(text.contains("[66]evil_:</title>;main;a:b 1\n"), "{text}");
    assert!(text.contains(";[unknown] 9\n"), "{text}");
}

/// Parses `doc` as XML: tags balanced, attributes well-formed, no character XML 1.0 forbids.
/// Returns the texts of the `<title>` elements (unescaped) and the number of `<script>` elements.
fn parse_svg(doc: &str) -> (Vec<String>, usize) {
    for c in doc.chars() {
        let legal = matches!(c, '\t' | '\n' | '\r')
            || ('\u{20}'..='\u{D7FF}').contains(&c)
            || ('\u{E000}'..='\u{FFFD}').contains(&c)
            || c >= '\u{10000}';
        assert!(legal, "character {c:?} is not legal XML");
    }
    let mut reader = Reader::from_str(doc);
    let mut open: Vec<String> = Vec::new();
    let mut titles = Vec::new();
    let mut scripts = 0;
    let mut text: Option<String> = None;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                for a in e.attributes() {
                    assert!(a.is_ok(), "bad attribute in {e:?}");
                }
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                if name == "script" {
                    scripts += 1;
                }
                if name == "title" {
                    text = Some(String::new());
                }
                open.push(name);
            }
            Ok(Event::Empty(e)) => {
                for a in e.attributes() {
                    assert!(a.is_ok(), "bad attribute in {e:?}");
                }
                assert_ne!(e.name().as_ref(), b"script");
            }
            Ok(Event::End(e)) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                assert_eq!(open.pop().as_deref(), Some(name.as_str()), "unbalanced");
                if name == "title" {
                    titles.extend(text.take());
                }
            }
            Ok(Event::Text(t)) => {
                if let (Some(buf), Ok(s)) = (text.as_mut(), t.decode()) {
                    buf.push_str(&s);
                }
            }
            Ok(Event::GeneralRef(r)) => {
                let entity = format!("&{};", r.decode().unwrap_or_default());
                let decoded = quick_xml::escape::unescape(&entity);
                assert!(decoded.is_ok(), "unknown entity {entity}");
                if let (Some(buf), Ok(s)) = (text.as_mut(), decoded) {
                    buf.push_str(&s);
                }
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!(
                "SVG is not well-formed at {}: {e}",
                reader.buffer_position()
            ),
        }
    }
    assert!(open.is_empty(), "unclosed elements {open:?}");
    (titles, scripts)
}

#[test]
fn hostile_names_keep_the_svg_well_formed() {
    for kind in Kind::ALL {
        let p = hostile_profile(kind);
        let bytes = svg::render(&p).unwrap_or_else(|e| panic!("render: {e}"));
        let doc = String::from_utf8(bytes).unwrap_or_else(|e| panic!("utf-8: {e}"));
        let (titles, scripts) = parse_svg(&doc);
        // inferno's own script, and only that one: the name's `<script>` is text.
        assert_eq!(scripts, 1);
        assert!(
            titles
                .iter()
                .any(|t| t.contains("</text><script>alert(1)</script>")),
            "{titles:?}"
        );
        // `;` is the folded separator, so the name's `&amp;` arrives as `&amp:`.
        assert!(
            titles
                .iter()
                .any(|t| t.contains("&amp: \"quoted\" 'single'")),
            "{titles:?}"
        );
        assert!(doc.contains(svg::title(kind)));
        assert!(doc.contains(
            "evil_;&lt;/title&gt; (pid 66), 2025-12-05 16:57:00 - 2025-12-05 17:00:00 UTC"
        ));
    }
}

#[test]
fn svg_titles_units_and_palettes() {
    let on = String::from_utf8_lossy(&svg::render(&profile(1, Kind::OnCpu, T)).unwrap_or_default())
        .into_owned();
    let off =
        String::from_utf8_lossy(&svg::render(&profile(1, Kind::OffCpu, T)).unwrap_or_default())
            .into_owned();
    assert!(on.contains("On-CPU Time Flame Graph"));
    assert!(off.contains("Off-CPU Time Flame Graph"));
    assert!(on.contains("hot_leaf (90 samples"), "on-CPU counts samples");
    assert!(
        off.contains("hot_leaf (90,000 us"),
        "off-CPU counts microseconds"
    );
    parse_svg(&on);
    parse_svg(&off);
    // Different palettes: the same frame gets a different fill.
    let fill = |doc: &str| {
        let i = doc.find("<title>hot_leaf").unwrap_or(0);
        doc[i..]
            .split("fill=\"")
            .nth(1)
            .map(|s| s.split('"').next().unwrap_or("").to_string())
    };
    assert!(fill(&on).is_some());
    assert_ne!(fill(&on), fill(&off));
}

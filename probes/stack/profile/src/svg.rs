//! SVG flame graphs, rendered by `inferno` from the folded stacks.
//!
//! Titles are upstream's ("On-CPU Time Flame Graph" / "Off-CPU Time Flame Graph"); the subtitle
//! names the process and the period (UTC). On-CPU counts "samples" on the `hot` palette,
//! off-CPU counts "us" on the `io` palette. Colours are picked by hashing the name, so one
//! function keeps its colour across graphs. Every text inferno writes is XML-escaped, and the
//! sanitised names hold only characters legal in XML 1.0, so the SVG stays well-formed whatever
//! the profiled process named its functions.

use std::io;

use inferno::flamegraph::{self, color::BasicPalette, Options, Palette};

use crate::folded;
use crate::model::{Kind, Profile};
use crate::sanitize::{self, Target};
use crate::utc::UtcTime;

/// The graph's title for `kind`.
pub fn title(kind: Kind) -> &'static str {
    match kind {
        Kind::OnCpu => "On-CPU Time Flame Graph",
        Kind::OffCpu => "Off-CPU Time Flame Graph",
    }
}

/// The unit the graph counts in for `kind` (FlameGraph's `--countname`).
pub fn count_name(kind: Kind) -> &'static str {
    match kind {
        Kind::OnCpu => "samples",
        Kind::OffCpu => "us",
    }
}

/// The subtitle: comm, pid and the period in UTC.
pub fn subtitle(profile: &Profile) -> String {
    format!(
        "{} (pid {}), {} - {} UTC",
        sanitize::name(&profile.comm, Target::Plain),
        profile.pid,
        UtcTime::from_system(profile.start).display(),
        UtcTime::from_system(profile.end).display()
    )
}

/// The SVG of `profile`, from its folded text (as [`folded::render`] returns it).
pub fn render_folded(profile: &Profile, folded_text: &str) -> io::Result<Vec<u8>> {
    let mut opt = Options::default();
    opt.title = title(profile.kind).to_string();
    opt.subtitle = Some(subtitle(profile));
    opt.count_name = count_name(profile.kind).to_string();
    opt.colors = Palette::Basic(match profile.kind {
        Kind::OnCpu => BasicPalette::Hot,
        Kind::OffCpu => BasicPalette::Io,
    });
    opt.hash = true;
    let mut out = Vec::new();
    flamegraph::from_lines(&mut opt, folded_text.lines(), &mut out)?;
    Ok(out)
}

/// The SVG of `profile`.
pub fn render(profile: &Profile) -> io::Result<Vec<u8>> {
    render_folded(profile, &folded::render(profile))
}

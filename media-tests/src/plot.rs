//! A small SVG timeline for scenario reports: what a subscriber received over time — the simulcast layer as a step
//! line, freezes as red bands, the impairment steps as dashed lines, and under each lane three small panels per
//! 500 ms bin: received bitrate (kbit/s), loss before repair (%) and frame delay (p50, ms) — so that a QA engineer sees at a glance when a
//! switch or a freeze happened relative to the network change. Plain string building, no dependency; the runner
//! writes one file per run next to its JSON report.

use std::fmt::Write as _;

/// One received video track over the run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeline {
    /// Label, e.g. `bob ← alice video`.
    pub label: String,
    /// (seconds from the start, layer: 0 = q, 1 = h, 2 = f; `None` without simulcast, drawn at 0).
    pub layers: Vec<(f64, Option<u8>)>,
    /// Freezes: (start, length), seconds.
    pub freezes: Vec<(f64, f64)>,
    /// Per-bin values (empty: no panels).
    pub bins: Vec<PlotBin>,
    /// Bin width, seconds.
    pub bin_s: f64,
}

/// One bin of [`Timeline::bins`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PlotBin {
    /// Start, seconds from the start of the run.
    pub t: f64,
    /// Received kbit/s.
    pub kbps: f64,
    /// Loss before repair, % (`None`: nothing expected).
    pub loss_pct: Option<f64>,
    /// Frame delay p50, ms (`None`: no frame).
    pub delay_ms: Option<f64>,
}

/// Reads one value of a bin.
type BinValue = fn(&PlotBin) -> Option<f64>;

/// Height of one value panel.
const PANEL: f64 = 44.0;

impl Timeline {
    fn height(&self, lane: f64) -> f64 {
        lane + if self.bins.is_empty() { 0.0 } else { 3.0 * PANEL }
    }
}

/// Draws `timelines` (one lane each) over `duration_s`, with vertical dashed lines at `marks` (seconds, label).
pub fn timeline_svg(title: &str, duration_s: f64, marks: &[(f64, String)], timelines: &[Timeline]) -> String {
    const W: f64 = 900.0;
    const LEFT: f64 = 170.0;
    const RIGHT: f64 = 20.0;
    const TOP: f64 = 40.0;
    const LANE: f64 = 90.0;
    const AXIS: f64 = 40.0;
    let duration = if duration_s.is_finite() && duration_s > 0.0 { duration_s } else { 1.0 };
    let lanes: f64 = timelines.iter().map(|t| t.height(LANE)).sum::<f64>().max(LANE);
    let x = |t: f64| LEFT + (t.clamp(0.0, duration) / duration) * (W - LEFT - RIGHT);
    // Marks at the same instant share one line and one label; labels that would overlap go on rows above.
    let mut merged: Vec<(f64, String)> = Vec::new();
    for (t, label) in marks {
        match merged.iter_mut().find(|(u, _)| (u - t).abs() < 1e-6) {
            Some((_, l)) => *l = format!("{l} · {label}"),
            None => merged.push((*t, label.clone())),
        }
    }
    let mut row_ends: Vec<f64> = Vec::new();
    let placed: Vec<(f64, String, usize)> = merged
        .into_iter()
        .map(|(t, label)| {
            let x0 = x(t) + 3.0;
            let row = row_ends.iter().position(|end| *end < x0).unwrap_or(row_ends.len());
            if row == row_ends.len() {
                row_ends.push(0.0);
            }
            // About 5.5 px per character at font size 10.
            row_ends[row] = x0 + label.chars().count() as f64 * 5.5;
            (t, label, row)
        })
        .collect();
    let top_margin = TOP + 12.0 * row_ends.len().saturating_sub(1) as f64;
    let h = top_margin + lanes + AXIS;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(
        s,
        r##"<rect width="100%" height="100%" fill="#fff"/><text x="{LEFT}" y="22" font-size="15" font-weight="bold">{}</text>"##,
        esc(title)
    );
    let mut top = top_margin;
    for tl in timelines {
        let lane_top = top;
        top += tl.height(LANE);
        let top = lane_top;
        let y = |layer: Option<u8>| top + LANE - 20.0 - f64::from(layer.unwrap_or(0).min(2)) * ((LANE - 30.0) / 2.0);
        let _ = write!(s, r##"<text x="8" y="{}" fill="#333">{}</text>"##, top + LANE / 2.0, esc(&tl.label));
        for (name, layer) in [("q", 0u8), ("h", 1), ("f", 2)] {
            let _ = write!(
                s,
                r##"<text x="{}" y="{}" fill="#999" font-size="10">{name}</text><line x1="{LEFT}" x2="{}" y1="{2}" y2="{2}" stroke="#eee"/>"##,
                LEFT - 14.0,
                y(Some(layer)) + 3.0,
                W - RIGHT,
            );
        }
        for &(start, len) in &tl.freezes {
            let _ = write!(
                s,
                r##"<rect x="{}" y="{}" width="{}" height="{}" fill="#e5484d" fill-opacity="0.35"><title>freeze {:.0} ms</title></rect>"##,
                x(start),
                top + 4.0,
                (x(start + len) - x(start)).max(1.0),
                LANE - 14.0,
                len * 1000.0
            );
        }
        if !tl.layers.is_empty() {
            let mut d = String::new();
            let mut last_y = None;
            for &(t, layer) in &tl.layers {
                let yy = y(layer);
                match last_y {
                    None => {
                        let _ = write!(d, "M{:.1},{:.1}", x(t), yy);
                    }
                    Some(_) => {
                        let _ = write!(d, " H{:.1} V{:.1}", x(t), yy);
                    }
                }
                last_y = Some(yy);
            }
            let _ = write!(d, " H{:.1}", x(duration));
            let _ = write!(s, r##"<path d="{d}" fill="none" stroke="#2563eb" stroke-width="2"/>"##);
        }
        let panels: [(&str, &str, BinValue); 3] = [
            ("kbit/s", "#16a34a", |b| Some(b.kbps)),
            ("loss % (before repair)", "#e5484d", |b| b.loss_pct),
            ("delay p50 ms", "#9333ea", |b| b.delay_ms),
        ];
        if !tl.bins.is_empty() {
            for (k, (name, color, value)) in panels.into_iter().enumerate() {
                let ptop = top + LANE + PANEL * k as f64;
                let max = tl.bins.iter().filter_map(value).fold(0.0f64, f64::max);
                let scale = if max > 0.0 { max } else { 1.0 };
                let y = |v: f64| ptop + PANEL - 6.0 - (v / scale) * (PANEL - 14.0);
                let _ = write!(
                    s,
                    r##"<text x="8" y="{}" fill="#666" font-size="10">{name} (max {max:.0})</text><line x1="{LEFT}" x2="{}" y1="{2}" y2="{2}" stroke="#eee"/>"##,
                    ptop + PANEL / 2.0,
                    W - RIGHT,
                    y(0.0),
                );
                s.push_str(&step_path(&tl.bins, tl.bin_s, value, &x, &y, color));
            }
        }
    }
    for (t, label, row) in &placed {
        let _ = write!(
            s,
            r##"<line x1="{0}" x2="{0}" y1="{top_margin}" y2="{1}" stroke="#666" stroke-dasharray="4 3"/><text x="{2}" y="{3}" fill="#666" font-size="10">{4}</text>"##,
            x(*t),
            h - AXIS,
            x(*t) + 3.0,
            top_margin - 4.0 - 12.0 * *row as f64,
            esc(label)
        );
    }
    let ticks = (duration.ceil() as u64).clamp(1, 3600);
    let every = [1u64, 2, 5, 10, 30, 60, 300].into_iter().find(|e| ticks / e <= 15).unwrap_or(600);
    for sec in (0..=ticks).step_by(every as usize) {
        let _ = write!(
            s,
            r##"<text x="{}" y="{}" fill="#666" font-size="10" text-anchor="middle">{sec}s</text>"##,
            x(sec as f64),
            h - AXIS + 16.0
        );
    }
    s.push_str("</svg>\n");
    s
}

/// A step line over the bins, broken where a bin has no value.
fn step_path(
    bins: &[PlotBin],
    bin_s: f64,
    value: BinValue,
    x: &dyn Fn(f64) -> f64,
    y: &dyn Fn(f64) -> f64,
    color: &str,
) -> String {
    let mut d = String::new();
    let mut open = false;
    for b in bins {
        match value(b) {
            Some(v) => {
                let _ = write!(d, "{}{:.1},{:.1} H{:.1}", if open { " L" } else { " M" }, x(b.t), y(v), x(b.t + bin_s));
                open = true;
            }
            None => open = false,
        }
    }
    if d.is_empty() {
        return String::new();
    }
    format!(r##"<path d="{}" fill="none" stroke="{color}" stroke-width="1.5"/>"##, d.trim_start())
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_lanes_freezes_and_marks() {
        let tl = Timeline {
            label: "bob <- alice".into(),
            layers: vec![(0.0, Some(2)), (10.5, Some(1)), (11.6, Some(0))],
            freezes: vec![(10.0, 1.2)],
            ..Timeline::default()
        };
        let svg = timeline_svg("bandwidth-step", 30.0, &[(10.0, "300 kbps".into())], &[tl]);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("bob &lt;- alice"), "labels are escaped");
        assert!(svg.contains("<title>freeze 1200 ms</title>"));
        assert!(svg.contains("300 kbps"));
        assert_eq!(svg.matches("<path").count(), 1);
        // Three layer changes: a move and two horizontal-then-vertical steps, then on to the end.
        assert_eq!(svg.matches(" V").count(), 2);
        assert!(!svg.contains("kbit/s"), "no bins, no panels");
    }

    #[test]
    fn marks_at_one_instant_share_a_label_and_close_ones_stack() {
        let marks = [
            (5.0, "up outage".to_string()),
            (5.0, "down outage".to_string()),
            (5.2, "a long label close to the others".to_string()),
            (25.0, "far".to_string()),
        ];
        let svg = timeline_svg("m", 30.0, &marks, &[Timeline::default()]);
        assert!(svg.contains("up outage · down outage"), "one label per instant");
        assert_eq!(svg.matches("stroke-dasharray").count(), 3, "one line per instant");
        // Two rows of labels: the margin grows by 12 px; the close label goes one row up, the far one stays.
        assert!(svg.contains(r##"y="48" fill="#666" font-size="10">up outage"##), "{svg}");
        assert!(svg.contains(r##"y="36" fill="#666" font-size="10">a long label"##), "{svg}");
        assert!(svg.contains(r##"y="48" fill="#666" font-size="10">far"##), "{svg}");
    }

    #[test]
    fn draws_value_panels_and_breaks_lines_at_gaps() {
        let bin = |t: f64, kbps: f64, loss: Option<f64>, delay: Option<f64>| PlotBin {
            t,
            kbps,
            loss_pct: loss,
            delay_ms: delay,
        };
        let tl = Timeline {
            label: "bob".into(),
            layers: vec![(0.0, None)],
            bins: vec![
                bin(0.0, 800.0, Some(0.0), Some(20.0)),
                bin(0.5, 400.0, None, None),
                bin(1.0, 600.0, Some(10.0), Some(80.0)),
            ],
            bin_s: 0.5,
            ..Timeline::default()
        };
        let svg = timeline_svg("loss", 2.0, &[], &[tl]);
        assert!(
            svg.contains("kbit/s (max 800)")
                && svg.contains("loss % (before repair) (max 10)")
                && svg.contains("delay p50 ms (max 80)")
        );
        // The layer line and three panels; bitrate is continuous, loss and delay break at the empty bin.
        assert_eq!(svg.matches("<path").count(), 4);
        assert_eq!(svg.matches(" M").count() + svg.matches("d=\"M").count(), 1 + 1 + 2 + 2, "{svg}");
        assert!(svg.contains(r#"height="302""#), "40 + 90 + 3 × 44 + 40: {svg}");
    }
}

//! Line charts as SVG files (reward curves, eval curves, accuracy by context length).
//!
//! Built with plotters' SVG backend and its built-in text metrics, so no system fonts are
//! needed; the files open in any browser.

use std::path::Path;

use memfactory_core::{Error, Result};
use plotters::prelude::*;

/// One line of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend label.
    pub name: String,
    /// `(x, y)` points in x order.
    pub points: Vec<(f64, f64)>,
    /// Optional `(x, low, high)` band drawn behind the line (e.g. ± std or a 95 % CI).
    pub band: Vec<(f64, f64, f64)>,
}

impl Series {
    /// A line without a band.
    pub fn line(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            name: name.into(),
            points,
            band: Vec::new(),
        }
    }
}

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn draw_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("drawing {}: {e}", path.display()))
}

/// Writes an SVG line chart of `series` to `path`. Empty series are skipped; with no
/// point at all, an empty chart with the title is written.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<()> {
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
    draw_panel(&root, path, title, x_label, y_label, series)?;
    root.present().map_err(|e| draw_err(path, e))?;
    Ok(())
}

/// One panel of [`panels_chart`]: its title, y label and lines.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    /// Title above the panel.
    pub title: String,
    /// Label of its y axis.
    pub y_label: String,
    /// Its lines.
    pub series: Vec<Series>,
}

/// Writes an SVG of `panels` stacked top to bottom, sharing the x label (e.g. seconds per
/// question above peak memory, both against context length) — quantities of different
/// units, each on its own y axis.
pub fn panels_chart(path: &Path, x_label: &str, panels: &[Panel]) -> Result<()> {
    let rows = panels.len().max(1);
    let root = SVGBackend::new(path, (800, 400 * rows as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
    for (area, p) in root.split_evenly((rows, 1)).iter().zip(panels) {
        draw_panel(area, path, &p.title, x_label, &p.y_label, &p.series)?;
    }
    root.present().map_err(|e| draw_err(path, e))?;
    Ok(())
}

/// Draws one line chart of `series` on `root` (`path`: for error messages).
fn draw_panel(
    root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<()> {
    let xs = series.iter().flat_map(|s| {
        s.points
            .iter()
            .map(|p| p.0)
            .chain(s.band.iter().map(|b| b.0))
    });
    let ys = series.iter().flat_map(|s| {
        s.points
            .iter()
            .map(|p| p.1)
            .chain(s.band.iter().flat_map(|b| [b.1, b.2]))
    });
    let (mut x0, mut x1) = minmax(xs).unwrap_or((0.0, 1.0));
    let (mut y0, mut y1) = minmax(ys).unwrap_or((0.0, 1.0));
    if x1 - x0 < 1e-12 {
        x0 -= 0.5;
        x1 += 0.5;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    y0 -= pad;
    y1 += pad;

    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| draw_err(path, e))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()
        .map_err(|e| draw_err(path, e))?;
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        if s.band.len() >= 2 {
            let mut poly: Vec<(f64, f64)> = s.band.iter().map(|b| (b.0, b.2)).collect();
            poly.extend(s.band.iter().rev().map(|b| (b.0, b.1)));
            chart
                .draw_series(std::iter::once(Polygon::new(
                    poly,
                    color.mix(0.15).filled(),
                )))
                .map_err(|e| draw_err(path, e))?;
        }
        if s.points.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| draw_err(path, e))?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        if s.points.len() <= 40 {
            chart
                .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| draw_err(path, e))?;
        }
    }
    if series.iter().any(|s| !s.points.is_empty()) {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| draw_err(path, e))?;
    }
    Ok(())
}

fn minmax(v: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    v.filter(|x| x.is_finite()).fold(None, |acc, x| match acc {
        None => Some((x, x)),
        Some((a, b)) => Some((a.min(x), b.max(x))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_an_svg_with_lines_and_legend() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.svg");
        let s = Series {
            name: "reward".into(),
            points: vec![(0.0, 0.1), (1.0, 0.3), (2.0, 0.2)],
            band: vec![(0.0, 0.0, 0.2), (1.0, 0.2, 0.4), (2.0, 0.1, 0.3)],
        };
        line_chart(
            &p,
            "Reward",
            "step",
            "reward",
            &[s, Series::line("empty", vec![])],
        )
        .unwrap();
        let svg = std::fs::read_to_string(&p).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..50.min(svg.len())]);
        assert!(svg.contains("Reward") && svg.contains("reward"));
        assert!(svg.contains("<polyline") || svg.contains("<path"));
        // No points at all still gives a valid (empty) chart.
        line_chart(&p, "Nothing yet", "step", "y", &[]).unwrap();
        assert!(std::fs::read_to_string(&p).unwrap().contains("Nothing yet"));
    }

    #[test]
    fn panels_stack_with_their_own_titles_and_y_labels() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cost.svg");
        let panel = |t: &str, y: &str, k: f64| Panel {
            title: t.into(),
            y_label: y.into(),
            series: vec![Series::line("all", vec![(1.0, k), (2.0, 2.0 * k)])],
        };
        panels_chart(
            &p,
            "tokens",
            &[
                panel("Seconds per question", "seconds", 0.5),
                panel("Peak RSS", "MiB", 300.0),
            ],
        )
        .unwrap();
        let svg = std::fs::read_to_string(&p).unwrap();
        assert!(svg.starts_with("<svg"));
        for w in [
            "Seconds per question",
            "Peak RSS",
            "MiB",
            "seconds",
            "tokens",
        ] {
            assert!(svg.contains(w), "{w} missing");
        }
        assert!(svg.contains("height=\"800\""), "two panels of 400 px");
    }
}

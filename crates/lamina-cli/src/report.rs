//! The run report: after training, plots of the history and of the test-split results (PNG and
//! SVG, drawn with plotters) and a self-contained `report.html` that shows them with the final
//! metrics, the model summary and the resolved configuration.
//!
//! Text is drawn with an embedded DejaVu Sans (`assets/`), so the PNGs look the same on a machine
//! without system fonts. Invalid data (NaN losses, empty curves, ragged matrices) is skipped, not
//! fatal: a plot is written only when it has something valid to show.

use ab_glyph::{point, Font, FontRef, ScaleFont};
use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder};
use lamina_core::{Error, Result};
use lamina_train::History;
use plotters::coord::ranged1d::{AsRangedCoord, DefaultFormatting, KeyPointHint, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters_backend::{BackendColor, BackendCoord, BackendTextStyle, DrawingErrorKind};
use std::fmt::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// DejaVu Sans 2.37 (Bitstream Vera licence, see assets/README.md).
const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
/// The family every text style names; plotters looks registered fonts up by this name.
const FAMILY: &str = "sans-serif";

// matplotlib's tab10 blue and orange: distinct for the common forms of colour blindness.
const BLUE: RGBColor = RGBColor(31, 119, 180);
const ORANGE: RGBColor = RGBColor(255, 127, 14);
const GREY: RGBColor = RGBColor(110, 110, 110);
const INK: RGBColor = RGBColor(33, 33, 33);

/// Most points drawn in a scatter plot; beyond it an even subsample keeps the SVG small.
const MAX_SCATTER: usize = 20_000;

/// Everything a run report shows. Build it from the run's results and pass it to
/// [`write_report`].
pub struct RunReport<'a> {
    /// Run name, e.g. `"digits_mlp"`; the page title.
    pub title: &'a str,
    /// The model's summary table (`ModelSpec::summary()`), shown in monospace.
    pub model_summary: &'a str,
    /// The resolved configuration as pretty JSON.
    pub config: &'a str,
    /// Per-epoch losses, metrics and learning rates.
    pub history: &'a History,
    /// Class names for the confusion matrix axes (indices are used when absent or of the wrong
    /// length).
    pub class_names: Option<&'a [String]>,
    /// Confusion matrix of the test split: rows = true class, columns = predicted class.
    pub confusion: Option<&'a [Vec<u64>]>,
    /// ROC curve of a binary problem: false positive rates, true positive rates, and the AUC.
    pub roc: Option<(&'a [f64], &'a [f64], f64)>,
    /// Regression results on the test split: (predicted, actual).
    pub regression: Option<(&'a [f64], &'a [f64])>,
    /// Final numbers shown in a table, e.g. `("test accuracy", 0.97)`.
    pub final_metrics: &'a [(String, f64)],
}

/// Writes the plots that apply and `report.html` into `dir` (created if missing) and returns
/// the paths written, the page last. Plots: `loss`, `accuracy` (when accuracies were logged),
/// `lr`, `confusion`, `roc` and `pred_vs_actual`, each as `.png` and `.svg`. Errors are
/// [`Error::Io`] naming the file.
pub fn write_report(dir: &Path, r: &RunReport) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    let font = embedded_font()?;
    let plots = plan(r);
    let mut written = Vec::with_capacity(2 * plots.len() + 1);
    for plot in &plots {
        written.extend(render(dir, plot, &font)?);
    }
    let page = dir.join("report.html");
    write_file(&page, html(r, &plots).as_bytes())?;
    written.push(page);
    Ok(written)
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io(format!("{}: {e}", path.display()))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| io_error(path, e))
}

/// The embedded font, parsed and registered with plotters (which keeps a global table, used to
/// measure text) once per process.
fn embedded_font() -> Result<FontRef<'static>> {
    static FONT_REF: OnceLock<Option<FontRef<'static>>> = OnceLock::new();
    FONT_REF
        .get_or_init(|| {
            let font = FontRef::try_from_slice(FONT).ok()?;
            plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).ok()?;
            Some(font)
        })
        .clone()
        .ok_or_else(|| Error::Io("report: the embedded font could not be loaded".to_string()))
}

// ---------------------------------------------------------------------------------------------
// What to draw

/// One figure: a file stem, its size and what it shows.
struct Plot<'a> {
    stem: &'static str,
    /// Alt text and figure caption in the page.
    caption: String,
    size: (u32, u32),
    kind: Kind<'a>,
}

enum Kind<'a> {
    Lines(LineChart),
    Confusion {
        counts: &'a [Vec<u64>],
        cols: usize,
        names: Vec<String>,
    },
    Roc {
        points: Vec<(f64, f64)>,
        auc: f64,
    },
    /// (actual, predicted) pairs.
    Scatter {
        points: Vec<(f64, f64)>,
    },
}

/// Per-epoch curves sharing one chart.
struct LineChart {
    title: &'static str,
    y_desc: &'static str,
    series: Vec<Series>,
    /// Use a log axis when the values span orders of magnitude.
    log_ok: bool,
    /// Values the axis must include (accuracies: 1.0).
    include: Option<f64>,
    legend: SeriesLabelPosition,
}

struct Series {
    name: &'static str,
    color: RGBColor,
    /// Runs of consecutive epochs with finite values; a NaN or missing value breaks the line.
    segments: Vec<Vec<(usize, f64)>>,
}

impl Series {
    fn new(
        name: &'static str,
        color: RGBColor,
        values: impl Iterator<Item = (usize, Option<f64>)>,
    ) -> Self {
        let mut segments: Vec<Vec<(usize, f64)>> = Vec::new();
        let mut current = Vec::new();
        for (epoch, v) in values {
            match v {
                Some(v) if v.is_finite() => current.push((epoch, v)),
                _ => {
                    if !current.is_empty() {
                        segments.push(std::mem::take(&mut current));
                    }
                }
            }
        }
        if !current.is_empty() {
            segments.push(current);
        }
        Series {
            name,
            color,
            segments,
        }
    }

    fn points(&self) -> impl Iterator<Item = &(usize, f64)> {
        self.segments.iter().flatten()
    }

    fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }
}

/// The plots that apply to this run, in page order.
fn plan<'a>(r: &RunReport<'a>) -> Vec<Plot<'a>> {
    let mut plots = Vec::new();
    let epochs = &r.history.epochs;
    let line = |title, y_desc, series: Vec<Series>, log_ok, include, legend| {
        let series: Vec<Series> = series.into_iter().filter(|s| !s.is_empty()).collect();
        (!series.is_empty()).then_some(LineChart {
            title,
            y_desc,
            series,
            log_ok,
            include,
            legend,
        })
    };
    let loss = line(
        "Loss per epoch",
        "loss",
        vec![
            Series::new(
                "train",
                BLUE,
                epochs.iter().map(|e| (e.epoch, Some(e.train_loss))),
            ),
            Series::new(
                "validation",
                ORANGE,
                epochs.iter().map(|e| (e.epoch, e.val_loss)),
            ),
        ],
        true,
        None,
        SeriesLabelPosition::UpperRight,
    );
    if let Some(c) = loss {
        plots.push(Plot {
            stem: "loss",
            caption: "Training and validation loss per epoch".to_string(),
            size: (800, 500),
            kind: Kind::Lines(c),
        });
    }
    let accuracy = line(
        "Accuracy per epoch",
        "accuracy",
        vec![
            Series::new(
                "train",
                BLUE,
                epochs.iter().map(|e| (e.epoch, e.train_accuracy)),
            ),
            Series::new(
                "validation",
                ORANGE,
                epochs.iter().map(|e| (e.epoch, e.val_accuracy)),
            ),
        ],
        false,
        Some(1.0),
        SeriesLabelPosition::LowerRight,
    );
    if let Some(c) = accuracy {
        plots.push(Plot {
            stem: "accuracy",
            caption: "Training and validation accuracy per epoch".to_string(),
            size: (800, 500),
            kind: Kind::Lines(c),
        });
    }
    let lr = line(
        "Learning rate per epoch",
        "learning rate",
        vec![Series::new(
            "learning rate",
            BLUE,
            epochs.iter().map(|e| (e.epoch, Some(e.lr))),
        )],
        true,
        None,
        SeriesLabelPosition::UpperRight,
    );
    if let Some(c) = lr {
        plots.push(Plot {
            stem: "lr",
            caption: "Learning rate used in each epoch's last update".to_string(),
            size: (800, 500),
            kind: Kind::Lines(c),
        });
    }
    if let Some(counts) = r.confusion {
        let cols = counts.iter().map(Vec::len).max().unwrap_or(0);
        let k = counts.len().max(cols);
        // Beyond MAX_CLASSES a cell would be under 2 px: no readable plot, so none.
        if k > 0 && k <= MAX_CLASSES {
            let names: Vec<String> = match r.class_names {
                Some(n) if n.len() >= k => n.iter().take(k).map(|s| short_name(s)).collect(),
                _ => (0..k).map(|i| i.to_string()).collect(),
            };
            let (w, h) = confusion_size(counts.len(), cols, &names);
            plots.push(Plot {
                stem: "confusion",
                caption: "Confusion matrix on the test split: rows are true classes, columns \
                          predicted; shading is the share of each true class"
                    .to_string(),
                size: (w, h),
                kind: Kind::Confusion {
                    counts,
                    cols,
                    names,
                },
            });
        }
    }
    if let Some((fpr, tpr, auc)) = r.roc {
        let points: Vec<(f64, f64)> = fpr
            .iter()
            .zip(tpr)
            .map(|(&x, &y)| (x, y))
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        let points = thin(points, MAX_ROC);
        if !points.is_empty() {
            plots.push(Plot {
                stem: "roc",
                caption: format!("ROC curve on the test split (AUC = {})", fmt_metric(auc)),
                size: (640, 600),
                kind: Kind::Roc { points, auc },
            });
        }
    }
    if let Some((pred, actual)) = r.regression {
        let valid: Vec<(f64, f64)> = actual
            .iter()
            .zip(pred)
            .map(|(&a, &p)| (a, p))
            .filter(|(a, p)| a.is_finite() && p.is_finite())
            .collect();
        let stride = valid.len().div_ceil(MAX_SCATTER).max(1);
        let points: Vec<(f64, f64)> = valid.iter().copied().step_by(stride).collect();
        if !points.is_empty() {
            let mut caption = "Predicted against actual values on the test split".to_string();
            if stride > 1 {
                let _ = write!(caption, " (every {stride}th of {} samples)", valid.len());
            }
            plots.push(Plot {
                stem: "pred_vs_actual",
                caption,
                size: (640, 600),
                kind: Kind::Scatter { points },
            });
        }
    }
    plots
}

/// Most classes drawn in a confusion matrix (cells of 2 px).
const MAX_CLASSES: usize = 280;
/// Most points of a ROC curve drawn; longer curves are thinned evenly (keeping both ends).
const MAX_ROC: usize = 5_000;

/// Every `stride`-th point and the last, so that at most about `max` remain.
fn thin(points: Vec<(f64, f64)>, max: usize) -> Vec<(f64, f64)> {
    let stride = points.len().div_ceil(max.max(1)).max(1);
    if stride == 1 {
        return points;
    }
    let last = points.last().copied();
    let mut out: Vec<(f64, f64)> = points.into_iter().step_by(stride).collect();
    if let Some(p) = last {
        if out.last() != Some(&p) {
            out.push(p);
        }
    }
    out
}

/// Class names longer than this are cut with an ellipsis so the axes keep their room.
const MAX_NAME: usize = 14;

fn short_name(s: &str) -> String {
    if s.chars().count() <= MAX_NAME {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(MAX_NAME - 1).collect();
        t.push('…');
        t
    }
}

/// Geometry of the confusion plot, shared by `confusion_size` and the drawing.
struct Grid {
    cell: u32,
    label_font: u32,
    /// Width of the widest class name in pixels (approximate).
    name_px: u32,
    /// Rotate column names when they do not fit under their cells.
    rotate: bool,
}

fn grid(rows: usize, cols: usize, names: &[String]) -> Grid {
    let k = rows.max(cols).max(1) as u32;
    // About 560 px of cells, at least 2 px and at most 110 px each.
    let cell = (560 / k).clamp(2, 110);
    let label_font = if cell >= 20 { LABEL } else { 10 };
    let chars = names.iter().map(|s| s.chars().count()).max().unwrap_or(1) as u32;
    // DejaVu Sans averages about 0.62 em per character.
    let name_px = chars * label_font * 62 / 100 + 4;
    Grid {
        cell,
        label_font,
        name_px,
        rotate: name_px + 8 > cell,
    }
}

fn confusion_size(rows: usize, cols: usize, names: &[String]) -> (u32, u32) {
    let g = grid(rows, cols, names);
    let w = y_area(&g) + g.cell * cols as u32 + 2 * MARGIN;
    let h = x_area(&g) + g.cell * rows as u32 + 2 * MARGIN + 40;
    (w.max(440), h)
}

/// Room left of the cells: class names, ticks and the axis title.
fn y_area(g: &Grid) -> u32 {
    g.name_px + 48
}

/// Room below the cells: class names (rotated when they do not fit) and the axis title.
fn x_area(g: &Grid) -> u32 {
    if g.rotate {
        g.name_px + 52
    } else {
        g.label_font + 50
    }
}

// ---------------------------------------------------------------------------------------------
// Drawing

/// Space around every chart, in pixels.
const MARGIN: u32 = 18;

type DrawResult<DB> =
    std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

impl Plot<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        match &self.kind {
            Kind::Lines(c) => draw_lines(root, c),
            Kind::Confusion {
                counts,
                cols,
                names,
            } => draw_confusion(root, counts, *cols, names),
            Kind::Roc { points, auc } => draw_roc(root, points, *auc),
            Kind::Scatter { points } => draw_scatter(root, points),
        }
    }
}

/// Draws `plot` into `<stem>.png` and `<stem>.svg`.
fn render(dir: &Path, plot: &Plot, font: &FontRef<'static>) -> Result<[PathBuf; 2]> {
    let (w, h) = plot.size;
    let png = dir.join(format!("{}.png", plot.stem));
    let svg = dir.join(format!("{}.svg", plot.stem));

    let mut rgb = vec![255u8; w as usize * h as usize * 3];
    guarded(&png, || {
        let root = Canvas::new(&mut rgb, (w, h), font.clone()).into_drawing_area();
        plot.draw(&root)?;
        root.present()
    })?;
    let mut bytes = Vec::new();
    PngEncoder::new(&mut bytes)
        .write_image(&rgb, w, h, ExtendedColorType::Rgb8)
        .map_err(|e| io_error(&png, e))?;
    write_file(&png, &bytes)?;

    let mut text = String::new();
    guarded(&svg, || {
        let root = SVGBackend::with_string(&mut text, (w, h)).into_drawing_area();
        plot.draw(&root)?;
        root.present()
    })?;
    write_file(&svg, text.as_bytes())?;
    Ok([png, svg])
}

/// Runs a drawing, turning its error, or a panic inside plotters, into an error naming `path`:
/// a plotting bug must not take down the run that has just finished training.
fn guarded<E: std::fmt::Debug>(
    path: &Path,
    draw: impl FnOnce() -> std::result::Result<(), E>,
) -> Result<()> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(draw)) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(io_error(path, format!("drawing failed: {e:?}"))),
        Err(_) => Err(io_error(
            path,
            "drawing failed: the plotting library panicked",
        )),
    }
}

/// Text of `px` pixels per em (plotters draws a font of size s at s / 1.24 px, so scale up).
/// plotters' bitmap backend with text drawn here: plotters 0.3.7 places ab_glyph glyphs without
/// their side bearings and at rounded offsets, so letters of a word sit unevenly ("posit ive").
/// Everything but text goes to the bitmap backend unchanged.
struct Canvas<'a> {
    inner: BitMapBackend<'a>,
    font: FontRef<'static>,
}

impl<'a> Canvas<'a> {
    fn new(rgb: &'a mut [u8], size: (u32, u32), font: FontRef<'static>) -> Self {
        Canvas {
            inner: BitMapBackend::with_buffer(rgb, size),
            font,
        }
    }
}

type CanvasError = DrawingErrorKind<<BitMapBackend<'static> as DrawingBackend>::ErrorType>;

impl DrawingBackend for Canvas<'_> {
    type ErrorType = <BitMapBackend<'static> as DrawingBackend>::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }
    fn ensure_prepared(&mut self) -> std::result::Result<(), CanvasError> {
        self.inner.ensure_prepared()
    }
    fn present(&mut self) -> std::result::Result<(), CanvasError> {
        self.inner.present()
    }
    fn draw_pixel(
        &mut self,
        p: BackendCoord,
        c: BackendColor,
    ) -> std::result::Result<(), CanvasError> {
        self.inner.draw_pixel(p, c)
    }
    fn draw_line<S: plotters_backend::BackendStyle>(
        &mut self,
        a: BackendCoord,
        b: BackendCoord,
        s: &S,
    ) -> std::result::Result<(), CanvasError> {
        self.inner.draw_line(a, b, s)
    }
    fn draw_rect<S: plotters_backend::BackendStyle>(
        &mut self,
        a: BackendCoord,
        b: BackendCoord,
        s: &S,
        fill: bool,
    ) -> std::result::Result<(), CanvasError> {
        self.inner.draw_rect(a, b, s, fill)
    }
    fn draw_path<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        s: &S,
    ) -> std::result::Result<(), CanvasError> {
        self.inner.draw_path(path, s)
    }
    fn draw_circle<S: plotters_backend::BackendStyle>(
        &mut self,
        c: BackendCoord,
        r: u32,
        s: &S,
        fill: bool,
    ) -> std::result::Result<(), CanvasError> {
        self.inner.draw_circle(c, r, s, fill)
    }
    fn fill_polygon<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        s: &S,
    ) -> std::result::Result<(), CanvasError> {
        self.inner.fill_polygon(vert, s)
    }
    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> std::result::Result<(), CanvasError> {
        self.inner.blit_bitmap(pos, size, src)
    }

    fn draw_text<T: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &T,
        pos: BackendCoord,
    ) -> std::result::Result<(), CanvasError> {
        let color = style.color();
        if color.alpha == 0.0 || text.is_empty() {
            return Ok(());
        }
        // The same scale as plotters' ab_glyph layout, so the boxes it reserved for labels fit.
        let font = self.font.as_scaled(style.size() as f32);
        let width = text_width(&font, text);
        let anchor = style.anchor();
        let x0 = match anchor.h_pos {
            HPos::Left => 0.0,
            HPos::Center => -width / 2.0,
            HPos::Right => -width,
        };
        // The box from ascent to descent is anchored; glyphs sit on the baseline inside it.
        let (ascent, height) = (font.ascent(), font.ascent() - font.descent());
        let baseline = match anchor.v_pos {
            VPos::Top => ascent,
            VPos::Center => ascent - height / 2.0,
            VPos::Bottom => ascent - height,
        };
        let transform = style.transform();
        let (w, h) = self.get_size();
        let mut caret = x0;
        let mut prev = None;
        for c in text.chars() {
            let id = font.glyph_id(c);
            if let Some(p) = prev {
                caret += font.kern(p, id);
            }
            prev = Some(id);
            let glyph = id.with_scale_and_position(font.scale(), point(caret, baseline));
            caret += font.h_advance(id);
            let Some(outline) = self.font.outline_glyph(glyph) else {
                continue;
            };
            let b = outline.px_bounds();
            let mut pixels = Vec::new();
            outline.draw(|gx, gy, coverage| {
                if coverage > 0.0 {
                    pixels.push((
                        b.min.x as i32 + gx as i32,
                        b.min.y as i32 + gy as i32,
                        coverage,
                    ));
                }
            });
            for (x, y, coverage) in pixels {
                let (dx, dy) = transform.transform(x, y);
                let (px, py) = (pos.0 + dx, pos.1 + dy);
                if px >= 0 && py >= 0 && (px as u32) < w && (py as u32) < h {
                    let alpha = color.alpha * f64::from(coverage.min(1.0));
                    self.inner.draw_pixel(
                        (px, py),
                        BackendColor {
                            alpha,
                            rgb: color.rgb,
                        },
                    )?;
                }
            }
        }
        Ok(())
    }

    fn estimate_text_size<T: BackendTextStyle>(
        &self,
        text: &str,
        style: &T,
    ) -> std::result::Result<(u32, u32), CanvasError> {
        let font = self.font.as_scaled(style.size() as f32);
        let (w, h) = (text_width(&font, text), font.ascent() - font.descent());
        let (w, h) = (w.ceil() as u32, h.ceil() as u32);
        Ok(match style.transform() {
            FontTransform::Rotate90 | FontTransform::Rotate270 => (h, w),
            _ => (w, h),
        })
    }
}

/// Advance width of `text` with kerning, in pixels.
fn text_width<F: Font>(font: &ab_glyph::PxScaleFont<F>, text: &str) -> f32 {
    let mut width = 0.0;
    let mut prev = None;
    for c in text.chars() {
        let id = font.glyph_id(c);
        if let Some(p) = prev {
            width += font.kern(p, id);
        }
        prev = Some(id);
        width += font.h_advance(id);
    }
    width
}

fn font(px: u32) -> TextStyle<'static> {
    TextStyle::from((FAMILY, f64::from(px) * 1.24).into_font()).color(&INK)
}

// Text sizes in pixels per em.
const TITLE: u32 = 20;
const DESC: u32 = 15;
const LABEL: u32 = 13;

/// A value range that plotters can draw: non-empty and padded by 5 % on each side.
fn padded(lo: f64, hi: f64) -> (f64, f64) {
    let span = hi - lo;
    if span.is_finite() && span > f64::EPSILON * hi.abs().max(lo.abs()).max(1e-300) {
        (lo - 0.05 * span, hi + 0.05 * span)
    } else {
        // One value (or a span too small or too large to subdivide): centre it.
        let d = if lo != 0.0 { lo.abs() * 0.1 } else { 1e-3 };
        let d = if d.is_finite() && d > 0.0 { d } else { 1.0 };
        (lo - d, lo + d)
    }
}

/// Tick labels of a linear axis over [lo, hi] with ticks `step` apart: one notation for the
/// whole axis (scientific when its largest value is below 0.001 or at least 100 000), with as
/// many digits as the step needs.
fn ticks(lo: f64, hi: f64, step: f64) -> impl Fn(&f64) -> String {
    let max = lo.abs().max(hi.abs());
    let step = if step > 0.0 && step.is_finite() {
        step
    } else {
        (max * 0.1).max(f64::MIN_POSITIVE)
    };
    let scientific = max != 0.0 && !(1e-3..1e5).contains(&max);
    let digits = if scientific {
        (max.log10().floor() - step.log10().floor()).clamp(0.0, 6.0) as usize
    } else {
        (-step.log10().floor()).clamp(0.0, 6.0) as usize
    };
    move |v: &f64| {
        // Ticks at zero may arrive as ±1e-17 from accumulated steps.
        let v = if v.abs() < step * 1e-6 { 0.0 } else { *v };
        if v == 0.0 {
            "0".to_string()
        } else if scientific {
            format!("{v:.digits$e}")
        } else {
            format!("{v:.digits$}")
        }
    }
}

/// A tick label on a log axis: short scientific notation when small or large.
fn log_tick(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-2..1e4).contains(&a) {
        format!("{v:.0e}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn draw_lines<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, c: &LineChart) -> DrawResult<DB> {
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    let mut first = usize::MAX;
    let mut last = 0;
    for &(e, v) in c.series.iter().flat_map(Series::points) {
        lo = lo.min(v);
        hi = hi.max(v);
        first = first.min(e);
        last = last.max(e);
    }
    if let Some(v) = c.include {
        hi = hi.max(v);
    }
    let x = if first < last {
        first..last
    } else {
        first.saturating_sub(1)..last.saturating_add(1)
    };
    if c.log_ok && lo > 0.0 && hi / lo >= 100.0 {
        let y = LogAxis {
            lo: lo / 1.25,
            hi: hi * 1.25,
        };
        let fmt = |v: &f64| log_tick(*v);
        let area = y_label_area(y.ticks(&[1.0, 2.0, 5.0], 1).iter().map(&fmt));
        line_chart(root, c, x, y, &fmt, area)
    } else {
        let (lo, hi) = padded(lo, hi);
        let (lo, hi) = match c.include {
            // Accuracy cannot exceed 1 or fall below 0: keep the axis inside what is possible.
            Some(_) => (lo.max(0.0), hi.min(1.02)),
            None => (lo, hi),
        };
        let fmt = ticks(lo, hi, tick_step(lo, hi, 8));
        let area = y_label_area([fmt(&lo), fmt(&hi)]);
        line_chart(root, c, x, lo..hi, &fmt, area)
    }
}

/// A log-scale axis over [lo, hi] (both > 0) with ticks at 1, 2 and 5 times powers of ten
/// (plotters' own log axis labels powers of ten only, which leaves a two-decade loss curve with
/// two labels).
struct LogAxis {
    lo: f64,
    hi: f64,
}

impl LogAxis {
    /// Multiples of 10^k in [lo, hi], over every `every`-th decade.
    fn ticks(&self, mantissas: &[f64], every: i32) -> Vec<f64> {
        let (first, last) = (
            self.lo.log10().floor() as i32,
            self.hi.log10().ceil() as i32,
        );
        (first..=last)
            .filter(|k| k.rem_euclid(every) == 0)
            .flat_map(|k| mantissas.iter().map(move |m| m * 10f64.powi(k)))
            .filter(|v| (self.lo..=self.hi).contains(v))
            .collect()
    }
}

impl Ranged for LogAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let t = (v.ln() - self.lo.ln()) / (self.hi.ln() - self.lo.ln());
        let t = if t.is_finite() {
            t.clamp(-1.0, 2.0)
        } else {
            0.0
        };
        limit.0 + (t * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        let max = hint.max_num_points();
        if hint.weight().allow_light_points() {
            let light = self.ticks(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0], 1);
            return if light.len() <= max {
                light
            } else {
                Vec::new()
            };
        }
        for mantissas in [&[1.0, 2.0, 5.0][..], &[1.0]] {
            let t = self.ticks(mantissas, 1);
            if t.len() <= max {
                return t;
            }
        }
        let decades = (self.hi.log10() - self.lo.log10()).ceil().max(1.0) as usize;
        let every = decades.div_ceil(max.max(1)).max(1);
        self.ticks(&[1.0], i32::try_from(every).unwrap_or(i32::MAX))
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

/// The tick spacing plotters picks for at most `n` ticks in [lo, hi]: the smallest of 1, 2 or
/// 5 times a power of ten with at most `n` multiples in the range.
fn tick_step(lo: f64, hi: f64, n: usize) -> f64 {
    let span = hi - lo;
    if !(span > 0.0 && span.is_finite()) {
        return 1.0;
    }
    let mut p = 10f64.powf((span / 16.0).log10().floor() - 1.0);
    for _ in 0..12 {
        for m in [1.0, 2.0, 5.0] {
            let s = m * p;
            let count = (hi / s).floor() - (lo / s).ceil() + 1.0;
            if count <= n as f64 {
                return s;
            }
        }
        p *= 10.0;
    }
    span
}

/// Width left of a chart for the widest of `labels` plus the rotated axis title, so that the
/// two never overlap.
fn y_label_area(labels: impl IntoIterator<Item = String>) -> u32 {
    let chars = labels
        .into_iter()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(4);
    // Digits of DejaVu Sans are 0.64 em wide.
    40 + (chars as u32 * LABEL * 64).div_ceil(100)
}

fn line_chart<DB, Y>(
    root: &DrawingArea<DB, Shift>,
    c: &LineChart,
    x: Range<usize>,
    y: Y,
    y_fmt: &dyn Fn(&f64) -> String,
    y_area: u32,
) -> DrawResult<DB>
where
    DB: DrawingBackend,
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let epochs = x.end - x.start + 1;
    let mut chart = ChartBuilder::on(root)
        .caption(c.title, font(TITLE))
        .margin(MARGIN)
        .x_label_area_size(52)
        .y_label_area_size(y_area)
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(c.y_desc)
        .axis_desc_style(font(DESC))
        .label_style(font(LABEL))
        .x_labels(epochs.min(11))
        .y_labels(8)
        .y_label_formatter(y_fmt)
        .bold_line_style(BLACK.mix(0.12))
        .light_line_style(BLACK.mix(0.04))
        .draw()?;
    for s in &c.series {
        let style = s.color.stroke_width(2);
        let color = s.color;
        chart
            .draw_series(
                s.segments
                    .iter()
                    .map(move |seg| PathElement::new(seg.clone(), style)),
            )?
            .label(s.name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(2))
            });
        let few = s.points().count() <= 40;
        // Markers show every epoch when there are few, and always show isolated values
        // (a one-epoch run, or a value between two NaNs) that a line cannot.
        let markers = s
            .segments
            .iter()
            .filter(|seg| few || seg.len() == 1)
            .flatten()
            .map(move |&p| Circle::new(p, 3, color.filled()));
        chart.draw_series(markers)?;
    }
    if c.series.len() > 1 {
        chart
            .configure_series_labels()
            .position(c.legend.clone())
            .label_font(font(LABEL))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .margin(12)
            .draw()?;
    }
    Ok(())
}

/// matplotlib's "Blues" colour map at `t` in [0, 1].
fn blues(t: f64) -> RGBColor {
    const STOPS: [(u8, u8, u8); 5] = [
        (247, 251, 255),
        (198, 219, 239),
        (107, 174, 214),
        (33, 113, 181),
        (8, 48, 107),
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let x = t * (STOPS.len() - 1) as f64;
    let i = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - i as f64;
    let mix = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * f).round() as u8;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// The axis [0, n] of a grid of n cells, with ticks (class names) only at the given positions;
/// plotters' own `with_key_points` axis has no tick-label formatting.
struct CellAxis {
    n: f64,
    ticks: Vec<f64>,
}

impl Ranged for CellAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        limit.0 + (v / self.n * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        0.0..self.n
    }
}

fn draw_confusion<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    counts: &[Vec<u64>],
    cols: usize,
    names: &[String],
) -> DrawResult<DB> {
    let rows = counts.len();
    let g = grid(rows, cols, names);
    // Label every class when the labels fit, else every k-th.
    let every = |n: usize| {
        ((g.label_font + 4) as usize)
            .div_ceil(g.cell as usize)
            .max(1)
            .min(n.max(1))
    };
    let (kx, ky) = if g.rotate {
        (every(cols), every(rows))
    } else {
        (1, every(rows))
    };
    // Row 0 at the top: row r spans y in [rows-r-1, rows-r].
    let x_keys: Vec<f64> = (0..cols).step_by(kx).map(|j| j as f64 + 0.5).collect();
    let y_keys: Vec<f64> = (0..rows)
        .step_by(ky)
        .map(|r| (rows - r) as f64 - 0.5)
        .collect();
    let name_at = |i: isize| {
        usize::try_from(i)
            .ok()
            .and_then(|i| names.get(i))
            .cloned()
            .unwrap_or_default()
    };
    let x_fmt = |v: &f64| name_at((v - 0.5).round() as isize);
    let y_fmt = |v: &f64| name_at(rows as isize - 1 - (v - 0.5).round() as isize);

    let mut chart = ChartBuilder::on(root)
        .caption("Confusion matrix (test)", font(TITLE))
        .margin(MARGIN)
        .x_label_area_size(x_area(&g))
        .y_label_area_size(y_area(&g))
        .build_cartesian_2d(
            CellAxis {
                n: cols as f64,
                ticks: x_keys,
            },
            CellAxis {
                n: rows as f64,
                ticks: y_keys,
            },
        )?;
    // plotters anchors rotated tick labels as if they were not rotated (they land off the
    // axis), so rotated column names are drawn below instead, one by one.
    let no_label = |_: &f64| String::new();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .disable_y_mesh()
        .x_desc("predicted class")
        .y_desc("true class")
        .axis_desc_style(font(DESC))
        .label_style(font(g.label_font))
        .x_label_formatter(if g.rotate { &no_label } else { &x_fmt })
        .y_label_formatter(&y_fmt)
        .draw()?;

    if g.rotate {
        // Rotate270 turns text to read upwards; anchored at its right end it hangs below the
        // anchor point.
        let style = font(g.label_font)
            .transform(FontTransform::Rotate270)
            .pos(Pos::new(HPos::Right, VPos::Center));
        for j in (0..cols).step_by(kx) {
            let (px, py) = chart.backend_coord(&(j as f64 + 0.5, 0.0));
            root.draw(&Text::new(
                name_at(j as isize),
                (px, py + 10),
                style.clone(),
            ))?;
        }
    }

    let count_font = (f64::from(g.cell) * 0.3).clamp(9.0, 17.0) as u32;
    let digit_px = f64::from(count_font) * 0.64;
    for (r, row) in counts.iter().enumerate() {
        let total: u64 = row.iter().sum();
        let y0 = (rows - r - 1) as f64;
        for j in 0..cols {
            let n = row.get(j).copied().unwrap_or(0);
            let share = if total > 0 {
                n as f64 / total as f64
            } else {
                0.0
            };
            let fill = blues(share);
            chart.draw_series(std::iter::once(Rectangle::new(
                [(j as f64, y0), (j as f64 + 1.0, y0 + 1.0)],
                fill.filled(),
            )))?;
            let label = n.to_string();
            // Counts only where they fit inside the cell.
            if g.cell >= 16 && (label.len() as f64 * digit_px) < g.cell as f64 - 4.0 {
                // Zeros recede so that the errors stand out.
                let color = if share > 0.5 {
                    WHITE
                } else if n == 0 {
                    RGBColor(165, 165, 165)
                } else {
                    INK
                };
                let style = font(count_font)
                    .color(&color)
                    .pos(Pos::new(HPos::Center, VPos::Center));
                chart.draw_series(std::iter::once(Text::new(
                    label,
                    (j as f64 + 0.5, y0 + 0.5),
                    style,
                )))?;
            }
        }
    }
    // Thin cell borders keep neighbouring pale cells apart.
    if g.cell >= 12 {
        let line = BLACK.mix(0.15).stroke_width(1);
        for j in 0..=cols {
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(j as f64, 0.0), (j as f64, rows as f64)],
                line,
            )))?;
        }
        for r in 0..=rows {
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(0.0, r as f64), (cols as f64, r as f64)],
                line,
            )))?;
        }
    }
    Ok(())
}

fn draw_roc<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    points: &[(f64, f64)],
    auc: f64,
) -> DrawResult<DB> {
    let mut chart = ChartBuilder::on(root)
        .caption("ROC curve (test)", font(TITLE))
        .margin(MARGIN)
        .x_label_area_size(52)
        .y_label_area_size(64)
        // A little room beyond [0, 1] so a curve along an edge is not hidden by the axis.
        .build_cartesian_2d(-0.01..1.01, -0.01..1.01)?;
    chart
        .configure_mesh()
        .x_desc("false positive rate")
        .y_desc("true positive rate")
        .axis_desc_style(font(DESC))
        .label_style(font(LABEL))
        .x_labels(6)
        .y_labels(6)
        .x_label_formatter(&|v| format!("{v:.1}"))
        .y_label_formatter(&|v| format!("{v:.1}"))
        .bold_line_style(BLACK.mix(0.12))
        .light_line_style(BLACK.mix(0.04))
        .draw()?;
    let dash = GREY.stroke_width(1);
    chart
        .draw_series(DashedLineSeries::new(
            vec![(0.0, 0.0), (1.0, 1.0)],
            8,
            6,
            dash,
        ))?
        .label("chance")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], dash));
    let curve = BLUE.stroke_width(2);
    let name = format!(
        "ROC (AUC = {})",
        if auc.is_finite() {
            format!("{auc:.3}")
        } else {
            "n/a".into()
        }
    );
    chart
        .draw_series(std::iter::once(PathElement::new(points.to_vec(), curve)))?
        .label(name)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], curve));
    if points.len() == 1 {
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, BLUE.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font(font(LABEL))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .margin(12)
        .draw()?;
    Ok(())
}

fn draw_scatter<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    points: &[(f64, f64)],
) -> DrawResult<DB> {
    let lo = points
        .iter()
        .map(|p| p.0.min(p.1))
        .fold(f64::INFINITY, f64::min);
    let hi = points
        .iter()
        .map(|p| p.0.max(p.1))
        .fold(f64::NEG_INFINITY, f64::max);
    // One range for both axes, so that y = x is the diagonal.
    let (lo, hi) = padded(lo, hi);
    let fmt = ticks(lo, hi, tick_step(lo, hi, 8));
    let mut chart = ChartBuilder::on(root)
        .caption("Predicted vs actual (test)", font(TITLE))
        .margin(MARGIN)
        .x_label_area_size(52)
        .y_label_area_size(y_label_area([fmt(&lo), fmt(&hi)]))
        .build_cartesian_2d(lo..hi, lo..hi)?;
    chart
        .configure_mesh()
        .x_desc("actual")
        .y_desc("predicted")
        .axis_desc_style(font(DESC))
        .label_style(font(LABEL))
        .x_labels(8)
        .y_labels(8)
        .x_label_formatter(&fmt)
        .y_label_formatter(&fmt)
        .bold_line_style(BLACK.mix(0.12))
        .light_line_style(BLACK.mix(0.04))
        .draw()?;
    let dash = GREY.stroke_width(1);
    chart
        .draw_series(DashedLineSeries::new(vec![(lo, lo), (hi, hi)], 8, 6, dash))?
        .label("y = x")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], dash));
    let (radius, alpha) = if points.len() > 2000 {
        (2, 0.35)
    } else {
        (3, 0.6)
    };
    let dot = BLUE.mix(alpha).filled();
    chart
        .draw_series(points.iter().map(move |&p| Circle::new(p, radius, dot)))?
        .label("test samples")
        .legend(move |(x, y)| Circle::new((x + 11, y), 4, BLUE.filled()));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(font(LABEL))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .margin(12)
        .draw()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The page

/// Escapes text for HTML element content and attribute values.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A metric for the table: whole numbers from 2 up (counts) as integers, others with four
/// decimals, tiny or huge values in scientific notation.
fn fmt_metric(v: f64) -> String {
    let a = v.abs();
    if v == v.trunc() && (2.0..1e15).contains(&a) {
        format!("{v:.0}")
    } else {
        fmt4(v)
    }
}

/// Four decimals, or scientific notation when tiny or huge.
fn fmt4(v: f64) -> String {
    let a = v.abs();
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "∞" } else { "−∞" }.into()
    } else if a != 0.0 && !(1e-3..1e6).contains(&a) {
        format!("{v:.4e}")
    } else {
        format!("{v:.4}")
    }
}

/// Four significant digits without trailing zeros (learning rates: 0.001, 0.0005878, 1e-5).
fn fmt_sig(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() || a == 0.0 {
        return fmt4(v);
    }
    if !(1e-4..1e6).contains(&a) {
        let s = format!("{v:.3e}");
        let (m, e) = s.split_once('e').unwrap_or((&s, ""));
        let m = if m.contains('.') {
            m.trim_end_matches('0').trim_end_matches('.')
        } else {
            m
        };
        return format!("{m}e{e}");
    }
    let decimals = (3.0 - a.log10().floor()).clamp(0.0, 10.0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

const STYLE: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;\
margin:2rem auto;max-width:1700px;padding:0 1rem;color:#212121;line-height:1.45}\
h1{margin-bottom:.2rem}h2{margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}\
.sub{color:#666;margin-top:0}\
table{border-collapse:collapse;font-variant-numeric:tabular-nums}\
th,td{border:1px solid #ddd;padding:.3rem .7rem;text-align:left}td.n{text-align:right}\
th{background:#f4f6f8}tbody tr:nth-child(even){background:#fafafa}\
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,720px),1fr));\
gap:1.2rem;align-items:start}\
figure{margin:0;border:1px solid #e4e4e4;padding:.5rem;background:#fff}\
figure img{display:block;max-width:100%;height:auto}\
figcaption{color:#555;font-size:.9rem;margin-top:.3rem;max-width:800px}\
pre{background:#f6f8fa;border:1px solid #e4e4e4;padding:.8rem;overflow:auto;font-size:.85rem;\
font-family:ui-monospace,'DejaVu Sans Mono',Menlo,Consolas,monospace}\
.hist{max-height:30rem;overflow:auto;display:inline-block}";

fn html(r: &RunReport, plots: &[Plot]) -> String {
    let mut h = String::new();
    let title = escape(r.title);
    let epochs = r.history.epochs.len();
    // `write!` into a String cannot fail; the results are ignored.
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title} — lamina run report</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>{title}</h1>\n<p class=\"sub\">lamina run report · {epochs} epoch{}</p>\n",
        if epochs == 1 { "" } else { "s" }
    );

    h.push_str("<h2>Final metrics</h2>\n");
    if r.final_metrics.is_empty() {
        h.push_str("<p>No metrics were recorded.</p>\n");
    } else {
        h.push_str("<table>\n<thead><tr><th>metric</th><th>value</th></tr></thead>\n<tbody>\n");
        for (name, v) in r.final_metrics {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td class=\"n\">{}</td></tr>",
                escape(name),
                fmt_metric(*v)
            );
        }
        h.push_str("</tbody>\n</table>\n");
    }

    if !plots.is_empty() {
        h.push_str("<h2>Plots</h2>\n<div class=\"plots\">\n");
        for p in plots {
            let (w, ht) = p.size;
            let _ = writeln!(
                h,
                "<figure><a href=\"{s}.svg\"><img src=\"{s}.png\" width=\"{w}\" height=\"{ht}\" \
                 alt=\"{c}\"></a><figcaption>{c} (<a href=\"{s}.svg\">SVG</a>)</figcaption></figure>",
                s = p.stem,
                c = escape(&p.caption),
            );
        }
        h.push_str("</div>\n");
    }

    h.push_str("<h2>Training history</h2>\n");
    history_table(&mut h, r.history);

    let _ = write!(
        h,
        "<h2>Model</h2>\n<pre>{}</pre>\n<h2>Configuration</h2>\n<pre>{}</pre>\n</body>\n</html>\n",
        escape(r.model_summary.trim_end()),
        escape(r.config.trim_end())
    );
    h
}

/// Per-epoch numbers, with a column for each quantity that was logged at least once.
fn history_table(h: &mut String, history: &History) {
    let e = &history.epochs;
    if e.is_empty() {
        h.push_str("<p>No epochs were recorded.</p>\n");
        return;
    }
    type Column = (
        &'static str,
        fn(&lamina_train::EpochLog) -> Option<f64>,
        fn(f64) -> String,
    );
    let columns: [Column; 8] = [
        ("train loss", |l| Some(l.train_loss), fmt4),
        ("val loss", |l| l.val_loss, fmt4),
        ("train accuracy", |l| l.train_accuracy, fmt4),
        ("val accuracy", |l| l.val_accuracy, fmt4),
        ("train mse", |l| l.train_mse, fmt4),
        ("val mse", |l| l.val_mse, fmt4),
        ("learning rate", |l| Some(l.lr), fmt_sig),
        ("seconds", |l| Some(l.seconds), fmt_sig),
    ];
    let used: Vec<&Column> = columns
        .iter()
        .filter(|(_, f, _)| e.iter().any(|l| f(l).is_some()))
        .collect();
    h.push_str("<div class=\"hist\"><table>\n<thead><tr><th>epoch</th>");
    for (name, _, _) in &used {
        let _ = write!(h, "<th>{name}</th>");
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for l in e {
        let _ = write!(h, "<tr><td class=\"n\">{}</td>", l.epoch);
        for (_, f, fmt) in &used {
            let cell = f(l).map(fmt).unwrap_or_default();
            let _ = write!(h, "<td class=\"n\">{cell}</td>");
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody>\n</table></div>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use lamina_train::metrics::{roc_auc, roc_curve, ConfusionMatrix};
    use lamina_train::EpochLog;
    use plotters::coord::ranged1d::BoldPoints;

    /// A folder for one test's report: `$LAMINA_REPORT_DIR/<name>` when set (kept, to look at),
    /// else a temporary one that the test removes.
    fn out_dir(name: &str) -> (PathBuf, bool) {
        match std::env::var_os("LAMINA_REPORT_DIR") {
            Some(d) => (PathBuf::from(d).join(name), true),
            None => (
                std::env::temp_dir().join(format!("lamina-report-{name}-{}", std::process::id())),
                false,
            ),
        }
    }

    fn finish(dir: &Path, keep: bool) {
        if !keep {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    /// Deterministic numbers in [0, 1).
    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*seed >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `n` epochs of a run that learns: a cosine learning rate and losses of two decades for
    /// classification, a step schedule and losses of three decades for regression.
    fn history(n: usize, classification: bool) -> History {
        let scale = if classification { 2.2 } else { 40.0 };
        let epochs = (1..=n)
            .map(|e| {
                let t = e as f64;
                let lr = if classification {
                    1e-3 * 0.5 * (1.0 + (std::f64::consts::PI * (t - 1.0) / n as f64).cos()) + 1e-5
                } else {
                    1e-2 * 0.5f64.powi((e / 10) as i32)
                };
                EpochLog {
                    epoch: e,
                    train_loss: scale * (-0.18 * t).exp() + 0.04,
                    val_loss: Some(scale * (-0.15 * t).exp() + 0.09 + 0.002 * t),
                    train_accuracy: classification.then(|| 1.0 - 0.85 * (-0.25 * t).exp()),
                    val_accuracy: classification.then(|| 0.97 - 0.85 * (-0.22 * t).exp()),
                    train_mse: (!classification).then(|| scale * (-0.18 * t).exp()),
                    val_mse: (!classification).then(|| scale * (-0.15 * t).exp()),
                    lr,
                    seconds: 0.4,
                }
            })
            .collect();
        History { epochs }
    }

    fn png_size(path: &Path) -> (u32, u32) {
        let b = std::fs::read(path).unwrap();
        assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
        assert_eq!(&b[12..16], b"IHDR", "{}", path.display());
        let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        (be(16), be(20))
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    /// Checks the files of every stem in `plots` and that no other plot was written.
    /// A plot a test expects: its stem, its exact size when fixed, words its SVG must contain.
    type Expected<'a> = (&'a str, Option<(u32, u32)>, &'a [&'a str]);

    fn check(dir: &Path, written: &[PathBuf], plots: &[Expected]) {
        let page = read(&dir.join("report.html"));
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert_eq!(written.len(), 2 * plots.len() + 1, "{written:?}");
        assert_eq!(written.last().unwrap(), &dir.join("report.html"));
        for (stem, size, words) in plots {
            let png = dir.join(format!("{stem}.png"));
            let svg = dir.join(format!("{stem}.svg"));
            assert!(written.contains(&png) && written.contains(&svg), "{stem}");
            let (w, h) = png_size(&png);
            if let Some(size) = size {
                assert_eq!((w, h), *size, "{stem}");
            }
            assert!(
                page.contains(&format!("src=\"{stem}.png\" width=\"{w}\" height=\"{h}\"")),
                "{stem}"
            );
            let text = read(&svg);
            assert!(
                text.starts_with("<svg") && text.trim_end().ends_with("</svg>"),
                "{stem}"
            );
            for word in *words {
                assert!(text.contains(word), "{stem}.svg lacks {word:?}");
            }
        }
        for stem in [
            "loss",
            "accuracy",
            "lr",
            "confusion",
            "roc",
            "pred_vs_actual",
        ] {
            if !plots.iter().any(|p| p.0 == stem) {
                assert!(
                    !dir.join(format!("{stem}.png")).exists(),
                    "{stem} should not be drawn"
                );
                assert!(!page.contains(&format!("{stem}.png")), "{stem}");
            }
        }
    }

    const LINES: (u32, u32) = (800, 500);
    const SQUARE: (u32, u32) = (640, 600);

    #[test]
    fn classification_report_with_ten_classes() {
        let (dir, keep) = out_dir("digits");
        let names: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        let mut seed = 7;
        let confusion: Vec<Vec<u64>> = (0..10)
            .map(|r| {
                (0..10)
                    .map(|c| {
                        if r == c {
                            30 + (lcg(&mut seed) * 9.0) as u64
                        } else {
                            (lcg(&mut seed) * 1.6) as u64
                        }
                    })
                    .collect()
            })
            .collect();
        let metrics = vec![
            ("test accuracy".to_string(), 0.9722),
            ("test loss".to_string(), 0.0931),
            ("test samples".to_string(), 360.0),
        ];
        let h = history(30, true);
        let r = RunReport {
            title: "digits_mlp",
            model_summary: "Layer (type)        Output shape   Params\nDense (dense)       [64]           4160\n",
            config: "{\n  \"epochs\": 30,\n  \"optimizer\": \"adam\"\n}",
            history: &h,
            class_names: Some(&names),
            confusion: Some(&confusion),
            roc: None,
            regression: None,
            final_metrics: &metrics,
        };
        let written = write_report(&dir, &r).unwrap();
        check(
            &dir,
            &written,
            &[
                (
                    "loss",
                    Some(LINES),
                    &["epoch", "loss", "train", "validation"],
                ),
                ("accuracy", Some(LINES), &["epoch", "accuracy"]),
                ("lr", Some(LINES), &["epoch", "learning rate"]),
                (
                    "confusion",
                    None,
                    &["predicted class", "true class", "\n9\n"],
                ),
            ],
        );
        let page = read(&dir.join("report.html"));
        assert!(page.contains("<td>test accuracy</td><td class=\"n\">0.9722</td>"));
        assert!(page.contains("<td>test samples</td><td class=\"n\">360</td>"));
        assert!(page.contains("&quot;optimizer&quot;: &quot;adam&quot;"));
        assert!(page.contains("<pre>Layer (type)"));
        finish(&dir, keep);
    }

    #[test]
    fn binary_report_with_roc() {
        let (dir, keep) = out_dir("binary");
        let mut seed = 11;
        let labels: Vec<bool> = (0..300).map(|_| lcg(&mut seed) < 0.4).collect();
        let scores: Vec<f64> = labels
            .iter()
            .map(|&l| (if l { 0.25 } else { -0.25 }) + lcg(&mut seed) - 0.5)
            .collect();
        let (fpr, tpr, _) = roc_curve(&scores, &labels).unwrap();
        let auc = roc_auc(&scores, &labels).unwrap();
        let truth: Vec<usize> = labels.iter().map(|&l| l as usize).collect();
        let pred: Vec<usize> = scores.iter().map(|&s| (s >= 0.0) as usize).collect();
        let cm = ConfusionMatrix::from_predictions(&truth, &pred, 2).unwrap();
        let confusion: Vec<Vec<u64>> = (0..2)
            .map(|t| (0..2).map(|p| cm.get(t, p)).collect())
            .collect();
        let names = vec!["malignant".to_string(), "benign".to_string()];
        let h = history(12, true);
        let metrics = vec![
            ("test accuracy".to_string(), cm.accuracy()),
            ("test roc auc".to_string(), auc),
        ];
        let r = RunReport {
            title: "breast_cancer <binary> & \"friends\"",
            model_summary: "Dense -> Sigmoid",
            config: "{ \"a\": \"<b>&</b>\" }",
            history: &h,
            class_names: Some(&names),
            confusion: Some(&confusion),
            roc: Some((&fpr, &tpr, auc)),
            regression: None,
            final_metrics: &metrics,
        };
        let written = write_report(&dir, &r).unwrap();
        check(
            &dir,
            &written,
            &[
                ("loss", Some(LINES), &["epoch", "loss"]),
                ("accuracy", Some(LINES), &["accuracy"]),
                ("lr", Some(LINES), &["learning rate"]),
                (
                    "confusion",
                    None,
                    &["predicted class", "true class", "malignant", "benign"],
                ),
                (
                    "roc",
                    Some(SQUARE),
                    &[
                        "false positive rate",
                        "true positive rate",
                        "AUC = ",
                        "chance",
                    ],
                ),
            ],
        );
        let page = read(&dir.join("report.html"));
        assert!(page.contains("<h1>breast_cancer &lt;binary&gt; &amp; &quot;friends&quot;</h1>"));
        assert!(page.contains("&lt;b&gt;&amp;&lt;/b&gt;"));
        assert!(!page.contains("<b>"));
        assert!(read(&dir.join("roc.svg")).contains(&format!("AUC = {auc:.3}")));
        finish(&dir, keep);
    }

    #[test]
    fn regression_report() {
        let (dir, keep) = out_dir("regression");
        let mut seed = 3;
        let actual: Vec<f64> = (0..200).map(|_| 25.0 + 300.0 * lcg(&mut seed)).collect();
        let pred: Vec<f64> = actual
            .iter()
            .map(|a| a + 40.0 * (lcg(&mut seed) - 0.5) + 0.05 * a)
            .collect();
        let mut h = history(40, false);
        h.epochs[5].val_loss = Some(f64::NAN);
        h.epochs[6].train_loss = f64::INFINITY;
        let metrics = vec![
            ("test mse".to_string(), 612.25),
            ("test r2".to_string(), 0.8812),
        ];
        let r = RunReport {
            title: "diabetes_mlp",
            model_summary: "",
            config: "{}",
            history: &h,
            class_names: None,
            confusion: None,
            roc: None,
            regression: Some((&pred, &actual)),
            final_metrics: &metrics,
        };
        let written = write_report(&dir, &r).unwrap();
        check(
            &dir,
            &written,
            &[
                ("loss", Some(LINES), &["epoch", "loss"]),
                ("lr", Some(LINES), &["learning rate"]),
                (
                    "pred_vs_actual",
                    Some(SQUARE),
                    &["actual", "predicted", "y = x"],
                ),
            ],
        );
        finish(&dir, keep);
    }

    /// Degenerate inputs draw what is valid and never panic.
    #[test]
    fn degenerate_inputs_do_not_fail() {
        let (root, keep) = out_dir("degenerate");
        let one = history(1, true);
        let mut nan = history(5, false);
        for e in &mut nan.epochs {
            e.train_loss = f64::NAN;
            e.val_loss = None;
            e.lr = 0.0;
        }
        let mut huge = history(3, false);
        huge.epochs[1].train_loss = 1e300;
        huge.epochs[2].val_loss = Some(-1e300);
        let empty = History::default();
        let long: Vec<String> = (0..100)
            .map(|i| format!("a rather long class name number {i}"))
            .collect();
        let big: Vec<Vec<u64>> = (0..100)
            .map(|r| (0..100).map(|c| u64::from(r == c) * 1000 + 3).collect())
            .collect();
        let ragged = vec![vec![3, 1, 4], vec![1], vec![]];
        let fashion: Vec<String> = [
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ]
        .map(String::from)
        .to_vec();
        let fashion_counts: Vec<Vec<u64>> = (0..10)
            .map(|r| {
                (0..10)
                    .map(|c| {
                        if r == c {
                            850 + 10 * r
                        } else {
                            (r * 7 + c * 3) % 23
                        }
                    })
                    .collect()
            })
            .collect();
        let zero_rows = vec![vec![0, 0], vec![0, 5]];
        let huge_matrix: Vec<Vec<u64>> = (0..MAX_CLASSES + 1).map(|r| vec![r as u64; 3]).collect();
        let long_fpr: Vec<f64> = (0..=100_000).map(|i| f64::from(i) / 1e5).collect();
        let long_tpr: Vec<f64> = long_fpr.iter().map(|x| x.sqrt()).collect();
        let nan_roc = [f64::NAN, 0.5];
        let constant = [2.0; 4];
        let cases: Vec<(&str, RunReport, &[&str])> = vec![
            (
                "one_epoch",
                RunReport {
                    history: &one,
                    ..blank(&empty)
                },
                &["loss", "accuracy", "lr"],
            ),
            (
                "nan",
                RunReport {
                    history: &nan,
                    ..blank(&empty)
                },
                &["lr"],
            ),
            (
                "huge",
                RunReport {
                    history: &huge,
                    ..blank(&empty)
                },
                &["loss", "lr"],
            ),
            ("empty", blank(&empty), &[]),
            (
                "many_classes",
                RunReport {
                    class_names: Some(&long),
                    confusion: Some(&big),
                    ..blank(&empty)
                },
                &["confusion"],
            ),
            (
                "fashion",
                RunReport {
                    class_names: Some(&fashion),
                    confusion: Some(&fashion_counts),
                    ..blank(&empty)
                },
                &["confusion"],
            ),
            (
                "ragged",
                RunReport {
                    class_names: Some(&long[..2]),
                    confusion: Some(&ragged),
                    ..blank(&empty)
                },
                &["confusion"],
            ),
            (
                "zero_rows",
                RunReport {
                    confusion: Some(&zero_rows),
                    ..blank(&empty)
                },
                &["confusion"],
            ),
            (
                "too_many_classes",
                RunReport {
                    confusion: Some(&huge_matrix),
                    ..blank(&empty)
                },
                &[],
            ),
            (
                "long_roc",
                RunReport {
                    roc: Some((&long_fpr, &long_tpr, 0.667)),
                    ..blank(&empty)
                },
                &["roc"],
            ),
            (
                "no_classes",
                RunReport {
                    confusion: Some(&[]),
                    ..blank(&empty)
                },
                &[],
            ),
            (
                "empty_roc",
                RunReport {
                    roc: Some((&[], &[], f64::NAN)),
                    ..blank(&empty)
                },
                &[],
            ),
            (
                "nan_roc",
                RunReport {
                    roc: Some((&nan_roc, &[0.5, 0.5, 1.0], f64::NAN)),
                    ..blank(&empty)
                },
                &["roc"],
            ),
            (
                "constant_regression",
                RunReport {
                    regression: Some((&constant, &constant)),
                    ..blank(&empty)
                },
                &["pred_vs_actual"],
            ),
            (
                "empty_regression",
                RunReport {
                    regression: Some((&[], &[1.0])),
                    ..blank(&empty)
                },
                &[],
            ),
        ];
        for (name, r, stems) in cases {
            let dir = root.join(name);
            let written = write_report(&dir, &r).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(written.len(), 2 * stems.len() + 1, "{name}: {written:?}");
            for stem in stems {
                png_size(&dir.join(format!("{stem}.png")));
                assert!(dir.join(format!("{stem}.svg")).exists(), "{name}/{stem}");
            }
        }
        finish(&root, keep);
    }

    fn blank(h: &History) -> RunReport<'_> {
        RunReport {
            title: "t",
            model_summary: "",
            config: "",
            history: h,
            class_names: None,
            confusion: None,
            roc: None,
            regression: None,
            final_metrics: &[],
        }
    }

    #[test]
    fn tick_labels_share_one_notation() {
        assert_eq!(tick_step(0.0, 1.0, 8), 0.2);
        assert_eq!(tick_step(0.27, 0.33, 8), 0.01);
        let f = ticks(0.0027, 0.0033, tick_step(0.0027, 0.0033, 8));
        assert_eq!(
            (f(&0.0028), f(&0.003)),
            ("0.0028".to_string(), "0.0030".to_string())
        );
        let f = ticks(-1e-3, 1e-3, tick_step(-1e-3, 1e-3, 8));
        assert_eq!(
            (f(&-5e-4), f(&1e-20)),
            ("-0.0005".to_string(), "0".to_string())
        );
        let f = ticks(2e-5, 9e-5, tick_step(2e-5, 9e-5, 8));
        assert_eq!(f(&5e-5), "5e-5");
        assert_eq!(log_tick(0.05), "0.05");
        assert_eq!(fmt_sig(0.000587785252292473), "0.0005878");
        assert_eq!(
            (fmt_sig(1e-3), fmt_sig(1e-5), fmt_sig(3.0)),
            ("0.001".into(), "1e-5".into(), "3".into())
        );
        assert_eq!(
            (fmt_metric(360.0), fmt_metric(1.0), fmt_metric(0.97221)),
            ("360".into(), "1.0000".into(), "0.9722".into())
        );
        assert_eq!(
            (fmt_metric(f64::NAN), fmt4(2.5e-5)),
            ("NaN".into(), "2.5000e-5".into())
        );
        assert_eq!(log_tick(1e-4), "1e-4");
        let axis = LogAxis { lo: 0.04, hi: 3.0 };
        let close = |a: Vec<f64>, b: &[f64]| {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x / y - 1.0).abs() < 1e-12)
        };
        let ticks_1_2_5 = axis.key_points(BoldPoints(8));
        assert!(
            close(ticks_1_2_5.clone(), &[0.05, 0.1, 0.2, 0.5, 1.0, 2.0]),
            "{ticks_1_2_5:?}"
        );
        let decades = LogAxis { lo: 1e-9, hi: 1e3 }.key_points(BoldPoints(8));
        assert!(
            close(decades.clone(), &[1e-8, 1e-6, 1e-4, 1e-2, 1.0, 1e2]),
            "{decades:?}"
        );
        let (lo, hi) = padded(2.0, 2.0);
        assert!((lo - 1.8).abs() < 1e-12 && (hi - 2.2).abs() < 1e-12);
        assert_eq!(padded(0.0, 0.0), (-1e-3, 1e-3));
    }

    #[test]
    fn unwritable_folder_is_an_io_error_naming_it() {
        let (dir, _) = out_dir("not_a_folder");
        let file = dir.with_extension("txt");
        std::fs::write(&file, "x").unwrap();
        let h = History::default();
        let err = write_report(&file.join("run"), &blank(&h)).unwrap_err();
        let _ = std::fs::remove_file(&file);
        match err {
            Error::Io(msg) => assert!(msg.contains(&file.display().to_string()), "{msg}"),
            e => panic!("expected Io, got {e}"),
        }
    }
}

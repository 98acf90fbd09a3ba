//! A PNG line chart of a metric against training step, one line per dataset.
//!
//! Drawn directly into an RGB buffer and encoded with the `png` crate: plotters' bitmap backend cannot
//! draw text without a TrueType font from the system (absent on a bare server) or a bundled font file, so
//! the few labels here (tick values, dataset names) use a built-in 5x7 pixel font instead.
use std::collections::BTreeMap;
use std::path::Path;

const W: usize = 760;
const H: usize = 440;
const LEFT: usize = 64;
const RIGHT: usize = 190;
const TOP: usize = 36;
const BOTTOM: usize = 44;
const COLORS: [[u8; 3]; 6] =
    [[31, 119, 180], [214, 39, 40], [44, 160, 44], [255, 127, 14], [148, 103, 189], [23, 190, 207]];

/// Writes `path`: `series` maps a dataset name to its `(step, value)` points; `title` goes on top.
pub fn write_metric_plot(path: &Path, title: &str, series: &BTreeMap<String, Vec<(u64, f64)>>) -> std::io::Result<()> {
    let mut canvas = Canvas { px: vec![255; W * H * 3] };
    let points: Vec<&(u64, f64)> = series.values().flatten().collect();
    let (x_max, mut y_min, mut y_max) =
        points.iter().fold((1u64, f64::MAX, f64::MIN), |(x, lo, hi), (s, v)| (x.max(*s), lo.min(*v), hi.max(*v)));
    if points.is_empty() {
        (y_min, y_max) = (0.0, 1.0);
    }
    let pad = ((y_max - y_min) * 0.1).max(0.005);
    (y_min, y_max) = (y_min - pad, y_max + pad);
    let (pw, ph) = ((W - LEFT - RIGHT) as f64, (H - TOP - BOTTOM) as f64);
    let to_px = |s: u64, v: f64| {
        let x = LEFT as f64 + s as f64 / x_max as f64 * pw;
        let y = (TOP as f64 + ph) - (v - y_min) / (y_max - y_min) * ph;
        (x.round() as i64, y.round() as i64)
    };

    let grey = [200, 200, 200];
    let black = [0, 0, 0];
    for k in 0..=5 {
        let v = y_min + (y_max - y_min) * k as f64 / 5.0;
        let (_, y) = to_px(0, v);
        canvas.line((LEFT as i64, y), ((W - RIGHT) as i64, y), grey, 1);
        canvas.text(4, y as usize - 3, &format!("{v:.3}"), black);
        let s = (x_max as f64 * k as f64 / 5.0).round() as u64;
        let (x, _) = to_px(s, y_min);
        canvas.line((x, TOP as i64), (x, (H - BOTTOM) as i64), grey, 1);
        let label = s.to_string();
        canvas.text((x as usize).saturating_sub(label.len() * 3), H - BOTTOM + 8, &label, black);
    }
    let (x0, y0, x1, y1) = (LEFT as i64, (H - BOTTOM) as i64, (W - RIGHT) as i64, TOP as i64);
    canvas.line((x0, y0), (x1, y0), black, 1);
    canvas.line((x0, y0), (x0, y1), black, 1);
    canvas.text(LEFT, 12, title, black);
    canvas.text((W - RIGHT) / 2, H - 16, "STEP", black);

    for (k, (name, pts)) in series.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let mut sorted = pts.clone();
        sorted.sort_by_key(|p| p.0);
        for pair in sorted.windows(2) {
            canvas.line(to_px(pair[0].0, pair[0].1), to_px(pair[1].0, pair[1].1), color, 2);
        }
        for &(s, v) in &sorted {
            let (x, y) = to_px(s, v);
            canvas.rect(x - 3, y - 3, 7, 7, color);
        }
        let ly = TOP + 10 + k * 16;
        canvas.rect((W - RIGHT + 14) as i64, ly as i64, 12, 7, color);
        canvas.text(W - RIGHT + 32, ly, name, black);
    }

    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut encoder = png::Encoder::new(file, W as u32, H as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(std::io::Error::other)?;
    writer.write_image_data(&canvas.px).map_err(std::io::Error::other)?;
    writer.finish().map_err(std::io::Error::other)
}

struct Canvas {
    px: Vec<u8>,
}

impl Canvas {
    fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if (0..W as i64).contains(&x) && (0..H as i64).contains(&y) {
            let i = (y as usize * W + x as usize) * 3;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }

    fn rect(&mut self, x: i64, y: i64, w: i64, h: i64, c: [u8; 3]) {
        for dy in 0..h {
            for dx in 0..w {
                self.set(x + dx, y + dy, c);
            }
        }
    }

    /// Bresenham's line, `width` pixels thick.
    fn line(&mut self, (mut x0, mut y0): (i64, i64), (x1, y1): (i64, i64), c: [u8; 3], width: i64) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let mut err = dx + dy;
        loop {
            self.rect(x0, y0, width, width, c);
            if x0 == x1 && y0 == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x0 += sx;
            }
            if e2 <= dx {
                err += dx;
                y0 += sy;
            }
        }
    }

    /// Draws `s` in the 5x7 font (upper case; unknown characters as blanks), 6 pixels per character.
    fn text(&mut self, x: usize, y: usize, s: &str, c: [u8; 3]) {
        for (k, ch) in s.chars().enumerate() {
            let rows = glyph(ch.to_ascii_uppercase());
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) != 0 {
                        self.set((x + k * 6 + col) as i64, (y + r) as i64, c);
                    }
                }
            }
        }
    }
}

/// Rows of a 5x7 glyph, top first, bit 4 the leftmost pixel.
fn glyph(ch: char) -> [u8; 7] {
    match ch {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        '.' => [0, 0, 0, 0, 0, 0x0C, 0x0C],
        '-' => [0, 0, 0, 0x1F, 0, 0, 0],
        '_' => [0, 0, 0, 0, 0, 0, 0x1F],
        '/' => [0, 0x01, 0x02, 0x04, 0x08, 0x10, 0],
        ':' => [0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0],
        '@' => [0x0E, 0x11, 0x17, 0x15, 0x17, 0x10, 0x0E],
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x0A, 0x04, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        _ => [0; 7],
    }
}

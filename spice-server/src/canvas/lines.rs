//! One-pixel ("zero width") polylines, rasterised the way spice-common's
//! `lines.c` does (a port of the X server's `miZeroLine`): Bresenham with the
//! X11 default octant bias, endpoints clipped to the canvas by the same
//! integer equations, cap style "not last". Paths are flattened to polylines
//! as `canvas_draw_stroke` does (28.4 points rounded by `fix_to_int`, cubic
//! Béziers subdivided until flat enough).

use crate::command::{PATH_BEGIN, PATH_BEZIER, PATH_CLOSE, PATH_END, Path, PointFix};

const XDECREASING: u32 = 4;
const YDECREASING: u32 = 2;
const YMAJOR: u32 = 1;
/// Octants 2, 3, 4 and 5 prefer the axial step on a zero error term.
const BIAS: u32 = (1 << (YDECREASING | YMAJOR))
    | (1 << (XDECREASING | YDECREASING | YMAJOR))
    | (1 << (XDECREASING | YDECREASING))
    | (1 << XDECREASING);

const OUT_LEFT: u32 = 8;
const OUT_RIGHT: u32 = 4;
const OUT_ABOVE: u32 = 2;
const OUT_BELOW: u32 = 1;

/// Most Bézier subdivision levels (spice recurses without a limit).
/// A point of a flattened path.
pub(super) type Pt = (i32, i32);

const MAX_BEZIER_DEPTH: u32 = 16;
/// Most points a flattened figure may have.
pub(super) const MAX_POINTS: usize = 1 << 20;

/// `fix_to_int`: 28.4 to integer, rounding a fraction above one half up.
pub(super) const fn fix_to_int(f: i32) -> i32 {
    let v = f >> 4;
    if f & 0xf > 8 { v + 1 } else { v }
}

fn outcode(x: i32, y: i32, xmax: i32, ymax: i32) -> u32 {
    let mut o = 0;
    if x < 0 {
        o |= OUT_LEFT;
    }
    if x > xmax {
        o |= OUT_RIGHT;
    }
    if y < 0 {
        o |= OUT_ABOVE;
    }
    if y > ymax {
        o |= OUT_BELOW;
    }
    o
}

// Terms of the clipping equations.
const T_2NDX: u32 = 1;
const T_DXNOTY: u32 = 2;
const T_SUBDXORY: u32 = 4;
const T_BIASSUBONE: u32 = 8;
const T_DIV2DX: u32 = 16;
const T_ADDONE: u32 = 32;
const EQN1: u32 = T_DXNOTY | T_DIV2DX;
const EQN2: u32 = T_DXNOTY | T_BIASSUBONE | T_DIV2DX;
const EQN3: u32 = T_SUBDXORY | T_BIASSUBONE | T_DIV2DX | T_ADDONE;
const EQN3B: u32 = T_BIASSUBONE | T_DIV2DX;
const EQN4: u32 = T_SUBDXORY | T_DIV2DX | T_ADDONE;
const EQN4B: u32 = T_DIV2DX;
const EQN5: u32 = T_2NDX | T_DXNOTY | T_SUBDXORY | T_BIASSUBONE | T_ADDONE;
const EQN5B: u32 = T_2NDX | T_DXNOTY | T_BIASSUBONE;
const EQN6: u32 = T_2NDX | T_DXNOTY | T_SUBDXORY | T_ADDONE;
const EQN6B: u32 = T_2NDX | T_DXNOTY;
const EQN7: u32 = T_2NDX;
const EQN8: u32 = T_2NDX | T_BIASSUBONE;

struct Clipped {
    x1: i32,
    y1: i32,
    x2: i32,
    y2: i32,
    clip1: u32,
    clip2: u32,
}

/// `miZeroClipLine`: the part of the line inside `[0, xmax] x [0, ymax]`,
/// on exactly the pixels the unclipped line would cover; `None` when none.
#[allow(clippy::too_many_arguments)]
fn clip_line(
    xmax: i32,
    ymax: i32,
    p: [i32; 4],
    adx: u32,
    ady: u32,
    octant: u32,
    mut oc1: u32,
    mut oc2: u32,
) -> Option<Clipped> {
    let [mut x1, mut y1, mut x2, mut y2] = p;
    let [mut x1o, mut y1o, mut x2o, mut y2o] = p;
    let (mut clip1, mut clip2) = (0u32, 0u32);
    let mut swapped = false;
    let xmajor = octant & YMAJOR == 0;
    let bias = (BIAS >> octant) & 1;
    for _ in 0..8 {
        if oc1 & oc2 != 0 {
            return None;
        }
        if oc1 | oc2 == 0 {
            if swapped {
                std::mem::swap(&mut x1, &mut x2);
                std::mem::swap(&mut y1, &mut y2);
                std::mem::swap(&mut clip1, &mut clip2);
            }
            return Some(Clipped {
                x1,
                y1,
                x2,
                y2,
                clip1,
                clip2,
            });
        }
        if oc1 == 0 {
            std::mem::swap(&mut x1, &mut x2);
            std::mem::swap(&mut y1, &mut y2);
            std::mem::swap(&mut x1o, &mut x2o);
            std::mem::swap(&mut y1o, &mut y2o);
            std::mem::swap(&mut oc1, &mut oc2);
            std::mem::swap(&mut clip1, &mut clip2);
            swapped = !swapped;
        }
        clip1 |= oc1;
        let (mut utmp, eqn, anchor, mut negslope);
        let horizontal_edge = oc1 & (OUT_LEFT | OUT_RIGHT) != 0;
        let (near, far, edge) = if oc1 & OUT_LEFT != 0 {
            (0i32.wrapping_sub(x1o), x2o, 0)
        } else if oc1 & OUT_ABOVE != 0 {
            (0i32.wrapping_sub(y1o), y2o, 0)
        } else if oc1 & OUT_RIGHT != 0 {
            (x1o.wrapping_sub(xmax), xmax.wrapping_sub(x2o), xmax)
        } else {
            (y1o.wrapping_sub(ymax), ymax.wrapping_sub(y2o), ymax)
        };
        let near_u = near.cast_unsigned();
        if horizontal_edge {
            negslope = octant & YDECREASING != 0;
            if near_u <= 32767 {
                utmp = near_u;
                eqn = match (xmajor, swapped) {
                    (true, true) => EQN2,
                    (true, false) => EQN1,
                    (false, true) => EQN4,
                    (false, false) => EQN3,
                };
                anchor = y1o;
            } else {
                utmp = if oc1 & OUT_LEFT != 0 {
                    far.wrapping_sub(edge).cast_unsigned()
                } else {
                    far.cast_unsigned()
                };
                eqn = match (xmajor, swapped) {
                    (true, true) => EQN1,
                    (true, false) => EQN2,
                    (false, true) => EQN3B,
                    (false, false) => EQN4B,
                };
                anchor = y2o;
                negslope = !negslope;
            }
            x1 = edge;
        } else {
            negslope = octant & XDECREASING != 0;
            if near_u <= 32767 {
                utmp = near_u;
                eqn = match (xmajor, swapped) {
                    (true, true) => EQN6,
                    (true, false) => EQN5,
                    (false, true) => EQN8,
                    (false, false) => EQN7,
                };
                anchor = x1o;
            } else {
                utmp = if oc1 & OUT_ABOVE != 0 {
                    far.wrapping_sub(edge).cast_unsigned()
                } else {
                    far.cast_unsigned()
                };
                eqn = match (xmajor, swapped) {
                    (true, true) => EQN5B,
                    (true, false) => EQN6B,
                    (false, true) => EQN7,
                    (false, false) => EQN8,
                };
                anchor = x2o;
                negslope = !negslope;
            }
            y1 = edge;
        }
        if swapped {
            negslope = !negslope;
        }
        utmp = utmp.wrapping_shl(1);
        utmp = utmp.wrapping_mul(if eqn & T_2NDX != 0 { adx } else { ady });
        let term = if eqn & T_DXNOTY != 0 { adx } else { ady };
        utmp = if eqn & T_SUBDXORY != 0 {
            utmp.wrapping_sub(term)
        } else {
            utmp.wrapping_add(term)
        };
        utmp = if eqn & T_BIASSUBONE != 0 {
            utmp.wrapping_add(bias).wrapping_sub(1)
        } else {
            utmp.wrapping_sub(bias)
        };
        let div = if eqn & T_DIV2DX != 0 { adx } else { ady }.wrapping_shl(1);
        utmp = utmp.checked_div(div).unwrap_or(0);
        if eqn & T_ADDONE != 0 {
            utmp = utmp.wrapping_add(1);
        }
        if negslope {
            utmp = utmp.wrapping_neg();
        }
        if eqn & T_2NDX != 0 {
            x1 = anchor.wrapping_add(utmp.cast_signed());
        } else {
            y1 = anchor.wrapping_add(utmp.cast_signed());
        }
        oc1 = outcode(x1, y1, xmax, ymax);
    }
    None
}

/// Draws the polyline `pts` on a `width` x `height` canvas, calling
/// `span(x, y, len)` for each horizontal run, segment by segment.
pub(super) fn zero_line(
    width: i32,
    height: i32,
    pts: &[(i32, i32)],
    span: &mut dyn FnMut(i32, i32, i32),
) {
    let (xmax, ymax) = (width - 1, height - 1);
    let Some(&(mut x2, mut y2)) = pts.first() else {
        return;
    };
    let mut oc2 = outcode(x2, y2, xmax, ymax);
    for &(nx, ny) in pts.iter().skip(1) {
        let (x1, y1, oc1) = (x2, y2, oc2);
        x2 = nx;
        y2 = ny;
        oc2 = outcode(x2, y2, xmax, ymax);
        let mut octant = 0;
        let mut signdx = 1i32;
        let mut signdy = 1i32;
        let mut adx = x2.wrapping_sub(x1);
        if adx < 0 {
            adx = adx.wrapping_neg();
            signdx = -1;
            octant |= XDECREASING;
        }
        let mut ady = y2.wrapping_sub(y1);
        if ady < 0 {
            ady = ady.wrapping_neg();
            signdy = -1;
            octant |= YDECREASING;
        }
        let xmajor = adx > ady;
        let (major, minor) = if xmajor { (adx, ady) } else { (ady, adx) };
        if !xmajor {
            octant |= YMAJOR;
        }
        let e1 = minor.wrapping_shl(1);
        let e2 = e1.wrapping_sub(major.wrapping_shl(1));
        let mut e = e1.wrapping_sub(major);
        e = e.wrapping_sub(((BIAS >> octant) & 1).cast_signed());
        let mut length = major;
        let (mut sx, mut sy) = (x1, y1);
        if oc1 | oc2 != 0 {
            let Some(c) = clip_line(
                xmax,
                ymax,
                [x1, y1, x2, y2],
                adx.cast_unsigned(),
                ady.cast_unsigned(),
                octant,
                oc1,
                oc2,
            ) else {
                continue;
            };
            length = if xmajor {
                c.x2.wrapping_sub(c.x1).wrapping_abs()
            } else {
                c.y2.wrapping_sub(c.y1).wrapping_abs()
            };
            if c.clip2 != 0 {
                length = length.wrapping_add(1);
            }
            if c.clip1 != 0 {
                let cdx = c.x1.wrapping_sub(x1).wrapping_abs();
                let cdy = c.y1.wrapping_sub(y1).wrapping_abs();
                let (cmaj, cmin) = if xmajor { (cdx, cdy) } else { (cdy, cdx) };
                e = e
                    .wrapping_add(cmin.wrapping_mul(e2))
                    .wrapping_add(cmaj.wrapping_sub(cmin).wrapping_mul(e1));
            }
            sx = c.x1;
            sy = c.y1;
        }
        let e3 = e2.wrapping_sub(e1);
        e = e.wrapping_sub(e1);
        // Runs of the segment: one span per row.
        let (mut x, mut y) = (sx, sy);
        let mut run: Option<(i32, i32, i32)> = None;
        let n = length.clamp(0, width.max(height).saturating_add(2));
        for _ in 0..n {
            run = Some(match run {
                Some((rx, ry, w)) if ry == y => (rx.min(x), ry, w + 1),
                Some((rx, ry, w)) => {
                    span(rx, ry, w);
                    (x, y, 1)
                }
                None => (x, y, 1),
            });
            e = e.wrapping_add(e1);
            if xmajor {
                if e >= 0 {
                    y += signdy;
                    e = e.wrapping_add(e3);
                }
                x += signdx;
            } else {
                if e >= 0 {
                    x += signdx;
                    e = e.wrapping_add(e3);
                }
                y += signdy;
            }
        }
        if let Some((rx, ry, w)) = run {
            span(rx, ry, w);
        }
    }
}

fn dot(x1: i32, y1: i32, x2: i32, y2: i32) -> i64 {
    (i64::from(x1) * i64::from(x2) + i64::from(y1) * i64::from(y2)) >> 4
}

fn push(pts: &mut Vec<(i32, i32)>, p: PointFix) {
    if pts.len() < MAX_POINTS {
        pts.push((fix_to_int(p.x), fix_to_int(p.y)));
    }
}

fn bezier(pts: &mut Vec<(i32, i32)>, p: [PointFix; 4], depth: u32) {
    let [p0, p1, p2, p3] = p;
    let a2 = dot(p1.x - p0.x, p1.y - p0.y, p1.x - p0.x, p1.y - p0.y);
    let b2 = dot(p3.x - p0.x, p3.y - p0.y, p3.x - p0.x, p3.y - p0.y);
    let c2 = dot(p2.x - p3.x, p2.y - p3.y, p2.x - p3.x, p2.y - p3.y);
    let ab = dot(p1.x - p0.x, p1.y - p0.y, p3.x - p0.x, p3.y - p0.y);
    let cb = dot(p2.x - p3.x, p2.y - p3.y, p0.x - p3.x, p0.y - p3.y);
    let h1 = a2.wrapping_mul(b2).wrapping_sub(ab.wrapping_mul(ab)) >> 3;
    let h2 = c2.wrapping_mul(b2).wrapping_sub(cb.wrapping_mul(cb)) >> 3;
    if (h1 < b2 && h2 < b2) || depth >= MAX_BEZIER_DEPTH || pts.len() >= MAX_POINTS {
        push(pts, p3);
        return;
    }
    let mid = |a: PointFix, b: PointFix| PointFix {
        x: (a.x + b.x) / 2,
        y: (a.y + b.y) / 2,
    };
    let p01 = mid(p0, p1);
    let p12 = mid(p1, p2);
    let p23 = mid(p2, p3);
    let p012 = mid(p01, p12);
    let p123 = mid(p12, p23);
    let p0123 = mid(p012, p123);
    bezier(pts, [p0, p01, p012, p0123], depth + 1);
    bezier(pts, [p0123, p123, p23, p3], depth + 1);
}

/// Flattens `path` into polylines (figures) as `canvas_draw_stroke` does and
/// hands each to `draw`.
pub(super) fn flatten(path: &Path, draw: &mut dyn FnMut(&[Pt])) {
    let clamp = |p: PointFix| PointFix {
        // Keep the Bézier arithmetic inside i32 like 28.4 values a guest can
        // meaningfully give.
        x: p.x.clamp(-(1 << 30), 1 << 30),
        y: p.y.clamp(-(1 << 30), 1 << 30),
    };
    let mut pts: Vec<(i32, i32)> = Vec::new();
    let mut flush = |pts: &mut Vec<(i32, i32)>| {
        if !pts.is_empty() {
            draw(pts);
            pts.clear();
        }
    };
    for seg in &path.segments {
        let mut it = seg.points.iter().copied().map(clamp);
        let mut rest: Vec<PointFix> = Vec::new();
        if seg.flags & PATH_BEGIN != 0 {
            flush(&mut pts);
            if let Some(p) = it.next() {
                push(&mut pts, p);
            }
        }
        rest.extend(it);
        if seg.flags & PATH_BEZIER != 0 {
            if !rest.len().is_multiple_of(3) {
                // spice gives up on the rest of the stroke.
                return;
            }
            for c in rest.chunks_exact(3) {
                let Some(&(lx, ly)) = pts.last() else {
                    break;
                };
                let p0 = PointFix {
                    x: lx.saturating_mul(16),
                    y: ly.saturating_mul(16),
                };
                bezier(&mut pts, [p0, c[0], c[1], c[2]], 0);
            }
        } else {
            for p in rest {
                push(&mut pts, p);
            }
        }
        if seg.flags & PATH_END != 0 {
            if seg.flags & PATH_CLOSE != 0
                && let Some(&first) = pts.first()
                && pts.len() < MAX_POINTS
            {
                pts.push(first);
            }
            flush(&mut pts);
        }
    }
    flush(&mut pts);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(w: i32, h: i32, pts: &[(i32, i32)]) -> Vec<(i32, i32, i32)> {
        let mut v = Vec::new();
        zero_line(w, h, pts, &mut |x, y, n| v.push((x, y, n)));
        v
    }

    #[test]
    fn horizontal_line_excludes_last_point() {
        assert_eq!(spans(10, 10, &[(1, 1), (5, 1)]), vec![(1, 1, 4)]);
        assert_eq!(spans(10, 10, &[(5, 1), (1, 1)]), vec![(2, 1, 4)]);
    }

    #[test]
    fn diagonal_and_bias() {
        // A 2:1 x-major line: the error term ties break per the X11 bias.
        let s = spans(10, 10, &[(0, 0), (4, 2)]);
        assert_eq!(s, vec![(0, 0, 1), (1, 1, 2), (3, 2, 1)]);
        let s = spans(10, 10, &[(0, 0), (3, 3)]);
        assert_eq!(s, vec![(0, 0, 1), (1, 1, 1), (2, 2, 1)]);
    }

    #[test]
    fn clipped_line_matches_unclipped_pixels() {
        let full = spans(100, 100, &[(-20, 3), (60, 37)]);
        let big: Vec<_> = spans(1000, 1000, &[(0, 3), (80, 37)])
            .into_iter()
            .map(|(x, y, n)| (x - 20, y, n))
            .collect();
        // Every pixel of the clipped line lies on the unclipped one.
        let px = |v: &[(i32, i32, i32)]| {
            let mut p: Vec<(i32, i32)> = v
                .iter()
                .flat_map(|&(x, y, n)| (x..x + n).map(move |x| (x, y)))
                .filter(|&(x, _)| x >= 0)
                .collect();
            p.sort_unstable();
            p
        };
        assert_eq!(px(&full), px(&big));
    }

    #[test]
    fn fix_rounding() {
        assert_eq!(fix_to_int(0x18), 1);
        assert_eq!(fix_to_int(0x19), 2);
        assert_eq!(fix_to_int(-0x10), -1);
    }
}

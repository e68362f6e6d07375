//! Plane geometry in normalised image coordinates (x right, y down, both 0..1).

pub type Point = [f64; 2];

/// Twice the signed area of the triangle (o, a, b): > 0 when b is to the right of o→a as
/// drawn on an image (y down), < 0 when to the left, 0 when collinear.
pub fn cross(o: Point, a: Point, b: Point) -> f64 {
    (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])
}

fn on_segment(p: Point, a: Point, b: Point) -> bool {
    p[0] >= a[0].min(b[0])
        && p[0] <= a[0].max(b[0])
        && p[1] >= a[1].min(b[1])
        && p[1] <= a[1].max(b[1])
}

/// Whether segments p1-p2 and q1-q2 meet (crossing or touching).
pub fn segments_meet(p1: Point, p2: Point, q1: Point, q2: Point) -> bool {
    let (d1, d2) = (cross(q1, q2, p1), cross(q1, q2, p2));
    let (d3, d4) = (cross(p1, p2, q1), cross(p1, p2, q2));
    if ((d1 > 0.0 && d2 < 0.0) || (d1 < 0.0 && d2 > 0.0))
        && ((d3 > 0.0 && d4 < 0.0) || (d3 < 0.0 && d4 > 0.0))
    {
        return true;
    }
    (d1 == 0.0 && on_segment(p1, q1, q2))
        || (d2 == 0.0 && on_segment(p2, q1, q2))
        || (d3 == 0.0 && on_segment(q1, p1, p2))
        || (d4 == 0.0 && on_segment(q2, p1, p2))
}

/// Even-odd rule: whether `p` is inside the polygon.
pub fn contains(poly: &[Point], p: Point) -> bool {
    let mut inside = false;
    let mut j = poly.len() - 1;
    for i in 0..poly.len() {
        let (a, b) = (poly[i], poly[j]);
        if (a[1] > p[1]) != (b[1] > p[1]) {
            let x = a[0] + (p[1] - a[1]) / (b[1] - a[1]) * (b[0] - a[0]);
            if p[0] < x {
                inside = !inside;
            }
        }
        j = i;
    }
    inside
}

/// Unsigned area (shoelace).
pub fn area(poly: &[Point]) -> f64 {
    let n = poly.len();
    (0..n)
        .map(|i| {
            let (a, b) = (poly[i], poly[(i + 1) % n]);
            a[0] * b[1] - b[0] * a[1]
        })
        .sum::<f64>()
        .abs()
        / 2.0
}

/// Whether two edges that do not share a vertex meet.
pub fn self_intersects(poly: &[Point]) -> bool {
    let n = poly.len();
    let edge = |i: usize| (poly[i], poly[(i + 1) % n]);
    for i in 0..n {
        for j in i + 1..n {
            let adjacent = j == i + 1 || (i == 0 && j == n - 1);
            if adjacent {
                continue;
            }
            let ((a, b), (c, d)) = (edge(i), edge(j));
            if segments_meet(a, b, c, d) {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const SQUARE: [Point; 4] = [[0.2, 0.2], [0.6, 0.2], [0.6, 0.6], [0.2, 0.6]];

    #[test]
    fn inside_outside_and_area() {
        assert!(contains(&SQUARE, [0.4, 0.4]));
        assert!(!contains(&SQUARE, [0.7, 0.4]));
        assert!((area(&SQUARE) - 0.16).abs() < 1e-12);
        // A concave L: the notch is outside.
        let l = [
            [0.0, 0.0],
            [0.5, 0.0],
            [0.5, 0.2],
            [0.2, 0.2],
            [0.2, 0.5],
            [0.0, 0.5],
        ];
        assert!(contains(&l, [0.1, 0.4]));
        assert!(!contains(&l, [0.4, 0.4]));
    }

    #[test]
    fn a_bow_tie_intersects_itself_and_a_square_does_not() {
        assert!(!self_intersects(&SQUARE));
        assert!(self_intersects(&[
            [0.0, 0.0],
            [1.0, 1.0],
            [1.0, 0.0],
            [0.0, 1.0]
        ]));
    }

    #[test]
    fn sides_and_crossings() {
        let (a, b) = ([0.0, 0.5], [1.0, 0.5]);
        assert!(
            cross(a, b, [0.5, 0.4]) < 0.0,
            "above a rightward line is its left (side A)"
        );
        assert!(cross(a, b, [0.5, 0.6]) > 0.0);
        assert!(segments_meet(a, b, [0.5, 0.4], [0.5, 0.6]));
        assert!(
            !segments_meet(a, b, [1.5, 0.4], [1.5, 0.6]),
            "past the end of the line"
        );
    }
}

//! Points in the plane.

use std::fmt;

/// A point with integer coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub x: i64,
    pub y: i64,
}

/// Shapes that have an area.
pub trait Area {
    fn area(&self) -> f64;
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}, {})", self.x, self.y)
    }
}

impl Point {
    /// The origin.
    pub fn origin() -> Self {
        Point { x: 0, y: 0 }
    }
}

pub enum Direction {
    North,
    South,
}

pub type Coord = (i64, i64);

/// Parses "x,y" into a point.
pub fn parse_point(text: &str) -> Option<Point> {
    let (a, b) = text.split_once(',')?;
    Some(Point { x: a.trim().parse().ok()?, y: b.trim().parse().ok()? })
}

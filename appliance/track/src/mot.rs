//! MOTChallenge text formats, so the tracker can be run and scored on its own:
//! detections in (`frame,id,x,y,w,h,conf,...`, id = -1), tracks out
//! (`frame,id,x,y,w,h,1,-1,-1,-1`). Frames are 1-based.

use std::io::{BufRead, Write};
use std::sync::Arc;

use aegis_domain::{BBox, Detection, Tracker};

use crate::{ByteTracker, TrackerParams};

/// One line of a MOTChallenge file.
#[derive(Debug, Clone, PartialEq)]
pub struct MotRow {
    pub frame: u32,
    pub id: i64,
    pub bbox: BBox,
    pub score: f32,
}

#[derive(Debug, thiserror::Error)]
pub enum MotError {
    #[error("line {line}: {reason}")]
    Parse { line: usize, reason: String },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Parses MOTChallenge detections. Blank lines are skipped; anything else malformed is an error
/// that names the line.
pub fn read_mot_detections(input: impl BufRead) -> Result<Vec<MotRow>, MotError> {
    let mut rows = Vec::new();
    for (n, line) in input.lines().enumerate() {
        let line = line?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = |reason: String| MotError::Parse {
            line: n + 1,
            reason,
        };
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() < 7 {
            return Err(bad(format!(
                "expected at least 7 fields, found {}",
                fields.len()
            )));
        }
        let num = |i: usize| {
            fields[i]
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| bad(format!("field {} is not a number: {:?}", i + 1, fields[i])))
        };
        let frame = num(0)?;
        if frame < 1.0 || frame.fract() != 0.0 || frame > f64::from(u32::MAX) {
            return Err(bad(format!(
                "frame must be a positive integer, got {}",
                fields[0]
            )));
        }
        let (x, y, w, h) = (
            num(2)? as f32,
            num(3)? as f32,
            num(4)? as f32,
            num(5)? as f32,
        );
        if w < 0.0 || h < 0.0 {
            return Err(bad("negative box size".into()));
        }
        rows.push(MotRow {
            frame: frame as u32,
            id: num(1)? as i64,
            bbox: BBox::from_xywh(x, y, w, h),
            score: num(6)? as f32,
        });
    }
    Ok(rows)
}

/// Runs the tracker over every frame from 1 to the last one in `dets` (frames with no
/// detections included, so lost-track timing is right) and returns the confirmed tracks.
pub fn track_mot(dets: &[MotRow], params: TrackerParams) -> Vec<MotRow> {
    let last = dets.iter().map(|d| d.frame).max().unwrap_or(0);
    let mut by_frame: Vec<Vec<Detection>> = vec![Vec::new(); last as usize + 1];
    let label: Arc<str> = Arc::from("object");
    for d in dets {
        by_frame[d.frame as usize].push(Detection {
            bbox: d.bbox,
            score: d.score,
            class_id: 0,
            label: label.clone(),
        });
    }
    let mut tracker = ByteTracker::new(params);
    let mut out = Vec::new();
    for (frame, frame_dets) in by_frame.iter().enumerate().skip(1) {
        for t in tracker.update(frame_dets) {
            out.push(MotRow {
                frame: frame as u32,
                id: t.id as i64,
                bbox: t.bbox,
                score: t.score,
            });
        }
    }
    out
}

pub fn write_mot_tracks(rows: &[MotRow], mut out: impl Write) -> std::io::Result<()> {
    for r in rows {
        writeln!(
            out,
            "{},{},{:.2},{:.2},{:.2},{:.2},1,-1,-1,-1",
            r.frame,
            r.id,
            r.bbox.x1,
            r.bbox.y1,
            r.bbox.width(),
            r.bbox.height()
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_reports_bad_lines_by_number() {
        let ok = read_mot_detections(
            "1,-1,10,20,30,40,0.9,-1,-1,-1\n\n2,-1,11,20,30,40,0.8\n".as_bytes(),
        )
        .unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[1].bbox, BBox::from_xywh(11.0, 20.0, 30.0, 40.0));
        let err = read_mot_detections("1,-1,10,20,30,40,0.9\n1,-1,x,20,30,40,0.9\n".as_bytes())
            .unwrap_err();
        assert!(err.to_string().starts_with("line 2: field 3"), "{err}");
        assert!(read_mot_detections("0,-1,1,1,1,1,1\n".as_bytes()).is_err());
        assert!(read_mot_detections("1,-1,1,1\n".as_bytes()).is_err());
    }

    #[test]
    fn tracks_a_sequence_and_writes_mot_lines() {
        let dets: Vec<MotRow> = (1..=5)
            .map(|f| MotRow {
                frame: f,
                id: -1,
                bbox: BBox::from_xywh(10.0 * f as f32, 0.0, 50.0, 100.0),
                score: 0.9,
            })
            .collect();
        let tracks = track_mot(&dets, TrackerParams::default());
        assert_eq!(tracks.len(), 5);
        assert!(tracks.iter().all(|t| t.id == 1));
        let mut buf = Vec::new();
        write_mot_tracks(&tracks[..1], &mut buf).unwrap();
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "1,1,10.00,0.00,50.00,100.00,1,-1,-1,-1\n"
        );
    }
}

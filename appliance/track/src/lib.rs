//! A ByteTrack-class multi-object tracker: Kalman motion model, two-stage association (high-score
//! detections first, then low-score ones to keep tracks alive through occlusion), optimal
//! assignment, and birth/death with a lost-track buffer. Pure and synchronous.

mod assign;
mod byte;
mod kalman;
mod mot;

pub use assign::{assign, Assignment};
pub use byte::{ByteTracker, TrackerParams};
pub use mot::{read_mot_detections, track_mot, write_mot_tracks, MotError, MotRow};

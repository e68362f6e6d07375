//! Snapshots, off the hot path (ADR 0003): the detect thread names each snapshot's URN in its
//! event, commits, and hands the frame to the snapshot thread, which converts it once, draws
//! and encodes one JPEG per object, makes the files durable and then inserts their rows. A
//! snapshot that cannot be stored is unlinked from its events and counted; the events stay.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use aegis_domain::{BBox, BlobUrn};
use aegis_ingest::{Frame, RgbConverter, StreamStatus};
use aegis_store::Store;
use tracing::warn;

/// Frames waiting for the snapshot thread, all cameras together. When it is full, new events
/// go without a snapshot (counted) rather than hold up detection.
pub(crate) const QUEUE_JOBS: usize = 8;

/// One frame's snapshots: the objects to draw and the URNs their events already name.
pub(crate) struct SnapshotJob {
    pub frame: Frame,
    pub shots: Vec<(BlobUrn, BBox)>,
    pub status: Arc<StreamStatus>,
}

impl SnapshotJob {
    /// Whether this job takes the snapshot `urn`.
    pub fn names(&self, urn: &BlobUrn) -> bool {
        self.shots.iter().any(|(u, _)| u == urn)
    }
}

/// Lost snapshots kept to unlink from their events while the store refuses writes.
const UNLINK_MAX: usize = 10_000;

/// The snapshot thread's loop; returns when every detect thread has hung up.
pub(crate) fn run(rx: Receiver<SnapshotJob>, store: Arc<Store>, quality: u8) {
    lower_priority();
    // FFmpeg's scaler is not Send: it is made here, on the thread that uses it.
    let mut converter = RgbConverter::native();
    // Lost snapshots still named by their events: unlinking them can fail too (a full disk), so
    // it is tried again every second and at the end until it succeeds. If it never does,
    // `recover_snapshots` at the next start-up does it for the newest events, and
    // `aegis check --repair` for any older ones (as for those beyond `UNLINK_MAX`).
    let mut unlink: Vec<BlobUrn> = Vec::new();
    let mut warned = false;
    loop {
        let wait = if unlink.is_empty() {
            Duration::from_secs(3600)
        } else {
            Duration::from_secs(1)
        };
        let ended = match rx.recv_timeout(wait) {
            Ok(job) => {
                let lost = store_snapshots(&job, &mut converter, &store, quality);
                job.status
                    .snapshots_lost
                    .fetch_add(lost.len() as u64, Ordering::Relaxed);
                if unlink.len() < UNLINK_MAX {
                    unlink.extend(lost);
                }
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        if !unlink.is_empty() {
            match store.forget_snapshots(&unlink) {
                Ok(()) => {
                    unlink.clear();
                    warned = false;
                }
                Err(e) if !std::mem::replace(&mut warned, true) => {
                    warn!(error = %e, "lost snapshots not unlinked yet; retrying");
                }
                Err(_) => {}
            }
        }
        if ended {
            return;
        }
    }
}

/// Snapshots can wait a few milliseconds; decoding and detection cannot. On Linux the nice
/// value is per thread, so this lowers only the snapshot thread.
fn lower_priority() {
    // SAFETY: setpriority only reads its arguments; `0` means the calling thread.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
    if rc != 0 {
        warn!(error = %std::io::Error::last_os_error(), "snapshot thread keeps its priority");
    }
}

/// Stores a job's snapshots; returns the URNs that did not land.
fn store_snapshots(
    job: &SnapshotJob,
    converter: &mut RgbConverter,
    store: &Store,
    quality: u8,
) -> Vec<BlobUrn> {
    let frame = &job.frame;
    let rgb = match converter.convert(&frame.full) {
        Ok(rgb) => rgb,
        Err(e) => {
            warn!(error = %e, "snapshot conversion failed");
            return job.shots.iter().map(|(urn, _)| urn.clone()).collect();
        }
    };
    let mut staged = Vec::new();
    let mut lost = Vec::new();
    for (urn, bbox) in &job.shots {
        let blob =
            encode_snapshot(&rgb, frame.width, frame.height, bbox, quality).and_then(|jpeg| {
                store
                    .stage_blob(urn.clone(), &jpeg, "image/jpeg")
                    .map_err(|e| e.to_string())
            });
        match blob {
            Ok(blob) => staged.push(blob),
            Err(e) => {
                warn!(error = %e, %urn, "snapshot not stored");
                lost.push(urn.clone());
            }
        }
    }
    if let Err(e) = store.attach_blobs(&staged, frame.wall_ms) {
        // `attach_blobs` removed their files.
        warn!(error = %e, "snapshot rows not written");
        lost.extend(staged.into_iter().map(|b| b.urn));
    }
    lost
}

/// Draws a 3-pixel box outline into packed RGB24 and encodes the image as JPEG.
pub fn encode_snapshot(
    rgb: &[u8],
    width: u32,
    height: u32,
    bbox: &BBox,
    quality: u8,
) -> Result<Vec<u8>, String> {
    let mut img = rgb.to_vec();
    let (w, h) = (width as i64, height as i64);
    let clamp_x = |v: f32| (v as i64).clamp(0, w - 1);
    let clamp_y = |v: f32| (v as i64).clamp(0, h - 1);
    let (x1, y1, x2, y2) = (
        clamp_x(bbox.x1),
        clamp_y(bbox.y1),
        clamp_x(bbox.x2),
        clamp_y(bbox.y2),
    );
    let mut paint = |x: i64, y: i64| {
        if (0..w).contains(&x) && (0..h).contains(&y) {
            let i = ((y * w + x) * 3) as usize;
            img[i..i + 3].copy_from_slice(&[255, 64, 0]);
        }
    };
    for t in 0..3 {
        for x in x1..=x2 {
            paint(x, y1 + t);
            paint(x, y2 - t);
        }
        for y in y1..=y2 {
            paint(x1 + t, y);
            paint(x2 - t, y);
        }
    }
    encode_jpeg(&img, width, height, quality)
}

/// Encodes packed RGB24 as JPEG.
pub(crate) fn encode_jpeg(
    rgb: &[u8],
    width: u32,
    height: u32,
    quality: u8,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(rgb.len() / 8);
    jpeg_encoder::Encoder::new(&mut out, quality)
        .encode(
            rgb,
            width as u16,
            height as u16,
            jpeg_encoder::ColorType::Rgb,
        )
        .map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn produces_a_jpeg_with_the_box_drawn() {
        let rgb = vec![0u8; 64 * 48 * 3];
        let jpeg = encode_snapshot(&rgb, 64, 48, &BBox::new(10.0, 10.0, 30.0, 40.0), 90).unwrap();
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "JPEG SOI marker");
        assert!(encode_snapshot(&rgb, 64, 48, &BBox::new(-50.0, -5.0, 500.0, 500.0), 90).is_ok());
    }
}

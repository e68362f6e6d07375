use std::time::{Duration, Instant};

use ffmpeg_next as ff;
use futures::StreamExt;
use retina::client::{Credentials, PlayOptions, SessionOptions, SetupOptions, Transport};
use retina::codec::{CodecItem, FrameFormat};

use crate::decode::VideoDecoder;
use crate::supervisor::{Session, SessionEnd};
use crate::IngestError;

/// Splits user name and password out of the URL: retina takes them separately, and the URL
/// that remains is safe to show.
fn split_credentials(raw: &str) -> Result<(url::Url, Option<Credentials>), IngestError> {
    let mut url = url::Url::parse(raw).map_err(|e| IngestError::Rtsp(format!("bad URL: {e}")))?;
    let creds = (!url.username().is_empty()).then(|| Credentials {
        username: percent_decode(url.username()),
        password: percent_decode(url.password().unwrap_or("")),
    });
    // Clearing credentials cannot fail on an rtsp:// URL with a host.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Ok((url, creds))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push(h * 16 + l);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// retina's error, said plainly where the camera answered with a status the user can act on.
fn plain_error(e: retina::Error, has_credentials: bool) -> IngestError {
    let plain = match (e.status_code(), has_credentials) {
        (Some(401), true) => "the camera refused the user name or password (401 Unauthorized)",
        (Some(401), false) => {
            "the camera asks for a user name and password (401 Unauthorized): put them in the \
             URL, rtsp://user:password@host/path"
        }
        (Some(403), _) => "the camera forbids this stream to this user (403 Forbidden)",
        (Some(404), _) => "the camera has no stream at this path (404 Not Found)",
        _ => return IngestError::Rtsp(e.to_string()),
    };
    IngestError::Rtsp(plain.to_owned())
}

/// Plays an RTSP stream until it fails, stalls or shutdown.
pub(crate) fn run(
    raw_url: &str,
    udp: bool,
    stall: Duration,
    s: &Session,
) -> Result<SessionEnd, IngestError> {
    let (url, creds) = split_credentials(raw_url)?;
    let has_credentials = creds.is_some();
    let rtsp_err = |e| plain_error(e, has_credentials);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| IngestError::Rtsp(format!("runtime: {e}")))?;
    // retina tears sessions down when they are dropped, which needs the runtime: keep it entered
    // until everything below (declared later, dropped earlier) is gone.
    let _entered = rt.enter();
    let stopped = || async { s.shutdown.triggered().await };

    let connect = async {
        let mut session = retina::client::Session::describe(
            url.clone(),
            SessionOptions::default()
                .creds(creds)
                .user_agent("AegisVision".to_owned()),
        )
        .await
        .map_err(rtsp_err)?;
        let (index, codec) = session
            .streams()
            .iter()
            .enumerate()
            .find_map(|(i, st)| match (st.media(), st.encoding_name()) {
                ("video", "h264") => Some((i, ff::codec::Id::H264)),
                ("video", "h265") => Some((i, ff::codec::Id::HEVC)),
                _ => None,
            })
            .ok_or_else(|| IngestError::NoVideo(format!("{url} (no H.264 or H.265 video)")))?;
        let clock_rate = session.streams()[index].clock_rate_hz();
        let transport = if udp {
            Transport::Udp(Default::default())
        } else {
            Transport::Tcp(Default::default())
        };
        session
            .setup(
                index,
                SetupOptions::default()
                    .transport(transport)
                    .frame_format(FrameFormat::SIMPLE),
            )
            .await
            .map_err(rtsp_err)?;
        let playing = session
            .play(PlayOptions::default())
            .await
            .map_err(rtsp_err)?;
        Ok::<_, IngestError>((playing.demuxed().map_err(rtsp_err)?, codec, clock_rate))
    };
    let connected = rt.block_on(async {
        tokio::select! {
            r = tokio::time::timeout(stall, connect) => match r {
                Ok(r) => r.map(Some),
                Err(_) => Err(IngestError::Rtsp(format!("no answer within {:.1} s", stall.as_secs_f64()))),
            },
            () = stopped() => Ok(None),
        }
    })?;
    let Some((mut demuxed, codec, clock_rate)) = connected else {
        return Ok(SessionEnd::Stopped);
    };

    let decoder_codec =
        ff::codec::decoder::find(codec).ok_or_else(|| IngestError::Codec(format!("{codec:?}")))?;
    let ctx = ff::codec::context::Context::new_with_codec(decoder_codec);
    let mut decoder = VideoDecoder::new(
        ctx,
        1.0 / f64::from(clock_rate.max(1)),
        s.input_size,
        s.detect_fps,
        false,
        None,
    )?;
    // Stalled: no video frame for `stall`, whatever else arrives (a camera whose encoder hangs
    // still sends RTCP reports).
    let mut deadline = tokio::time::Instant::now() + stall;
    loop {
        let next = rt.block_on(async {
            tokio::select! {
                r = tokio::time::timeout_at(deadline, demuxed.next()) => Some(r),
                () = stopped() => None,
            }
        });
        let item = match next {
            None => return Ok(SessionEnd::Stopped),
            Some(Err(_)) => return Err(IngestError::Stalled(stall.as_secs_f64())),
            Some(Ok(None)) => return Err(IngestError::Rtsp("the server ended the stream".into())),
            Some(Ok(Some(Err(e)))) => return Err(rtsp_err(e)),
            Some(Ok(Some(Ok(item)))) => item,
        };
        let CodecItem::VideoFrame(frame) = item else {
            continue;
        };
        deadline = tokio::time::Instant::now() + stall;
        let read_at = Instant::now();
        let mut packet = ff::Packet::copy(frame.data());
        packet.set_pts(Some(frame.timestamp().elapsed()));
        if !decoder.send(&packet, read_at, &s.sink)? {
            return Ok(SessionEnd::Stopped);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_the_url() {
        let (url, creds) = split_credentials("rtsp://ad%40min:p%3Ass@cam:8554/live").unwrap();
        assert_eq!(url.as_str(), "rtsp://cam:8554/live");
        let c = creds.unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("ad@min", "p:ss")
        );
        assert!(split_credentials("rtsp://cam/live").unwrap().1.is_none());
    }
}

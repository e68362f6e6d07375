#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum IngestError {
    #[error("cannot open {source_name}: {reason}")]
    Open { source_name: String, reason: String },
    #[error("{0} has no video stream")]
    NoVideo(String),
    #[error("unsupported codec {0}")]
    Codec(String),
    #[error("decode error: {0}")]
    Decode(String),
    #[error("read error: {0}")]
    Read(String),
    #[error("RTSP: {0}")]
    Rtsp(String),
    #[error("stalled: no frame for {0:.1} s")]
    Stalled(f64),
}

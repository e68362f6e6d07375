/// Returns the URL with any password (and user name) replaced, safe for logs and API output.
/// Strings that do not parse as URLs are returned unchanged when they hold no `@`, and fully
/// masked otherwise, so nothing that might carry a secret leaks.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            if !u.username().is_empty() || u.password().is_some() {
                // Setting fails only for cannot-be-a-base URLs, which carry no credentials.
                let _ = u.set_username("***");
                let _ = u.set_password(None);
            }
            u.to_string()
        }
        Err(_) if raw.contains('@') => "***".to_owned(),
        Err(_) => raw.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn hides_credentials() {
        assert_eq!(
            redact_url("rtsp://admin:s3cret@10.0.0.5:554/live"),
            "rtsp://***@10.0.0.5:554/live"
        );
        assert_eq!(redact_url("rtsp://cam/live"), "rtsp://cam/live");
        assert_eq!(redact_url("/data/clip.mp4"), "/data/clip.mp4");
        assert!(!redact_url("not a url user:pw@x").contains("pw"));
    }
}

//! `SignedUrl`: a presigned OSS download URL, which is a bearer credential until it expires.
//!
//! Its query (`Signature`, `OSSAccessKeyId`, `security-token`, `x-oss-signature`, …) must never
//! reach a log, an error, a state file or a manifest, so `Debug` and `Display` show only the
//! scheme, host and path. The full text is reached through [`SignedUrl::expose`], used once: to
//! send the GET. The URL is kept verbatim (only surrounding whitespace trimmed — DMS's sample
//! ends in `\n`), because re-encoding its query would break the signature.

use std::fmt;

/// A presigned URL. Construct with [`SignedUrl::parse`].
#[derive(Clone, PartialEq, Eq)]
pub struct SignedUrl {
    raw: String,
    host: String,
    path: String,
    path_style: bool,
    expires: Option<i64>,
}

/// Why a `DownloadUrl` is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignedUrlError {
    /// Not an absolute http(s) URL.
    #[error("DownloadUrl is not an http(s) URL")]
    NotHttp,
}

impl SignedUrl {
    /// Trims whitespace and checks the URL is absolute http(s). The text is otherwise kept
    /// exactly as given.
    pub fn parse(text: &str) -> Result<Self, SignedUrlError> {
        let raw = text.trim().to_owned();
        let url = reqwest::Url::parse(&raw).map_err(|_| SignedUrlError::NotHttp)?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(SignedUrlError::NotHttp);
        }
        let host = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        let expires = url
            .query_pairs()
            .find(|(k, _)| k == "Expires")
            .and_then(|(_, v)| v.parse::<i64>().ok());
        // OSS SDKs build path-style URLs for an IP address or localhost endpoint.
        // (`domain()` is `None` for an IP address.)
        let path_style = url.domain().is_none_or(|domain| domain == "localhost");
        Ok(Self {
            raw,
            host,
            path: url.path().to_owned(),
            path_style,
            expires,
        })
    }

    /// The URL exactly as DMS returned it (trimmed). Only for sending the request.
    pub fn expose(&self) -> &str {
        &self.raw
    }

    /// `host` or `host:port`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The object key: the percent-decoded path without its leading `/`. OSS URLs are
    /// virtual-hosted (`bucket.endpoint/key`) except on an IP address or `localhost`, where
    /// they are path-style (`host/bucket/key`, as the SDKs build them): there the first
    /// segment is the bucket, not part of the key.
    pub fn object(&self) -> String {
        let mut trimmed = self.path.trim_start_matches('/');
        if self.path_style
            && let Some((_bucket, key)) = trimmed.split_once('/')
            && !key.is_empty()
        {
            trimmed = key;
        }
        percent_encoding::percent_decode_str(trimmed)
            .decode_utf8_lossy()
            .into_owned()
    }

    /// The last path segment, decoded: the zip's file name.
    pub fn file_name(&self) -> String {
        let object = self.object();
        object.rsplit('/').next().unwrap_or_default().to_owned()
    }

    /// The V1 `Expires` (unix seconds), when the URL carries one.
    pub fn expires(&self) -> Option<i64> {
        self.expires
    }
}

impl fmt::Display for SignedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.host, self.path)
    }
}

impl fmt::Debug for SignedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SignedUrl({}{}?{})",
            self.host,
            self.path,
            crate::net::secret::MASK
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "https://idbsaasstore.oss-cn-zhangjiakou.aliyuncs.com/abc_REDO_31201_207.zip?Expires=1682239593&OSSAccessKeyId=LTAIsecretid&Signature=AbC%2B%2Fdef%3D\n";

    #[test]
    fn keeps_the_url_verbatim_but_trimmed() {
        let url = SignedUrl::parse(SAMPLE).unwrap();
        assert_eq!(url.expose(), SAMPLE.trim_end());
        assert_eq!(url.host(), "idbsaasstore.oss-cn-zhangjiakou.aliyuncs.com");
        assert_eq!(url.object(), "abc_REDO_31201_207.zip");
        assert_eq!(url.expires(), Some(1682239593));
    }

    #[test]
    fn never_prints_the_query() {
        let url = SignedUrl::parse(SAMPLE).unwrap();
        for shown in [
            format!("{url}"),
            format!("{url:?}"),
            format!("{:?}", Some(&url)),
        ] {
            assert!(!shown.contains("Signature"), "{shown}");
            assert!(!shown.contains("LTAIsecretid"), "{shown}");
            assert!(!shown.contains("AbC"), "{shown}");
            assert!(shown.contains("abc_REDO_31201_207.zip"), "{shown}");
        }
    }

    #[test]
    fn path_style_and_non_ascii_objects() {
        let url =
            SignedUrl::parse("http://127.0.0.1:9000/bucket/%E5%9B%9E%E6%BB%9A/x%20y.zip?Expires=1")
                .unwrap();
        assert_eq!(url.host(), "127.0.0.1:9000");
        assert_eq!(
            url.object(),
            "回滚/x y.zip",
            "path-style: the first segment is the bucket"
        );
        assert_eq!(url.file_name(), "x y.zip");
        let url = SignedUrl::parse("http://localhost:9000/only.zip?Expires=1").unwrap();
        assert_eq!(url.object(), "only.zip", "no bucket segment to strip");
        let url = SignedUrl::parse("http://[::1]:9000/b/k.zip").unwrap();
        assert_eq!(url.object(), "k.zip");
        let url = SignedUrl::parse("https://b.oss-cn-hangzhou.aliyuncs.com/dir/k.zip").unwrap();
        assert_eq!(
            url.object(),
            "dir/k.zip",
            "virtual-hosted: the whole path is the key"
        );
    }

    #[test]
    fn rejects_non_http() {
        assert_eq!(SignedUrl::parse("ftp://x/y"), Err(SignedUrlError::NotHttp));
        assert_eq!(SignedUrl::parse("not a url"), Err(SignedUrlError::NotHttp));
    }
}

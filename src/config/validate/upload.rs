//! `[upload]`: the target URL (`oss://bucket/prefix` or `s3://bucket/prefix`), the endpoint
//! and region it is signed for, what goes up, and the S3 keys of `[upload.credentials]`.

use std::path::Path;

use super::{Checker, key, resolve_credential_file};
use crate::config::raw::{RawUpload, RawUploadCredentials};
use crate::config::{ConfigEnv, S3KeySettings, StoreKind, UploadContent, UploadSettings};
use crate::net::secret::Secret;

/// Four objects or parts at once fill a link without crowding out downloads.
const UPLOAD_CONCURRENCY: u32 = 4;
/// 64 MiB parts: 10,000 parts allow 625 GiB, and memory never holds a part (it streams).
const UPLOAD_PART_SIZE: u64 = 64 << 20;
/// OSS refuses parts over 5 GiB; so does S3.
const MAX_PART_SIZE: u64 = 5 << 30;
/// OSS's smallest non-last part (S3's is 5 MiB; smaller works against test servers only).
const MIN_PART_SIZE: u64 = 100 << 10;
/// Where an OSS endpoint gives no region away (an IP, a custom domain).
const OSS_DEFAULT_REGION: &str = "cn-hangzhou";
/// The AWS default region.
const S3_DEFAULT_REGION: &str = "us-east-1";

/// The region in an OSS endpoint host: `oss-cn-hangzhou.aliyuncs.com`,
/// `oss-cn-hangzhou-internal.aliyuncs.com`, `s3.oss-cn-hangzhou.aliyuncs.com`.
fn oss_region_of(host: &str) -> Option<String> {
    let label = host.split('.').find(|l| l.starts_with("oss-"))?;
    let region = label.strip_prefix("oss-")?;
    let region = region.strip_suffix("-internal").unwrap_or(region);
    (!region.is_empty() && host.ends_with(".aliyuncs.com")).then(|| region.to_owned())
}

/// A bucket name both services accept: 3 to 63 lower-case letters, digits and hyphens (S3
/// also dots), starting and ending with a letter or digit.
fn bucket_problem(kind: StoreKind, bucket: &str) -> Option<String> {
    let allowed = |b: u8| {
        b.is_ascii_lowercase()
            || b.is_ascii_digit()
            || b == b'-'
            || (kind == StoreKind::S3 && b == b'.')
    };
    let bytes = bucket.as_bytes();
    if !(3..=63).contains(&bytes.len()) {
        return Some(format!("bucket {bucket:?} must be 3 to 63 characters long"));
    }
    if !bytes.iter().all(|&b| allowed(b)) {
        return Some(format!(
            "bucket {bucket:?} may hold only lower-case letters, digits and hyphens"
        ));
    }
    let edge = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !edge(bytes[0]) || !edge(bytes[bytes.len() - 1]) {
        return Some(format!(
            "bucket {bucket:?} must start and end with a letter or digit"
        ));
    }
    None
}

/// Splits `scheme://bucket/prefix`.
fn parse_target(url: &str) -> Result<(StoreKind, String, String), String> {
    let (kind, rest) = if let Some(rest) = url.strip_prefix("oss://") {
        (StoreKind::Oss, rest)
    } else if let Some(rest) = url.strip_prefix("s3://") {
        (StoreKind::S3, rest)
    } else {
        return Err(format!(
            "{url:?} is not oss://bucket/prefix or s3://bucket/prefix"
        ));
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if let Some(problem) = bucket_problem(kind, bucket) {
        return Err(problem);
    }
    let prefix = prefix.trim_matches('/');
    for segment in prefix.split('/').filter(|_| !prefix.is_empty()) {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(format!(
                "the prefix {prefix:?} has an empty, \".\" or \"..\" segment"
            ));
        }
        if segment.chars().any(char::is_control) {
            return Err(format!("the prefix {prefix:?} has a control character"));
        }
    }
    Ok((kind, bucket.to_owned(), prefix.to_owned()))
}

pub(super) fn validate_upload(
    c: &mut Checker<'_>,
    raw: RawUpload,
    base: &Path,
    env: &ConfigEnv,
) -> Option<UploadSettings> {
    let path = |k| [key("upload"), key(k)];
    let Some(url) = raw.url.as_deref() else {
        c.error(
            &[key("upload")],
            "needs url = \"oss://bucket/prefix\" or \"s3://bucket/prefix\"",
        );
        return None;
    };
    let (kind, bucket, prefix) = match parse_target(url.trim()) {
        Ok(target) => target,
        Err(problem) => {
            c.error(&path("url"), problem);
            return None;
        }
    };
    let region = raw.region.as_deref().map(str::trim).map(str::to_owned);
    if region.as_deref().is_some_and(|r| {
        r.is_empty()
            || !r
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }) {
        c.error(&path("region"), "is not a region id like cn-hangzhou");
        // Reported; nothing is built from it.
        return None;
    }
    let endpoint = match (kind, raw.endpoint.as_deref()) {
        (_, Some(endpoint)) => c.url(&path("endpoint"), endpoint)?,
        (StoreKind::Oss, None) => {
            c.error(
                &path("url"),
                "oss:// needs upload.endpoint, e.g. \"https://oss-cn-hangzhou.aliyuncs.com\"",
            );
            return None;
        }
        (StoreKind::S3, None) => {
            let region = region.as_deref().unwrap_or(S3_DEFAULT_REGION);
            match format!("https://s3.{region}.amazonaws.com").parse() {
                Ok(url) => url,
                Err(_) => {
                    c.error(&path("region"), "is not a region id like us-east-1");
                    return None;
                }
            }
        }
    };
    if endpoint.path() != "/" {
        c.error(
            &path("endpoint"),
            "must be the service's root URL, without a path",
        );
    }
    let region = region.unwrap_or_else(|| match kind {
        StoreKind::Oss => endpoint
            .host_str()
            .and_then(oss_region_of)
            .unwrap_or_else(|| OSS_DEFAULT_REGION.to_owned()),
        StoreKind::S3 => S3_DEFAULT_REGION.to_owned(),
    });
    let concurrency = raw.concurrency.unwrap_or(UPLOAD_CONCURRENCY);
    if concurrency == 0 {
        c.error(&path("concurrency"), "must be at least 1");
    }
    let part_size = raw.part_size.map_or(UPLOAD_PART_SIZE, |s| s.0);
    if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&part_size) {
        c.error(&path("part_size"), "must be between 100KiB and 5GiB");
    }
    let s3_keys = raw
        .credentials
        .and_then(|raw| validate_s3_keys(c, kind, raw, base, env));
    Some(UploadSettings {
        kind,
        bucket,
        prefix,
        endpoint,
        region,
        content: raw.content.unwrap_or(UploadContent::Zip),
        concurrency: concurrency.max(1) as usize,
        part_size,
        keep_local: raw.keep_local.unwrap_or(true),
        s3_keys,
    })
}

fn validate_s3_keys(
    c: &mut Checker<'_>,
    kind: StoreKind,
    raw: RawUploadCredentials,
    base: &Path,
    env: &ConfigEnv,
) -> Option<S3KeySettings> {
    let path = |k| [key("upload"), key("credentials"), key(k)];
    if kind == StoreKind::Oss {
        c.error(
            &[key("upload"), key("credentials")],
            "oss:// signs with [credentials] (the same chain as the DMS API); [upload.credentials] is for s3://",
        );
        return None;
    }
    let Some(access_key_id) = raw.access_key_id.filter(|k| !k.trim().is_empty()) else {
        c.error(
            &path("access_key_id"),
            "is required in [upload.credentials]",
        );
        return None;
    };
    let secret_access_key_file = raw.secret_access_key_file.map(|p| {
        resolve_credential_file(
            c,
            "upload",
            "credentials.secret_access_key_file",
            &p,
            base,
            env,
        )
    });
    match (&raw.secret_access_key, &secret_access_key_file) {
        (Some(_), Some(_)) => c.error(
            &path("secret_access_key_file"),
            "set secret_access_key or secret_access_key_file, not both",
        ),
        (None, None) => c.error(
            &path("access_key_id"),
            "needs secret_access_key_file (or secret_access_key)",
        ),
        _ => {}
    }
    Some(S3KeySettings {
        access_key_id,
        secret_access_key: raw.secret_access_key.map(Secret::from),
        secret_access_key_file,
        session_token: raw.session_token.map(Secret::from),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_regions() {
        assert_eq!(
            parse_target("oss://my-bucket/dms-archive/").unwrap(),
            (StoreKind::Oss, "my-bucket".into(), "dms-archive".into())
        );
        assert_eq!(
            parse_target("s3://archive").unwrap(),
            (StoreKind::S3, "archive".into(), String::new())
        );
        assert!(parse_target("gs://b/p").is_err());
        assert!(parse_target("oss://Bucket/p").is_err());
        assert!(parse_target("s3://b/a//c").is_err());
        assert!(parse_target("s3://bkt/a/../c").is_err());
        assert_eq!(
            oss_region_of("oss-cn-hangzhou.aliyuncs.com").as_deref(),
            Some("cn-hangzhou")
        );
        assert_eq!(
            oss_region_of("dmstrack-archive.oss-cn-zhangjiakou-internal.aliyuncs.com").as_deref(),
            Some("cn-zhangjiakou")
        );
        assert_eq!(oss_region_of("127.0.0.1"), None);
    }
}

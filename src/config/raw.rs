//! The config file exactly as written: serde structs that reject unknown keys, plus the
//! deserializers for durations and sizes. Nothing here applies defaults or checks ranges;
//! that is `validate.rs`'s job, so parse errors and validation errors stay separate.

use std::time::Duration;

use serde::{Deserialize, Deserializer, de};

/// A duration written by a person: a humantime string such as `"5s"`, `"10m"`, `"1h 30m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HumanDuration(pub(crate) Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration string such as \"5s\", \"10m\" or \"72h\"")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<HumanDuration, E> {
                humantime::parse_duration(value.trim())
                    .map(HumanDuration)
                    .map_err(|e| E::custom(format!("invalid duration {value:?}: {e}")))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// A size: a string such as `"64GiB"`, `"512 MiB"`, `"10MB"`, or a plain number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HumanSize(pub(crate) u64);

impl<'de> Deserialize<'de> for HumanSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = HumanSize;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a size such as \"64GiB\" or a number of bytes")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<HumanSize, E> {
                value
                    .trim()
                    .parse::<bytesize::ByteSize>()
                    .map(|size| HumanSize(size.as_u64()))
                    .map_err(|e| E::custom(format!("invalid size {value:?}: {e}")))
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<HumanSize, E> {
                u64::try_from(value)
                    .map(HumanSize)
                    .map_err(|_| E::custom(format!("invalid size {value}: must not be negative")))
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<HumanSize, E> {
                Ok(HumanSize(value))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub(crate) dms: RawDms,
    #[serde(default)]
    pub(crate) credentials: RawCredentials,
    #[serde(default)]
    pub(crate) poll: RawPoll,
    #[serde(default)]
    pub(crate) download: RawDownload,
    #[serde(default)]
    pub(crate) archive: RawArchive,
    #[serde(default)]
    pub(crate) state: RawState,
    pub(crate) http: Option<RawHttp>,
    #[serde(default)]
    pub(crate) hooks: RawHooks,
    pub(crate) upload: Option<RawUpload>,
    #[serde(default)]
    pub(crate) watch: RawWatch,
    #[serde(default)]
    pub(crate) tickets: Vec<RawTicket>,
}

/// A file of the tickets folder: only `[[tickets]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTicketsFile {
    #[serde(default)]
    pub(crate) tickets: Vec<RawTicket>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDms {
    pub(crate) endpoint: Option<String>,
    pub(crate) signature: Option<crate::net::signer::SignatureVersion>,
    pub(crate) tid: Option<i64>,
    pub(crate) connect_timeout: Option<HumanDuration>,
    pub(crate) request_timeout: Option<HumanDuration>,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) max_requests_per_second: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCredentials {
    pub(crate) source: Option<super::CredentialSource>,
    pub(crate) access_key_id: Option<String>,
    pub(crate) access_key_secret: Option<String>,
    pub(crate) access_key_secret_file: Option<String>,
    pub(crate) security_token: Option<String>,
    pub(crate) profile: Option<String>,
    pub(crate) role_name: Option<String>,
    pub(crate) metadata_endpoint: Option<String>,
    pub(crate) role_arn: Option<String>,
    pub(crate) oidc_provider_arn: Option<String>,
    pub(crate) oidc_token_file: Option<String>,
    pub(crate) role_session_name: Option<String>,
    pub(crate) sts_endpoint: Option<String>,
    pub(crate) sts_region: Option<String>,
    pub(crate) session_duration: Option<HumanDuration>,
    pub(crate) policy: Option<String>,
    pub(crate) external_id: Option<String>,
    pub(crate) credentials_uri: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPoll {
    pub(crate) initial_interval: Option<HumanDuration>,
    pub(crate) max_interval: Option<HumanDuration>,
    pub(crate) multiplier: Option<f64>,
    pub(crate) jitter: Option<f64>,
    pub(crate) give_up_after: Option<HumanDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDownload {
    pub(crate) concurrency: Option<u32>,
    pub(crate) connect_timeout: Option<HumanDuration>,
    pub(crate) read_timeout: Option<HumanDuration>,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) verify_crc64: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawArchive {
    pub(crate) dir: Option<String>,
    pub(crate) keep_zip: Option<bool>,
    pub(crate) max_unpacked_bytes: Option<HumanSize>,
    pub(crate) max_entries: Option<u64>,
    pub(crate) retention: Option<HumanDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawState {
    pub(crate) dir: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttp {
    pub(crate) listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHooks {
    pub(crate) on_archived: Option<Vec<String>>,
    pub(crate) on_uploaded: Option<Vec<String>>,
    pub(crate) timeout: Option<HumanDuration>,
    pub(crate) max_attempts: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpload {
    pub(crate) url: Option<String>,
    pub(crate) endpoint: Option<String>,
    pub(crate) region: Option<String>,
    pub(crate) content: Option<super::UploadContent>,
    pub(crate) concurrency: Option<u32>,
    pub(crate) part_size: Option<HumanSize>,
    pub(crate) keep_local: Option<bool>,
    pub(crate) credentials: Option<RawUploadCredentials>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUploadCredentials {
    pub(crate) access_key_id: Option<String>,
    pub(crate) secret_access_key: Option<String>,
    pub(crate) secret_access_key_file: Option<String>,
    pub(crate) session_token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWatch {
    pub(crate) tickets_dir: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTicket {
    pub(crate) order_id: i64,
    pub(crate) download_key_id: Option<String>,
    pub(crate) export: Option<RawExport>,
    pub(crate) tid: Option<i64>,
    pub(crate) label: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawExport {
    pub(crate) rollback_sql_type: super::RollbackSqlType,
    pub(crate) filter_start_time: Option<String>,
    pub(crate) filter_end_time: Option<String>,
    #[serde(default)]
    pub(crate) filter_tables: Vec<String>,
    #[serde(default)]
    pub(crate) filter_types: Vec<String>,
    pub(crate) column_filter: Option<RawColumnFilter>,
    #[serde(default)]
    pub(crate) event_ids: Vec<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawColumnFilter {
    pub(crate) column_name: String,
    pub(crate) operator: super::ColumnOperator,
    pub(crate) value: Option<String>,
    pub(crate) between_start: Option<String>,
    pub(crate) between_end: Option<String>,
    #[serde(default)]
    pub(crate) in_list: Vec<String>,
}

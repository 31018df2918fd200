use super::*;

const FILE: &str = "/etc/dmstrack/config.toml";

fn load_with(text: &str, env: &ConfigEnv) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, Path::new(FILE), env)
}

fn load(text: &str) -> Result<Config, ConfigError> {
    load_with(text, &ConfigEnv::default())
}

fn errors(text: &str) -> String {
    load(text)
        .expect_err("the config must be rejected")
        .to_string()
}

const TICKET: &str = "[[tickets]]\norder_id = 1\ndownload_key_id = \"k\"\n";

/// The shipped example with its commented-out `[[tickets]]` switched on, so the documented
/// tickets are checked too (the file itself ships without tickets: it is the package's
/// /etc/dmstrack/config.toml and must do nothing until someone adds one).
fn example_with_tickets() -> String {
    let text = include_str!("../../config/dmstrack.example.toml");
    let start = text
        .find("# [[tickets]]")
        .expect("the example documents [[tickets]]");
    let tickets: String = text[start..]
        .lines()
        .map(|line| line.strip_prefix("# ").unwrap_or(line))
        .filter(|line| !line.starts_with("further export keys") && !line.starts_with("  "))
        .map(|line| format!("{line}\n"))
        .collect();
    format!("{}{tickets}", &text[..start])
}

#[test]
fn example_config_ships_without_tickets() {
    let config = load(include_str!("../../config/dmstrack.example.toml")).unwrap();
    assert!(config.tickets.is_empty());
}

#[test]
fn example_config_parses_with_the_documented_values() {
    let text = example_with_tickets();
    let config = load(&text).unwrap();
    assert_eq!(
        config.dms.endpoint.as_str(),
        "https://dms-enterprise.aliyuncs.com/"
    );
    assert_eq!(config.dms.signature, SignatureVersion::V3);
    assert_eq!(config.dms.max_attempts, 5);
    assert_eq!(config.poll.max_interval, Duration::from_secs(300));
    assert_eq!(config.archive.max_unpacked_bytes, 64 << 30);
    assert_eq!(config.http.unwrap().listen.to_string(), "127.0.0.1:9464");
    assert_eq!(config.tickets.len(), 2);
    assert_eq!(config.tickets[0].tid, Some(3));
    assert_eq!(
        config.tickets[0].label.as_deref(),
        Some("orders-2026-11-27")
    );
    match &config.tickets[1].source {
        TicketSource::Export(e) => {
            assert_eq!(e.rollback_sql_type, RollbackSqlType::Reverse);
            assert_eq!(e.filter_types, ["UPDATE", "DELETE"]);
            assert_eq!(e.filter_end_time.as_deref(), Some("2026-11-27 23:59:59"));
        }
        other => panic!("{other:?}"),
    }
    // The example documents the defaults: it must equal a config that sets nothing.
    let defaults = load(TICKET).unwrap();
    assert_eq!(config.dms, defaults.dms);
    assert_eq!(config.poll, defaults.poll);
    assert_eq!(config.download, defaults.download);
    assert_eq!(config.archive, defaults.archive);
    assert_eq!(config.state, defaults.state);
    assert_eq!(config.hooks, defaults.hooks);
    assert_eq!(config.credentials, defaults.credentials);
}

#[test]
fn defaults() {
    let c = load(TICKET).unwrap();
    assert_eq!(c.dms.connect_timeout, Duration::from_secs(5));
    assert_eq!(c.dms.request_timeout, Duration::from_secs(30));
    assert_eq!(c.dms.max_requests_per_second, 10.0);
    assert_eq!(c.dms.tid, None);
    assert_eq!(c.credentials.source, CredentialSource::Default);
    assert_eq!(c.poll.initial_interval, Duration::from_secs(5));
    assert_eq!(c.poll.multiplier, 2.0);
    assert_eq!(c.poll.jitter, 0.2);
    assert_eq!(c.poll.give_up_after, Duration::from_secs(72 * 3600));
    assert_eq!(c.download.concurrency, 2);
    assert_eq!(c.download.read_timeout, Duration::from_secs(60));
    assert_eq!(c.download.max_attempts, 10);
    assert!(c.download.verify_crc64);
    assert!(!c.archive.keep_zip);
    assert_eq!(c.archive.max_entries, 100_000);
    assert_eq!(c.archive.dir, Path::new("/etc/dmstrack/archive"));
    assert_eq!(c.state.dir, Path::new("/etc/dmstrack/state"));
    assert!(c.http.is_none());
    assert!(c.hooks.on_archived.is_none());
    assert!(c.inline_secret_keys.is_empty());
}

#[test]
fn unknown_key_names_file_line_column() {
    assert_eq!(
        errors("[dms]\nendpoint = \"https://x\"\nendpoin = \"x\"\n"),
        "/etc/dmstrack/config.toml:3:1: dms.endpoin: unknown field `endpoin`, expected one of `endpoint`, `signature`, `tid`, `connect_timeout`, `request_timeout`, `max_attempts`, `max_requests_per_second`"
    );
    assert_eq!(
        errors(
            "[[tickets]]\norder_id = 1\ndownload_key_id = \"k\"\n\n[[tickets]]\norder_id = 2\nidd = 3\n"
        ),
        "/etc/dmstrack/config.toml:7:1: tickets[1].idd: unknown field `idd`, expected one of `order_id`, `download_key_id`, `export`, `tid`, `label`"
    );
    assert_eq!(
        errors("[metrics]\nlisten = \"x\"\n"),
        "/etc/dmstrack/config.toml:1:2: metrics: unknown field `metrics`, expected one of `dms`, `credentials`, `poll`, `download`, `archive`, `state`, `http`, `hooks`, `upload`, `watch`, `tickets`"
    );
}

#[test]
fn wrong_types_and_bad_values_name_file_line_column() {
    assert_eq!(
        errors("[dms]\nmax_attempts = \"five\"\n"),
        "/etc/dmstrack/config.toml:2:16: dms.max_attempts: invalid type: string \"five\", expected a whole number"
    );
    assert_eq!(
        errors("[download]\nverify_crc64 = \"yes\"\n"),
        "/etc/dmstrack/config.toml:2:16: download.verify_crc64: invalid type: string \"yes\", expected true or false"
    );
    assert_eq!(
        errors("[dms]\nsignature = \"v2\"\n"),
        "/etc/dmstrack/config.toml:2:13: dms.signature: unknown variant `v2`, expected `v3` or `v1`"
    );
    assert_eq!(
        errors("[[tickets]]\norder_id = 1\nexport = { rollback_sql_type = \"SIDEWAYS\" }\n"),
        "/etc/dmstrack/config.toml:3:32: tickets[0].export.rollback_sql_type: unknown variant `SIDEWAYS`, expected `REVERSE` or `FORWARD`"
    );
}

#[test]
fn bad_durations_and_sizes_name_file_line_column() {
    assert_eq!(
        errors("[poll]\ninitial_interval = \"30 parsecs\"\n"),
        "/etc/dmstrack/config.toml:2:20: poll.initial_interval: invalid duration \"30 parsecs\": unknown time unit \"parsecs\", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations)"
    );
    assert_eq!(
        errors("[poll]\ngive_up_after = 30\n"),
        "/etc/dmstrack/config.toml:2:17: poll.give_up_after: invalid type: integer `30`, expected a duration string such as \"5s\", \"10m\" or \"72h\""
    );
    assert!(
        errors("[archive]\nmax_unpacked_bytes = \"12 parsecs\"\n")
            .starts_with("/etc/dmstrack/config.toml:2:22: archive.max_unpacked_bytes: invalid size \"12 parsecs\"")
    );
}

#[test]
fn syntax_errors_name_file_line_column() {
    assert_eq!(
        errors("[dms\n"),
        "/etc/dmstrack/config.toml:1:5: unclosed table, expected `]`"
    );
}

#[test]
fn validation_messages_name_the_key() {
    assert_eq!(
        errors(&format!(
            "{TICKET}[[tickets]]\norder_id = 1\ndownload_key_id = \"k\"\n"
        )),
        "/etc/dmstrack/config.toml:5:1: tickets[1].order_id: duplicate ticket: order_id 1 with download_key_id \"k\" is already listed at /etc/dmstrack/config.toml:1:1"
    );
    assert_eq!(
        errors("[poll]\ninitial_interval = \"10m\"\nmax_interval = \"1m\"\n"),
        "/etc/dmstrack/config.toml:2:1: poll.initial_interval: initial_interval (10m) is greater than max_interval (1m)"
    );
    assert_eq!(
        errors("[poll]\njitter = 1.0\n"),
        "/etc/dmstrack/config.toml:2:1: poll.jitter: 1 is outside [0, 1)"
    );
    assert_eq!(
        errors("[poll]\njitter = -0.1\n"),
        "/etc/dmstrack/config.toml:2:1: poll.jitter: -0.1 is outside [0, 1)"
    );
    assert_eq!(
        errors("[dms]\nendpoint = \"ftp://dms.example\"\n"),
        "/etc/dmstrack/config.toml:2:1: dms.endpoint: \"ftp://dms.example\" is not an http(s) URL"
    );
    assert_eq!(
        errors("[[tickets]]\norder_id = 7\n"),
        "/etc/dmstrack/config.toml:1:1: tickets[0]: needs download_key_id (an existing export) or export (start one)"
    );
    assert_eq!(
        errors(
            "[[tickets]]\norder_id = 7\ndownload_key_id = \"k\"\nexport = { rollback_sql_type = \"FORWARD\" }\n"
        ),
        "/etc/dmstrack/config.toml:4:1: tickets[0].export: set download_key_id (an existing export) or export (start one), not both"
    );
    assert_eq!(
        errors("[hooks]\non_archived = [\"/bin/ship\", \"{path}\"]\n"),
        "/etc/dmstrack/config.toml:2:29: hooks.on_archived[1]: unknown placeholder {path}; use {dir}, {order_id} or {download_key_id}"
    );
    // Braces that are no placeholder of ours pass: shell variables, JSON.
    let hooks = Config::from_toml_str(
        "[hooks]\non_archived = [\"/bin/sh\", \"-c\", \"echo ${DMSTRACK_ORDER_ID} {dir} >> /tmp/x.log\", \"{\\\"a\\\": 1}\", \"{}\"]\n",
        Path::new("/etc/dmstrack/config.toml"),
        &ConfigEnv::default(),
    )
    .unwrap()
    .hooks;
    assert_eq!(hooks.on_archived.unwrap()[3], "{\"a\": 1}");
    assert_eq!(
        errors("[download]\nconcurrency = 0\nread_timeout = \"0s\"\n"),
        "/etc/dmstrack/config.toml:2:1: download.concurrency: must be at least 1\n/etc/dmstrack/config.toml:3:1: download.read_timeout: must be greater than zero"
    );
    assert_eq!(
        errors("[credentials]\nsource = \"static\"\naccess_key_id = \"LTAI\"\n"),
        "/etc/dmstrack/config.toml:2:1: credentials.source: source = \"static\" with static keys needs access_key_secret_file (or access_key_secret)"
    );
    assert_eq!(
        errors("[credentials]\nsource = \"env\"\naccess_key_secret = \"hunter2\"\n"),
        "/etc/dmstrack/config.toml:3:1: credentials.access_key_secret: is only used with source = \"static\" or \"ram_role_arn\", not \"env\""
    );
    assert_eq!(
        errors(
            "[[tickets]]\norder_id = 1\nexport = { rollback_sql_type = \"REVERSE\", filter_types = [\"UPDATE\", \"TRUNCATE\"], filter_start_time = \"2026-11-27\" }\n"
        ),
        "/etc/dmstrack/config.toml:3:69: tickets[0].export.filter_types[1]: \"TRUNCATE\" is not INSERT, UPDATE or DELETE\n\
         /etc/dmstrack/config.toml:3:82: tickets[0].export.filter_start_time: \"2026-11-27\" is not a time like \"2026-11-27 00:00:00\""
    );
}

#[test]
fn secrets_never_appear_in_errors_or_debug() {
    let text = "[credentials]\nsource = \"static\"\naccess_key_id = \"LTAI\"\naccess_key_secret = \"hunter2-secret\"\nsecurity_token = \"tok-secret\"\n";
    let config = load(text).unwrap();
    let shown = format!("{config:?}");
    assert!(
        !shown.contains("hunter2") && !shown.contains("tok-secret"),
        "{shown}"
    );
    assert_eq!(
        config.inline_secret_keys,
        [
            "credentials.access_key_secret",
            "credentials.security_token"
        ]
    );
    let bad = errors(&format!("{text}access_key_secret_file = \"x\"\n"));
    assert!(
        !bad.contains("hunter2") && !bad.contains("tok-secret"),
        "{bad}"
    );
}

#[test]
fn relative_paths_resolve_against_the_config_folder() {
    let text = format!(
        "[state]\ndir = \"var/state\"\n[archive]\ndir = \"/srv/archive\"\n[credentials]\nsource = \"static\"\naccess_key_id = \"a\"\naccess_key_secret_file = \"secret\"\n{TICKET}"
    );
    let c = load(&text).unwrap();
    assert_eq!(c.state.dir, Path::new("/etc/dmstrack/var/state"));
    assert_eq!(c.archive.dir, Path::new("/srv/archive"));
    assert_eq!(
        c.credentials.access_key_secret_file.as_deref(),
        Some(Path::new("/etc/dmstrack/secret"))
    );
}

#[test]
fn systemd_state_directory_is_the_default() {
    let env = ConfigEnv {
        state_directory: Some("/var/lib/dmstrack".into()),
        ..ConfigEnv::default()
    };
    let c = load_with(TICKET, &env).unwrap();
    assert_eq!(c.state.dir, Path::new("/var/lib/dmstrack"));
    assert_eq!(c.archive.dir, Path::new("/var/lib/dmstrack/archive"));
    let c = load_with(
        &format!("[archive]\ndir = \"a\"\n[state]\ndir = \"s\"\n{TICKET}"),
        &env,
    )
    .unwrap();
    assert_eq!(c.state.dir, Path::new("/etc/dmstrack/s"));
    assert_eq!(c.archive.dir, Path::new("/etc/dmstrack/a"));
}

#[test]
fn config_file_discovery_order() {
    let mut env = ConfigEnv::default();
    assert_eq!(
        env.config_path(None),
        Path::new("/etc/dmstrack/config.toml")
    );
    env.configuration_directory = Some("/etc/dmstrack-unit".into());
    assert_eq!(
        env.config_path(None),
        Path::new("/etc/dmstrack-unit/config.toml")
    );
    env.dmstrack_config = Some("/opt/d.toml".into());
    assert_eq!(env.config_path(None), Path::new("/opt/d.toml"));
    assert_eq!(
        env.config_path(Some(Path::new("x.toml"))),
        Path::new("x.toml")
    );
}

#[test]
fn export_tickets_with_every_parameter() {
    let text = "[dms]\ntid = 9\n[[tickets]]\norder_id = 5\nexport = { rollback_sql_type = \"FORWARD\", event_ids = [3, 4], column_filter = { column_name = \"id\", operator = \"BETWEEN\", between_start = \"1\", between_end = \"9\" } }\n";
    let c = load(text).unwrap();
    assert_eq!(c.tickets[0].tid, Some(9), "dms.tid is the default tenant");
    let TicketSource::Export(e) = &c.tickets[0].source else {
        panic!()
    };
    assert_eq!(e.event_ids, [3, 4]);
    let f = e.column_filter.as_ref().unwrap();
    assert_eq!(
        (f.operator, f.between_start.as_deref()),
        (ColumnOperator::Between, Some("1"))
    );
    assert_eq!(
        errors(
            "[[tickets]]\norder_id = 5\nexport = { rollback_sql_type = \"FORWARD\", column_filter = { column_name = \"id\", operator = \"IN\" } }\n"
        ),
        "/etc/dmstrack/config.toml:3:43: tickets[0].export.column_filter: IN and NOT_IN need in_list"
    );
}

#[test]
fn sizes_accept_units_and_numbers() {
    let c = load(&format!(
        "[archive]\nmax_unpacked_bytes = \"512 MiB\"\n{TICKET}"
    ))
    .unwrap();
    assert_eq!(c.archive.max_unpacked_bytes, 512 << 20);
    let c = load(&format!("[archive]\nmax_unpacked_bytes = 4096\n{TICKET}")).unwrap();
    assert_eq!(c.archive.max_unpacked_bytes, 4096);
}

#[test]
fn secret_files_may_live_in_systemds_credentials_directory() {
    let text = format!(
        "[credentials]\nsource = \"static\"\naccess_key_id = \"a\"\naccess_key_secret_file = \"$CREDENTIALS_DIRECTORY/ak_secret\"\n{TICKET}"
    );
    let env = ConfigEnv {
        credentials_directory: Some("/run/credentials/dmstrack-once.service".into()),
        ..ConfigEnv::default()
    };
    let c = load_with(&text, &env).unwrap();
    assert_eq!(
        c.credentials.access_key_secret_file.as_deref(),
        Some(Path::new(
            "/run/credentials/dmstrack-once.service/ak_secret"
        ))
    );
    assert_eq!(
        errors(&text),
        "/etc/dmstrack/config.toml:4:1: credentials.access_key_secret_file: uses $CREDENTIALS_DIRECTORY, which is not set (systemd sets it with LoadCredential=)"
    );
}

#[test]
fn upload_section_defaults_and_rules() {
    let config = Config::from_toml_str(
        "[upload]\nurl = \"oss://dmstrack-archive/dms-archive/\"\nendpoint = \"https://oss-cn-zhangjiakou.aliyuncs.com\"\n",
        Path::new("/etc/dmstrack/config.toml"),
        &ConfigEnv::default(),
    )
    .unwrap();
    let upload = config.upload.unwrap();
    assert_eq!(
        (upload.kind, upload.bucket.as_str(), upload.prefix.as_str()),
        (StoreKind::Oss, "dmstrack-archive", "dms-archive")
    );
    assert_eq!(upload.region, "cn-zhangjiakou");
    assert_eq!(upload.content, UploadContent::Zip);
    assert_eq!((upload.concurrency, upload.part_size), (4, 64 << 20));
    assert!(upload.keep_local && upload.s3_keys.is_none());

    let s3 = Config::from_toml_str(
        "[upload]\nurl = \"s3://archive\"\ncontent = \"files\"\n[upload.credentials]\naccess_key_id = \"AKIA\"\nsecret_access_key_file = \"s3_secret\"\n",
        Path::new("/etc/dmstrack/config.toml"),
        &ConfigEnv::default(),
    )
    .unwrap()
    .upload
    .unwrap();
    assert_eq!(s3.endpoint.as_str(), "https://s3.us-east-1.amazonaws.com/");
    assert_eq!(s3.region, "us-east-1");
    assert_eq!(
        s3.s3_keys.unwrap().secret_access_key_file.unwrap(),
        Path::new("/etc/dmstrack/s3_secret")
    );

    assert_eq!(
        errors("[upload]\nurl = \"oss://b-1/p\"\n"),
        "/etc/dmstrack/config.toml:2:1: upload.url: oss:// needs upload.endpoint, e.g. \"https://oss-cn-hangzhou.aliyuncs.com\""
    );
    assert!(errors("[upload]\nurl = \"ftp://b/p\"\n").contains("is not oss://bucket/prefix"));
    assert!(
        errors("[upload]\nurl = \"oss://bkt\"\nendpoint = \"http://127.0.0.1:1\"\n[upload.credentials]\naccess_key_id = \"a\"\nsecret_access_key = \"s\"\n")
            .contains("oss:// signs with [credentials]")
    );
    assert!(
        errors("[hooks]\non_uploaded = [\"/bin/true\", \"{url}\"]\n")
            .contains("there is no [upload] section")
    );
    assert!(
        errors("[archive]\nretention = \"0s\"\n")
            .contains("archive.retention: must be greater than zero")
    );
    // A region no host name can hold is reported, not built into the default endpoint.
    for region in ["%", "a b", "a/b", ""] {
        let text = errors(&format!(
            "[upload]\nurl = \"s3://my-bucket\"\nregion = {region:?}\n"
        ));
        assert!(text.contains("upload.region: is not a region id"), "{text}");
        assert!(!text.contains("upload.endpoint"), "{text}");
    }
}

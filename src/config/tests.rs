use super::*;

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(
        text,
        Path::new("/etc/dmstrack/config.toml"),
        &ConfigEnv::default(),
    )
}

fn errors(text: &str) -> String {
    load(text).unwrap_err().to_string()
}

#[test]
fn probe() {
    for t in [
        "[dms]\nendpoin = \"x\"\n",
        "[dms]\nmax_attempts = \"five\"\n",
        "[poll]\ninitial_interval = \"30 parsecs\"\n",
        "[[tickets]]\norder_id = 1\ndownload_key_id = \"k\"\nidd = 3\n",
        "[[tickets]]\norder_id = 1\n",
        "[[tickets]]\norder_id = 1\ndownload_key_id = \"k\"\n[[tickets]]\norder_id = 1\ndownload_key_id = \"k\"\n",
        "[poll]\ninitial_interval = \"10m\"\nmax_interval = \"1m\"\njitter = 1.0\n[dms]\nendpoint = \"ftp://x\"\n",
        "[[tickets]]\norder_id = 1\ndownload_key_id = \"k\"\nexport = { rollback_sql_type = \"REVERSE\" }\n",
        "[[tickets]]\norder_id = 1\nexport = { rollback_sql_type = \"SIDEWAYS\" }\n",
        "[archive]\nmax_unpacked_bytes = \"12 parsecs\"\n",
        "dms = 3\n",
        "[dms\n",
    ] {
        println!("---\n{}", errors(t));
    }
}

//! libFuzzer target: see `kafka_backup_format_fuzz::check_roundtrip` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kafka_backup_format_fuzz::check_roundtrip(data);
});

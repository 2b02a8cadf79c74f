//! Kafka topic ids through librdkafka's DescribeTopics admin call, which the `rdkafka` wrapper does
//! not expose. A topic id is the cluster's identity of one topic: a topic deleted and created again
//! under the same name gets a new id, so the id tells a continuing partition history from a new one.
//!
//! One of the two places (with `group_offsets`) the engine calls librdkafka directly. Every pointer
//! comes from librdkafka, is used only while the object that owns it is alive, and every object
//! created here is destroyed here (see [`Owned`]).
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::ffi::{CStr, CString, c_char};
use std::time::{Duration, Instant};

use rdkafka::bindings as rd;
use rdkafka::client::{Client, ClientContext};

use super::ffi::{Owned, admin_options, c_message};

/// Why topic ids could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicIdError(pub String);

impl std::fmt::Display for TopicIdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The topic id of each of `topics` that exists, as Kafka prints it (URL-safe base64 of the 16
/// bytes, no padding, e.g. `o3V6fCrzQWa0rJQ1X7a8Kw`). A topic the cluster reports without an id (a
/// broker older than Kafka 2.8 reports the zero id) or with an error (deleted meanwhile) is left
/// out. Blocks for at most about `timeout`.
pub fn topic_ids<C: ClientContext>(
    client: &Client<C>,
    topics: &[String],
    timeout: Duration,
) -> Result<BTreeMap<String, String>, TopicIdError> {
    let mut out = BTreeMap::new();
    if topics.is_empty() {
        return Ok(out);
    }
    let names: Vec<CString> = topics
        .iter()
        .map(|t| CString::new(t.as_str()))
        .collect::<Result<_, _>>()
        .map_err(|_| TopicIdError("a topic name contains a NUL byte".into()))?;
    let mut name_ptrs: Vec<*const c_char> = names.iter().map(|n| n.as_ptr()).collect();
    let timeout_ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
    let rk = client.native_ptr();

    // SAFETY: `rk` is the live handle of `client`, borrowed for the whole call. The collection
    // copies the names (they outlive the call anyway). Objects are destroyed by `Owned` after
    // the last use of any pointer into them: the event owns the descriptions, their names and ids.
    unsafe {
        let collection = Owned::new(
            rd::rd_kafka_TopicCollection_of_topic_names(name_ptrs.as_mut_ptr(), name_ptrs.len()),
            rd::rd_kafka_TopicCollection_destroy,
        )
        .ok_or_else(|| TopicIdError("out of memory".into()))?;
        let options = admin_options(
            rk,
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBETOPICS,
            timeout_ms,
        )
        .ok_or_else(|| TopicIdError("DescribeTopics is not supported by this client".into()))?;
        let queue = Owned::new(rd::rd_kafka_queue_new(rk), rd::rd_kafka_queue_destroy)
            .ok_or_else(|| TopicIdError("out of memory".into()))?;
        rd::rd_kafka_DescribeTopics(rk, collection.ptr, options.ptr, queue.ptr);

        // The request times out on its own after `timeout_ms`; wait a little longer for its event.
        let deadline = Instant::now() + timeout + Duration::from_secs(5);
        let event = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(TopicIdError(format!(
                    "no answer to DescribeTopics within {timeout:?}"
                )));
            }
            let ev = rd::rd_kafka_queue_poll(queue.ptr, left.as_millis().min(1000) as i32);
            if let Some(ev) = Owned::new(ev, rd::rd_kafka_event_destroy) {
                break ev;
            }
        };
        let err = rd::rd_kafka_event_error(event.ptr);
        if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            let msg = c_message(rd::rd_kafka_event_error_string(event.ptr), err);
            return Err(TopicIdError(format!("DescribeTopics failed: {msg}")));
        }
        let result = rd::rd_kafka_event_DescribeTopics_result(event.ptr);
        if result.is_null() {
            return Err(TopicIdError(
                "DescribeTopics answered with another event".into(),
            ));
        }
        let mut count = 0usize;
        let descs = rd::rd_kafka_DescribeTopics_result_topics(result, &mut count);
        if descs.is_null() {
            return Ok(out);
        }
        for &desc in std::slice::from_raw_parts(descs, count) {
            if desc.is_null()
                || rd::rd_kafka_error_code(rd::rd_kafka_TopicDescription_error(desc))
                    != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
            {
                continue;
            }
            let name = rd::rd_kafka_TopicDescription_name(desc);
            let id = rd::rd_kafka_TopicDescription_topic_id(desc);
            if name.is_null() || id.is_null() {
                continue;
            }
            let hi = rd::rd_kafka_Uuid_most_significant_bits(id);
            let lo = rd::rd_kafka_Uuid_least_significant_bits(id);
            if hi == 0 && lo == 0 {
                continue;
            }
            out.insert(
                CStr::from_ptr(name).to_string_lossy().into_owned(),
                format_topic_id(hi, lo),
            );
        }
    }
    Ok(out)
}

/// A topic id as Kafka prints it: URL-safe base64 without padding of the big-endian 16 bytes.
pub fn format_topic_id(most: i64, least: i64) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&most.to_be_bytes());
    bytes[8..].copy_from_slice(&least.to_be_bytes());
    let mut s = String::with_capacity(22);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            s.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::format_topic_id;

    #[test]
    fn formats_like_kafka() {
        // Kafka's Uuid.toString() of these bits (Base64 URL encoder, no padding).
        assert_eq!(format_topic_id(0, 1), "AAAAAAAAAAAAAAAAAAAAAQ");
        assert_eq!(format_topic_id(-1, -1), "_____________________w");
        assert_eq!(
            format_topic_id(0x0123_4567_89ab_cdef, 0x7edc_ba98_7654_3210),
            "ASNFZ4mrze9-3LqYdlQyEA"
        );
        assert_eq!(format_topic_id(1, 0).len(), 22);
    }
}

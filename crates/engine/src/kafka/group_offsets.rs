//! Committed offsets of many consumer groups through one client, with librdkafka's
//! ListConsumerGroupOffsets admin call (which the `rdkafka` wrapper does not expose). The wrapper's
//! only way, a consumer per group, costs a client, its threads and its connections for each
//! group: seconds per backup on a cluster with a few hundred groups.
//!
//! librdkafka takes one group per call, so calls are pipelined on one result queue, a bounded
//! number at a time. Every object created here is destroyed here (see [`Owned`]).
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::{CStr, CString, c_void};
use std::time::{Duration, Instant};

use rdkafka::bindings as rd;
use rdkafka::client::{Client, ClientContext};

use super::ffi::{Owned, admin_options, c_message};

use super::CommittedOffset;

/// Why the offsets of a group could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOffsetsError {
    /// The group, when the failure is one group's.
    pub group: Option<String>,
    pub message: String,
}

impl std::fmt::Display for GroupOffsetsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.group {
            Some(g) => write!(f, "group {g}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

fn fail(group: Option<&str>, message: impl Into<String>) -> GroupOffsetsError {
    GroupOffsetsError {
        group: group.map(str::to_string),
        message: message.into(),
    }
}

/// Requests in flight at once.
const IN_FLIGHT: usize = 64;

/// The offsets each of `groups` has committed on `partitions` (partitions without a committed
/// offset are left out). Each request is bounded by `timeout`; the whole call by about
/// `timeout` per `IN_FLIGHT` groups. Reading committed offsets does not join the groups.
pub fn committed_offsets<C: ClientContext>(
    client: &Client<C>,
    groups: &[String],
    partitions: &[(String, i32)],
    timeout: Duration,
) -> Result<Vec<CommittedOffset>, GroupOffsetsError> {
    let mut out = Vec::new();
    if groups.is_empty() || partitions.is_empty() {
        return Ok(out);
    }
    let names: Vec<CString> = groups
        .iter()
        .map(|g| CString::new(g.as_str()).map_err(|_| fail(Some(g), "the name contains NUL")))
        .collect::<Result<_, _>>()?;
    let topics: Vec<(CString, i32)> = partitions
        .iter()
        .map(|(t, p)| {
            CString::new(t.as_str())
                .map(|t| (t, *p))
                .map_err(|_| fail(None, format!("topic name {t:?} contains NUL")))
        })
        .collect::<Result<_, _>>()?;
    let timeout_ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
    let rk = client.native_ptr();

    // SAFETY: `rk` is the live handle of `client`, borrowed for the whole call. librdkafka copies
    // the partition list into each request object and the request objects and options into each
    // call, so those are destroyed right after use. Pointers into a result event are read only
    // while the event (`Owned`) is alive. The opaque of each call is its index into `names`,
    // carried as a pointer-sized integer and never dereferenced.
    unsafe {
        let tpl = Owned::new(
            rd::rd_kafka_topic_partition_list_new(topics.len() as i32),
            rd::rd_kafka_topic_partition_list_destroy,
        )
        .ok_or_else(|| fail(None, "out of memory"))?;
        for (t, p) in &topics {
            rd::rd_kafka_topic_partition_list_add(tpl.ptr, t.as_ptr(), *p);
        }
        let queue = Owned::new(rd::rd_kafka_queue_new(rk), rd::rd_kafka_queue_destroy)
            .ok_or_else(|| fail(None, "out of memory"))?;

        let mut next = 0usize;
        let mut pending: HashMap<usize, Instant> = HashMap::new();
        while next < names.len() || !pending.is_empty() {
            while next < names.len() && pending.len() < IN_FLIGHT {
                let group = &groups[next];
                let options = admin_options(
                    rk,
                    rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPOFFSETS,
                    timeout_ms,
                )
                .ok_or_else(|| fail(None, "ListConsumerGroupOffsets is not supported"))?;
                rd::rd_kafka_AdminOptions_set_opaque(options.ptr, next as *mut c_void);
                let request = Owned::new(
                    rd::rd_kafka_ListConsumerGroupOffsets_new(names[next].as_ptr(), tpl.ptr),
                    rd::rd_kafka_ListConsumerGroupOffsets_destroy,
                )
                .ok_or_else(|| fail(Some(group), "out of memory"))?;
                let mut requests = [request.ptr];
                rd::rd_kafka_ListConsumerGroupOffsets(
                    rk,
                    requests.as_mut_ptr(),
                    1,
                    options.ptr,
                    queue.ptr,
                );
                pending.insert(next, Instant::now());
                next += 1;
            }

            // Each request times out on its own after `timeout`; wait a little longer for its
            // event before giving up on it.
            let oldest = pending.values().min().copied().unwrap_or_else(Instant::now);
            let deadline = oldest + timeout + Duration::from_secs(5);
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let stuck = pending
                    .iter()
                    .min_by_key(|(_, t)| **t)
                    .map(|(i, _)| groups[*i].as_str());
                return Err(fail(
                    stuck,
                    format!("no answer to ListConsumerGroupOffsets within {timeout:?}"),
                ));
            }
            let ev = rd::rd_kafka_queue_poll(queue.ptr, left.as_millis().min(1000) as i32);
            let Some(event) = Owned::new(ev, rd::rd_kafka_event_destroy) else {
                continue;
            };
            let index = rd::rd_kafka_event_opaque(event.ptr) as usize;
            if pending.remove(&index).is_none() {
                continue;
            }
            read_result(event.ptr, groups[index].as_str(), &mut out)?;
        }
    }
    Ok(out)
}

/// Adds the committed offsets of `group` in the ListConsumerGroupOffsets result `event` to `out`.
///
/// # Safety
/// `event` must be a live result event of a ListConsumerGroupOffsets call; it is only read.
unsafe fn read_result(
    event: *mut rd::rd_kafka_event_t,
    group: &str,
    out: &mut Vec<CommittedOffset>,
) -> Result<(), GroupOffsetsError> {
    // SAFETY: the caller keeps `event` alive for this call; every pointer read below points into
    // it and is checked for null first.
    unsafe {
        let err = rd::rd_kafka_event_error(event);
        if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Err(fail(
                Some(group),
                c_message(rd::rd_kafka_event_error_string(event), err),
            ));
        }
        let result = rd::rd_kafka_event_ListConsumerGroupOffsets_result(event);
        if result.is_null() {
            return Err(fail(Some(group), "answered with another event"));
        }
        let mut count = 0usize;
        let results = rd::rd_kafka_ListConsumerGroupOffsets_result_groups(result, &mut count);
        if results.is_null() {
            return Ok(());
        }
        for &res in std::slice::from_raw_parts(results, count) {
            if res.is_null() {
                continue;
            }
            let error = rd::rd_kafka_group_result_error(res);
            if !error.is_null() {
                return Err(fail(
                    Some(group),
                    c_message(
                        rd::rd_kafka_error_string(error),
                        rd::rd_kafka_error_code(error),
                    ),
                ));
            }
            let list = rd::rd_kafka_group_result_partitions(res);
            if list.is_null() || (*list).elems.is_null() {
                continue;
            }
            for e in std::slice::from_raw_parts((*list).elems, (*list).cnt.max(0) as usize) {
                if let Some(offset) = committed_of(e, group)? {
                    out.push(offset);
                }
            }
        }
    }
    Ok(())
}

/// The committed offset of one partition of a result, `None` where nothing is committed.
///
/// # Safety
/// `e` must be an element of a result's partition list that is still alive.
unsafe fn committed_of(
    e: &rd::rd_kafka_topic_partition_t,
    group: &str,
) -> Result<Option<CommittedOffset>, GroupOffsetsError> {
    if e.topic.is_null() {
        return Ok(None);
    }
    // SAFETY: the caller keeps the result alive; `topic` and `metadata` are checked for null.
    unsafe {
        let topic = CStr::from_ptr(e.topic).to_string_lossy().into_owned();
        if e.err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            let msg = CStr::from_ptr(rd::rd_kafka_err2str(e.err)).to_string_lossy();
            return Err(fail(
                Some(group),
                format!("partition {topic}/{}: {msg}", e.partition),
            ));
        }
        // A negative offset: nothing committed on this partition.
        if e.offset < 0 {
            return Ok(None);
        }
        let metadata = if e.metadata.is_null() || e.metadata_size == 0 {
            None
        } else {
            let bytes = std::slice::from_raw_parts(e.metadata as *const u8, e.metadata_size);
            Some(String::from_utf8_lossy(bytes).into_owned())
        };
        Ok(Some(CommittedOffset {
            group: group.to_string(),
            topic,
            partition: e.partition,
            offset: e.offset,
            metadata,
        }))
    }
}

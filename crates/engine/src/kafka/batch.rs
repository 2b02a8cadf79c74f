//! Reading a consumer's fetched messages many at a time.
//!
//! rdkafka's message stream hands out one message per call, each wrapped in a reference-counted
//! event and a wake-up check, and a reader selecting over it pays for its timers and signals on
//! every message. A backup of small records spent a fifth of its CPU there. A batch takes every
//! message already waiting on the consumer's queue in one call (`rd_kafka_consume_batch_queue`),
//! and [`Fetched`] reads a message's fields in place, without copying them.
//!
//! Reading one event per call (`rd_kafka_queue_poll`) cost three clock reads and a partition lock
//! per message. The batch call pays those once per call, but it does not return the client's own
//! error events (all brokers down, a failed handshake): it logs them. So while a batch exists,
//! the client's main queue, where those errors are posted, is not forwarded to the consumer's
//! queue; the reader takes them from there with
//! [`take_client_errors`](MessageBatch::take_client_errors) on each of its ticks. Errors about a
//! partition (a deleted topic, an end of partition) come with the messages, in order.
#![allow(unsafe_code)]

use std::marker::PhantomData;

use rdkafka::bindings as rd;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::BorrowedMessage;

use super::ffi::Owned;

/// Messages taken from a consumer's queue; they are released at the next
/// [`fill`](MessageBatch::fill) and when the batch is dropped.
pub(crate) struct MessageBatch<'c> {
    queue: Owned<rd::rd_kafka_queue_t>,
    /// The client's main queue, not forwarded to `queue` while the batch lives.
    main: Owned<rd::rd_kafka_queue_t>,
    /// Where the batch call writes the messages it takes.
    raw: Vec<*mut rd::rd_kafka_message_t>,
    taken: Vec<Taken>,
    /// How many of `taken` were read.
    read: usize,
    /// The queue must be released before its client is destroyed.
    _consumer: PhantomData<&'c ()>,
}

enum Taken {
    /// A record, or an end of partition or a partition's error, owned by the batch.
    Message(*mut rd::rd_kafka_message_t),
    /// An error of the client.
    Error(KafkaError),
}

// SAFETY: librdkafka's queues and messages may be used from any thread; the batch owns its queue
// references and its messages, and hands out only shared views of them.
unsafe impl Send for MessageBatch<'_> {}
// SAFETY: as above; `&MessageBatch` only reads.
unsafe impl Sync for MessageBatch<'_> {}

impl<'c> MessageBatch<'c> {
    /// A batch of up to `capacity` messages from `consumer`'s queue, which its message stream
    /// also reads: whatever one has taken, the other does not see. Until the batch is dropped,
    /// the client's errors reach it rather than the stream.
    pub fn new<C: ConsumerContext>(consumer: &'c StreamConsumer<C>, capacity: usize) -> Self {
        let rk = consumer.client().native_ptr();
        // SAFETY: the client handle is live for `'c`, and the queue references taken here are
        // released (by `Owned`) when the batch, which cannot outlive `'c`, is dropped.
        let (queue, main) = unsafe {
            (
                rd::rd_kafka_queue_get_consumer(rk),
                rd::rd_kafka_queue_get_main(rk),
            )
        };
        let queue = Owned::new(queue, rd::rd_kafka_queue_destroy)
            .expect("a consumer created by this crate always has a consumer queue");
        let main =
            Owned::new(main, rd::rd_kafka_queue_destroy).expect("every client has a main queue");
        // SAFETY: both queues are live; this undoes the forwarding rdkafka set up (and `Drop`
        // restores it).
        unsafe { rd::rd_kafka_queue_forward(main.ptr, std::ptr::null_mut()) };
        let capacity = capacity.max(1);
        MessageBatch {
            queue,
            main,
            raw: vec![std::ptr::null_mut(); capacity],
            taken: Vec::with_capacity(capacity),
            read: 0,
            _consumer: PhantomData,
        }
    }

    /// Releases the messages of the previous fill and takes those already waiting in the
    /// queue, without waiting for more; returns how many it took.
    pub fn fill(&mut self) -> usize {
        self.clear();
        // SAFETY: the queue is live and `raw` has room for `raw.len()` pointers; the batch owns
        // the messages written there, until `clear` destroys them.
        let n = unsafe {
            rd::rd_kafka_consume_batch_queue(
                self.queue.ptr,
                0,
                self.raw.as_mut_ptr(),
                self.raw.len(),
            )
        };
        let n = usize::try_from(n).unwrap_or(0).min(self.raw.len());
        self.taken
            .extend(self.raw[..n].iter().map(|&m| Taken::Message(m)));
        n
    }

    /// Takes the client's errors waiting on its main queue, after whatever is unread; returns
    /// how many it took. Nothing wakes a reader for these: it looks now and then.
    pub fn take_client_errors(&mut self) -> usize {
        let before = self.taken.len();
        loop {
            // SAFETY: the queue is live; a non-null event is ours to destroy.
            let event = unsafe { rd::rd_kafka_queue_poll(self.main.ptr, 0) };
            if event.is_null() {
                break;
            }
            // SAFETY: `event` is live until destroyed below.
            match unsafe { rd::rd_kafka_event_type(event) } {
                rd::RD_KAFKA_EVENT_ERROR => {
                    // SAFETY: `event` is a live error event.
                    let error = unsafe { error_of(event) };
                    self.taken.extend(error.map(Taken::Error));
                }
                other => {
                    // A consumer that is assigned partitions, commits nothing and has no
                    // statistics gets no other events; as rdkafka's stream does, drop them.
                    tracing::debug!(event_type = other, "ignored a client event");
                }
            }
            // SAFETY: destroyed once, here, after it was read.
            unsafe { rd::rd_kafka_event_destroy(event) };
        }
        self.taken.len() - before
    }

    /// Whether messages or errors taken are still to be read.
    pub fn has_unread(&self) -> bool {
        self.read < self.taken.len()
    }

    /// The next unread message or error of the last fill, as rdkafka's stream would give it: a
    /// record, or an error (the end of a partition, for one).
    pub fn next(&mut self) -> Option<KafkaResult<Fetched<'_>>> {
        let t = self.taken.get(self.read)?;
        self.read += 1;
        Some(match t {
            // SAFETY: the message lives until the next fill or drop, which need `&mut self`.
            Taken::Message(message) => unsafe { Fetched::from_ptr(*message) },
            Taken::Error(e) => Err(e.clone()),
        })
    }

    /// Whether the unread messages include a record (a message without an error). Taking a record
    /// moves the client's position past it; ends of partition and errors do not.
    pub fn holds_unread_records(&self) -> bool {
        self.taken[self.read..].iter().any(|t| match t {
            // SAFETY: the message lives until the next fill or drop.
            Taken::Message(message) => unsafe {
                (**message).err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
            },
            Taken::Error(_) => false,
        })
    }

    /// Releases the messages taken.
    pub fn clear(&mut self) {
        self.read = 0;
        for t in self.taken.drain(..) {
            if let Taken::Message(message) = t {
                // SAFETY: each message was returned by librdkafka and is destroyed once, here.
                unsafe { rd::rd_kafka_message_destroy(message) };
            }
        }
    }
}

impl Drop for MessageBatch<'_> {
    fn drop(&mut self) {
        self.clear();
        // SAFETY: both queues are live. The stream sees the client's errors again, including
        // any posted since the last look, which move to the consumer's queue.
        unsafe { rd::rd_kafka_queue_forward(self.main.ptr, self.queue.ptr) };
    }
}

/// The error an error event carries, converted as rdkafka's stream converts it; `None` when it
/// carries none.
///
/// # Safety
/// `event` is a live error event.
unsafe fn error_of(event: *mut rd::rd_kafka_event_t) -> Option<KafkaError> {
    // SAFETY: per the contract above.
    let code = unsafe { rd::rd_kafka_event_error(event) };
    if code == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        return None;
    }
    if code == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__PARTITION_EOF {
        // SAFETY: per the contract above; the returned partition is ours to destroy.
        let tp = unsafe { rd::rd_kafka_event_topic_partition(event) };
        let partition = if tp.is_null() {
            -1
        } else {
            // SAFETY: `tp` is live until destroyed, once, here.
            unsafe {
                let p = (*tp).partition;
                rd::rd_kafka_topic_partition_destroy(tp);
                p
            }
        };
        return Some(KafkaError::PartitionEOF(partition));
    }
    // SAFETY: per the contract above.
    if unsafe { rd::rd_kafka_event_error_is_fatal(event) } != 0 {
        Some(KafkaError::MessageConsumptionFatal(code.into()))
    } else {
        Some(KafkaError::MessageConsumption(code.into()))
    }
}

/// A consumed record's fields, borrowed from librdkafka's message.
pub(crate) struct Fetched<'a> {
    pub offset: i64,
    /// Milliseconds since the epoch, -1 when the broker gave none.
    pub timestamp: i64,
    pub timestamp_type: rd::rd_kafka_timestamp_type_t,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    headers: *mut rd::rd_kafka_headers_t,
}

// SAFETY: the headers pointer is only read, and lives as long as the borrowed message.
unsafe impl Send for Fetched<'_> {}
// SAFETY: as above.
unsafe impl Sync for Fetched<'_> {}

impl<'a> Fetched<'a> {
    /// The fields of a message from rdkafka's stream.
    pub fn of(message: &'a BorrowedMessage<'_>) -> Self {
        // SAFETY: the message is live while it is borrowed, and has no error (rdkafka's stream
        // turns those into `Err`).
        match unsafe { Self::from_ptr(message.ptr()) } {
            Ok(f) => f,
            Err(_) => unreachable!("rdkafka yields messages with an error as Err"),
        }
    }

    /// # Safety
    /// `m` is a live consumed message, not destroyed while the result is in use.
    unsafe fn from_ptr(m: *const rd::rd_kafka_message_t) -> KafkaResult<Self> {
        // SAFETY: per the contract above.
        let msg = unsafe { &*m };
        if msg.err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Err(match msg.err {
                rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__PARTITION_EOF => {
                    KafkaError::PartitionEOF(msg.partition)
                }
                e => KafkaError::MessageConsumption(e.into()),
            });
        }
        let mut timestamp_type = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: `m` is live; librdkafka writes the type.
        let timestamp = unsafe { rd::rd_kafka_message_timestamp(m, &mut timestamp_type) };
        let mut headers = std::ptr::null_mut();
        // SAFETY: `m` is live; on success `headers` points into the message, which owns it.
        if unsafe { rd::rd_kafka_message_headers(m, &mut headers) }
            != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        {
            headers = std::ptr::null_mut();
        }
        Ok(Fetched {
            offset: msg.offset,
            timestamp,
            timestamp_type,
            // SAFETY: librdkafka's key and payload are `len` readable bytes (or null), owned by
            // the message.
            key: unsafe { slice(msg.key.cast(), msg.key_len) },
            // SAFETY: as above.
            value: unsafe { slice(msg.payload.cast(), msg.len) },
            headers,
        })
    }

    /// Calls `f` with each header's name and value (`None` for a null value), in order. A name
    /// that is not UTF-8 is an error naming the header's position.
    pub fn for_each_header(
        &self,
        mut f: impl FnMut(&'a str, Option<&'a [u8]>),
    ) -> Result<(), String> {
        if self.headers.is_null() {
            return Ok(());
        }
        let mut index = 0;
        loop {
            let mut name = std::ptr::null();
            let mut value = std::ptr::null();
            let mut size = 0usize;
            // SAFETY: the headers are live with the message; librdkafka writes the three
            // out-parameters on success.
            let err = unsafe {
                rd::rd_kafka_header_get_all(self.headers, index, &mut name, &mut value, &mut size)
            };
            if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                return Ok(());
            }
            // SAFETY: a header name is NUL-terminated and owned by the headers.
            let name = unsafe { std::ffi::CStr::from_ptr(name) };
            let name = name.to_str().map_err(|_| {
                format!(
                    "header {index} has a name that is not UTF-8 ({:?})",
                    String::from_utf8_lossy(name.to_bytes())
                )
            })?;
            // SAFETY: the value is `size` readable bytes owned by the headers, or null.
            f(name, unsafe { slice(value.cast(), size) });
            index += 1;
        }
    }
}

/// # Safety
/// `ptr` is null or points to `len` bytes that live for `'a`.
unsafe fn slice<'a>(ptr: *const u8, len: usize) -> Option<&'a [u8]> {
    if ptr.is_null() {
        None
    } else {
        // SAFETY: per the contract above.
        Some(unsafe { std::slice::from_raw_parts(ptr, len) })
    }
}

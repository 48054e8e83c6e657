//! A small Kafka client on Ward's tokio: the requests a consumer without a consumer group
//! needs (metadata, list offsets, fetch), and those the tests and the throughput measurement
//! use to feed a topic (create topics, produce). The messages and record batches are
//! [`kafka_protocol`]'s (generated from Kafka's own schemas); the connection, version
//! negotiation and leader discovery are here.
//!
//! Each request goes to one broker over one TCP connection: `[size: i32][header][body]`,
//! answered in order. On connect, `ApiVersions` v0 tells which versions of each request the
//! broker speaks; the highest version both sides speak within [`SUPPORTED`] is used (Kafka
//! 4 removed the oldest versions, so none below those ranges is used), else the broker is
//! refused with a message naming the request.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    create_topics_request, fetch_request, list_offsets_request, metadata_request, produce_request,
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, CreateTopicsRequest,
    CreateTopicsResponse, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse,
    MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use kafka_protocol::records::{
    Compression, Record as WireRecord, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType,
};
use kafka_protocol::ResponseError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The versions Ward speaks, per request: (min, max).
pub const SUPPORTED: [(ApiKey, i16, i16); 5] = [
    (ApiKey::Metadata, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::Produce, 3, 9),
    (ApiKey::CreateTopics, 2, 7),
];

/// A request Ward sends: its API key and the answer it gets (the client half of
/// [`kafka_protocol`]'s messages).
pub trait Call: Encodable + HeaderVersion {
    /// The request's API key.
    const KEY: ApiKey;
    /// Its answer.
    type Answer: Decodable + HeaderVersion;
}

macro_rules! calls {
    ($($req:ty => $key:ident, $answer:ty;)*) => {
        $(impl Call for $req {
            const KEY: ApiKey = ApiKey::$key;
            type Answer = $answer;
        })*
    };
}

calls! {
    ApiVersionsRequest => ApiVersions, ApiVersionsResponse;
    MetadataRequest => Metadata, MetadataResponse;
    ListOffsetsRequest => ListOffsets, ListOffsetsResponse;
    FetchRequest => Fetch, FetchResponse;
    ProduceRequest => Produce, ProduceResponse;
    CreateTopicsRequest => CreateTopics, CreateTopicsResponse;
}

/// The largest answer accepted from a broker (a longer size prefix is an error).
const MAX_ANSWER: usize = 256 << 20;

/// How long one request may take before the connection is given up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A Kafka error: what failed, and the broker's error code when it gave one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaError {
    /// What failed, naming the broker, topic and partition where known.
    pub message: String,
    /// The broker's error code (0: not an error the broker answered).
    pub code: i16,
}

impl std::fmt::Display for KafkaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for KafkaError {}

impl KafkaError {
    fn new(message: impl Into<String>) -> Self {
        KafkaError {
            message: message.into(),
            code: 0,
        }
    }

    fn code(code: i16, what: String) -> Self {
        let name = ResponseError::try_from_code(code)
            .map_or_else(|| format!("error {code}"), |e| format!("{e:?} ({code})"));
        KafkaError {
            message: format!("{what}: the broker answered {name}"),
            code,
        }
    }

    /// The broker said the offset is outside the partition's range.
    pub fn is_offset_out_of_range(&self) -> bool {
        self.code == 1
    }
}

/// A message to produce: its value (`None`: a tombstone) and headers.
pub type Outgoing = (Option<Vec<u8>>, Vec<(String, Vec<u8>)>);

/// A result with a [`KafkaError`].
pub type KResult<T> = std::result::Result<T, KafkaError>;

/// One connection to one broker.
#[derive(Debug)]
pub struct Broker {
    addr: String,
    stream: TcpStream,
    client_id: String,
    correlation: i32,
    versions: HashMap<i16, (i16, i16)>,
}

impl Broker {
    /// Connects to `addr` (`host:port`) and asks which versions it speaks.
    ///
    /// # Errors
    /// Connection and protocol errors, naming the broker.
    pub async fn connect(addr: &str, client_id: &str) -> KResult<Broker> {
        let stream = tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| KafkaError::new(format!("broker {addr}: connect timed out")))?
            .map_err(|e| KafkaError::new(format!("broker {addr}: cannot connect: {e}")))?;
        let _ = stream.set_nodelay(true);
        let mut b = Broker {
            addr: addr.to_string(),
            stream,
            client_id: client_id.to_string(),
            correlation: 0,
            versions: HashMap::new(),
        };
        let answer = b.call(&ApiVersionsRequest::default(), 0).await?;
        if answer.error_code != 0 {
            return Err(KafkaError::code(
                answer.error_code,
                format!("broker {addr}: ApiVersions"),
            ));
        }
        b.versions = answer
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(b)
    }

    /// The address this connection goes to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The version of `key` to use: the highest both speak.
    ///
    /// # Errors
    /// When the broker speaks none of Ward's versions of it.
    pub fn version(&self, key: ApiKey) -> KResult<i16> {
        let (_, min, max) = SUPPORTED
            .iter()
            .find(|(k, _, _)| *k == key)
            .copied()
            .unwrap_or((key, 0, 0));
        let (bmin, bmax) = self.versions.get(&(key as i16)).copied().ok_or_else(|| {
            KafkaError::new(format!("broker {}: does not offer {key:?}", self.addr))
        })?;
        let v = max.min(bmax);
        if v < min.max(bmin) {
            return Err(KafkaError::new(format!(
                "broker {}: speaks {key:?} versions {bmin} to {bmax}, Ward {min} to {max}",
                self.addr
            )));
        }
        Ok(v)
    }

    /// Sends `req` as `version` and reads its answer.
    ///
    /// # Errors
    /// I/O, timeout and decoding errors, naming the broker and request.
    pub async fn call<R: Call>(&mut self, req: &R, version: i16) -> KResult<R::Answer> {
        let key = format!("{:?}", R::KEY);
        let fail = |what: String| {
            KafkaError::new(format!("broker {}: {key} v{version}: {what}", self.addr))
        };
        self.correlation = self.correlation.wrapping_add(1);
        let id = self.correlation;
        let mut buf = BytesMut::with_capacity(256);
        buf.put_i32(0);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY as i16)
            .with_request_api_version(version)
            .with_correlation_id(id)
            .with_client_id(Some(StrBytes::from_string(self.client_id.clone())));
        header
            .encode(&mut buf, R::header_version(version))
            .map_err(|e| fail(format!("encoding the header: {e}")))?;
        req.encode(&mut buf, version)
            .map_err(|e| fail(format!("encoding: {e}")))?;
        let size = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&size.to_be_bytes());
        let io = async {
            self.stream.write_all(&buf).await?;
            let n = self.stream.read_i32().await?;
            if n < 0 || n as usize > MAX_ANSWER {
                return Err(std::io::Error::other(format!("answer size {n}")));
            }
            let mut answer = vec![0u8; n as usize];
            self.stream.read_exact(&mut answer).await?;
            Ok(answer)
        };
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, io)
            .await
            .map_err(|_| fail(format!("no answer within {REQUEST_TIMEOUT:?}")))?
            .map_err(|e| fail(e.to_string()))?;
        let mut answer = Bytes::from(answer);
        let rh = ResponseHeader::decode(&mut answer, R::Answer::header_version(version))
            .map_err(|e| fail(format!("decoding the header: {e}")))?;
        if rh.correlation_id != id {
            return Err(fail(format!(
                "answer to request {} where {id} was expected",
                rh.correlation_id
            )));
        }
        R::Answer::decode(&mut answer, version).map_err(|e| fail(format!("decoding: {e}")))
    }
}

/// What the cluster said about brokers and topics.
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    /// Broker id to `host:port`.
    pub brokers: HashMap<i32, String>,
    /// Topic to (partition to its leader's broker id, -1 when it has none).
    pub topics: BTreeMap<String, BTreeMap<i32, i32>>,
}

/// Asks one of `bootstrap` for the cluster's brokers and `topics` (`None`: all).
///
/// # Errors
/// When no bootstrap broker answers (the last error).
pub async fn metadata(
    bootstrap: &[String],
    client_id: &str,
    topics: Option<&[String]>,
) -> KResult<Metadata> {
    let mut last = KafkaError::new("no bootstrap broker given");
    for addr in bootstrap {
        match metadata_from(addr, client_id, topics).await {
            Ok(m) => return Ok(m),
            Err(e) => last = e,
        }
    }
    Err(last)
}

async fn metadata_from(
    addr: &str,
    client_id: &str,
    topics: Option<&[String]>,
) -> KResult<Metadata> {
    let mut b = Broker::connect(addr, client_id).await?;
    let v = b.version(ApiKey::Metadata)?;
    let req = MetadataRequest::default()
        .with_topics(topics.map(|ts| {
            ts.iter()
                .map(|t| {
                    metadata_request::MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(t.clone()))))
                })
                .collect()
        }))
        .with_allow_auto_topic_creation(false);
    let answer = b.call(&req, v).await?;
    let mut out = Metadata::default();
    for br in &answer.brokers {
        out.brokers
            .insert(br.node_id.0, format!("{}:{}", br.host.as_str(), br.port));
    }
    for t in &answer.topics {
        let Some(name) = &t.name else { continue };
        if t.error_code != 0 {
            continue;
        }
        let parts = t
            .partitions
            .iter()
            .map(|p| (p.partition_index, p.leader_id.0))
            .collect();
        out.topics.insert(name.0.as_str().to_string(), parts);
    }
    Ok(out)
}

/// A consumed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its offset.
    pub offset: i64,
    /// Its value (`None`: a tombstone).
    pub value: Option<Bytes>,
    /// Its headers (a header without a value reads as empty).
    pub headers: Vec<(String, Bytes)>,
}

impl Message {
    /// The value of header `name`, when there is one.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_ref())
    }
}

/// Where [`PartitionClient::offset`] looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetAt {
    /// The earliest offset still kept.
    Earliest,
    /// The offset the next message produced will get.
    Latest,
}

/// One topic partition, read from (or written to) its leader; the leader is looked up again
/// after a connection error or a "not the leader" answer.
#[derive(Debug)]
pub struct PartitionClient {
    bootstrap: Vec<String>,
    client_id: String,
    topic: String,
    partition: i32,
    leader: Option<Broker>,
}

impl PartitionClient {
    /// A client for `topic`'s `partition` in the cluster `bootstrap` names (connects lazily).
    pub fn new(bootstrap: &[String], client_id: &str, topic: &str, partition: i32) -> Self {
        PartitionClient {
            bootstrap: bootstrap.to_vec(),
            client_id: client_id.to_string(),
            topic: topic.to_string(),
            partition,
            leader: None,
        }
    }

    fn place(&self) -> String {
        format!("{}/{}", self.topic, self.partition)
    }

    async fn leader(&mut self) -> KResult<&mut Broker> {
        if self.leader.is_none() {
            let md = metadata(
                &self.bootstrap,
                &self.client_id,
                Some(std::slice::from_ref(&self.topic)),
            )
            .await?;
            let leader = md
                .topics
                .get(&self.topic)
                .and_then(|ps| ps.get(&self.partition))
                .copied()
                .ok_or_else(|| KafkaError::code(3, format!("{}: metadata", self.place())))?;
            let addr = md.brokers.get(&leader).ok_or_else(|| {
                KafkaError::new(format!("{}: no leader (broker {leader})", self.place()))
            })?;
            self.leader = Some(Broker::connect(addr, &self.client_id).await?);
        }
        self.leader
            .as_mut()
            .ok_or_else(|| KafkaError::new("no leader connection"))
    }

    /// Runs `f` on the leader; forgets the connection when it fails, so the next call looks
    /// the leader up again.
    fn forget_on<T>(&mut self, r: KResult<T>) -> KResult<T> {
        if let Err(e) = &r {
            // Broker errors other than "not the leader"-like ones keep the connection.
            if matches!(e.code, 0 | 3 | 5 | 6 | 74 | 75) {
                self.leader = None;
            }
        }
        r
    }

    /// The earliest or latest offset of the partition.
    ///
    /// # Errors
    /// Connection and broker errors.
    pub async fn offset(&mut self, at: OffsetAt) -> KResult<i64> {
        let place = self.place();
        let topic = self.topic.clone();
        let partition = self.partition;
        let r = async {
            let b = self.leader().await?;
            let v = b.version(ApiKey::ListOffsets)?;
            // Read-committed where the version has it (v2 on).
            let req = ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_isolation_level(if v >= 2 { 1 } else { 0 })
                .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic)))
                    .with_partitions(vec![
                        list_offsets_request::ListOffsetsPartition::default()
                            .with_partition_index(partition)
                            .with_current_leader_epoch(-1)
                            .with_timestamp(match at {
                                OffsetAt::Earliest => -2,
                                OffsetAt::Latest => -1,
                            }),
                    ])]);
            let answer = b.call(&req, v).await?;
            let p = answer
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter())
                .find(|p| p.partition_index == partition)
                .ok_or_else(|| {
                    KafkaError::new(format!("{place}: ListOffsets answered no partition"))
                })?;
            if p.error_code != 0 {
                return Err(KafkaError::code(
                    p.error_code,
                    format!("{place}: ListOffsets"),
                ));
            }
            Ok(p.offset)
        }
        .await;
        self.forget_on(r)
    }

    /// Fetches from `offset`, waiting up to `max_wait_ms` for something to arrive, at most
    /// `max_bytes` (a larger first batch still comes whole, as Kafka sends it). Messages of
    /// control batches (transaction markers) and before `offset` (the start of a compressed
    /// batch) are left out. Returns the messages and the partition's high watermark.
    ///
    /// # Errors
    /// Connection and broker errors ([`KafkaError::is_offset_out_of_range`]).
    pub async fn fetch(
        &mut self,
        offset: i64,
        max_bytes: i32,
        max_wait_ms: i32,
    ) -> KResult<(Vec<Message>, i64)> {
        let place = self.place();
        let topic = self.topic.clone();
        let partition = self.partition;
        let r = async {
            let b = self.leader().await?;
            let v = b.version(ApiKey::Fetch)?;
            let req = FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_wait_ms(max_wait_ms)
                .with_min_bytes(1)
                .with_max_bytes(max_bytes)
                .with_isolation_level(1)
                .with_session_id(0)
                .with_session_epoch(-1)
                .with_topics(vec![fetch_request::FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(topic)))
                    .with_partitions(vec![fetch_request::FetchPartition::default()
                        .with_partition(partition)
                        .with_current_leader_epoch(-1)
                        .with_fetch_offset(offset)
                        .with_last_fetched_epoch(-1)
                        .with_log_start_offset(-1)
                        .with_partition_max_bytes(max_bytes)])]);
            let answer = b.call(&req, v).await?;
            if answer.error_code != 0 {
                return Err(KafkaError::code(
                    answer.error_code,
                    format!("{place}: Fetch"),
                ));
            }
            let p = answer
                .responses
                .iter()
                .flat_map(|t| t.partitions.iter())
                .find(|p| p.partition_index == partition)
                .ok_or_else(|| KafkaError::new(format!("{place}: Fetch answered no partition")))?;
            if p.error_code != 0 {
                return Err(KafkaError::code(
                    p.error_code,
                    format!("{place}: Fetch at offset {offset}"),
                ));
            }
            let mut out = Vec::new();
            if let Some(records) = &p.records {
                decode_batches(records.clone(), offset, &mut out)
                    .map_err(|e| KafkaError::new(format!("{place}: offset {offset}: {e}")))?;
            }
            Ok((out, p.high_watermark))
        }
        .await;
        self.forget_on(r)
    }

    /// Appends `messages` (value, headers) as one uncompressed batch; returns the first
    /// one's offset.
    ///
    /// # Errors
    /// Connection and broker errors.
    pub async fn produce(&mut self, messages: &[Outgoing]) -> KResult<i64> {
        self.produce_compressed(messages, Compression::None).await
    }

    /// Appends `messages` (value, headers) as one batch compressed with `compression` (what
    /// producers send with `compression.type`: gzip, snappy, lz4 or zstd); returns the first
    /// one's offset.
    ///
    /// # Errors
    /// Connection and broker errors.
    pub async fn produce_compressed(
        &mut self,
        messages: &[Outgoing],
        compression: Compression,
    ) -> KResult<i64> {
        let place = self.place();
        let topic = self.topic.clone();
        let partition = self.partition;
        let now = chrono::Utc::now().timestamp_millis();
        let records: Vec<WireRecord> = messages
            .iter()
            .enumerate()
            .map(|(i, (value, headers))| WireRecord {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: -1,
                timestamp: now,
                key: None,
                value: value.clone().map(Bytes::from),
                headers: headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            StrBytes::from_string(k.clone()),
                            Some(Bytes::from(v.clone())),
                        )
                    })
                    .collect(),
            })
            .collect();
        let mut batch = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut batch,
            records.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .map_err(|e| KafkaError::new(format!("{place}: encoding a batch: {e}")))?;
        let batch = batch.freeze();
        let r = async {
            let b = self.leader().await?;
            let v = b.version(ApiKey::Produce)?;
            let req = ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(30_000)
                .with_topic_data(vec![produce_request::TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(topic)))
                    .with_partition_data(vec![
                        produce_request::PartitionProduceData::default()
                            .with_index(partition)
                            .with_records(Some(batch)),
                    ])]);
            let answer = b.call(&req, v).await?;
            let p = answer
                .responses
                .iter()
                .flat_map(|t| t.partition_responses.iter())
                .find(|p| p.index == partition)
                .ok_or_else(|| {
                    KafkaError::new(format!("{place}: Produce answered no partition"))
                })?;
            if p.error_code != 0 {
                return Err(KafkaError::code(p.error_code, format!("{place}: Produce")));
            }
            Ok(p.base_offset)
        }
        .await;
        self.forget_on(r)
    }
}

/// Decodes the record batches of a fetch answer into `out`: whole batches only (a fetch may
/// end inside one), control batches and messages before `from` left out.
fn decode_batches(mut records: Bytes, from: i64, out: &mut Vec<Message>) -> Result<(), String> {
    // A batch: base offset (8 bytes), length (4 bytes), then `length` bytes.
    while records.len() >= 12 {
        let len = i32::from_be_bytes([records[8], records[9], records[10], records[11]]);
        if len < 0 {
            return Err(format!("a record batch of length {len}"));
        }
        let whole = 12 + len as usize;
        if records.len() < whole {
            break;
        }
        let mut one = records.split_to(whole);
        // The magic byte: only v2 batches (Kafka 0.11 on) are read.
        if one.len() > 16 && one[16] != 2 {
            return Err(format!(
                "record batch format v{} is not read (v2 only)",
                one[16]
            ));
        }
        let set = RecordBatchDecoder::decode(&mut one).map_err(|e| e.to_string())?;
        for r in set.records {
            if r.control || r.offset < from {
                continue;
            }
            out.push(Message {
                offset: r.offset,
                value: r.value,
                headers: r
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k.as_str().to_string(), v.unwrap_or_default()))
                    .collect(),
            });
        }
    }
    let _ = records.remaining();
    Ok(())
}

/// Creates `topic` with `partitions` partitions (replication factor 1) on the cluster; an
/// existing topic is not an error.
///
/// # Errors
/// Connection and broker errors.
pub async fn create_topic(
    bootstrap: &[String],
    client_id: &str,
    topic: &str,
    partitions: i32,
) -> KResult<()> {
    let mut last = KafkaError::new("no bootstrap broker given");
    for addr in bootstrap {
        let r = async {
            let mut b = Broker::connect(addr, client_id).await?;
            let v = b.version(ApiKey::CreateTopics)?;
            let req = CreateTopicsRequest::default()
                .with_timeout_ms(30_000)
                .with_topics(vec![create_topics_request::CreatableTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_num_partitions(partitions)
                    .with_replication_factor(1)]);
            let answer = b.call(&req, v).await?;
            for t in &answer.topics {
                if t.error_code != 0 && t.error_code != 36 {
                    return Err(KafkaError::code(
                        t.error_code,
                        format!("creating topic {topic}"),
                    ));
                }
            }
            Ok(())
        }
        .await;
        match r {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_decode_whole_ones_only_and_skip_earlier_offsets() {
        let recs: Vec<WireRecord> = (0..3)
            .map(|i| WireRecord {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: 10 + i,
                sequence: -1,
                timestamp: 0,
                key: None,
                value: Some(Bytes::from(format!("m{i}"))),
                headers: [(
                    StrBytes::from_static_str("h"),
                    Some(Bytes::from_static(b"v")),
                )]
                .into_iter()
                .collect(),
            })
            .collect();
        let mut buf = BytesMut::new();
        let opts = RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        };
        RecordBatchEncoder::encode(&mut buf, recs.iter(), &opts).expect("encode");
        let one = buf.len();
        RecordBatchEncoder::encode(&mut buf, recs[..1].iter(), &opts).expect("encode");
        let mut all = buf.freeze();
        let mut out = Vec::new();
        // The second batch cut short: only the first is read.
        decode_batches(all.slice(..all.len() - 3), 11, &mut out).expect("decode");
        let offsets: Vec<i64> = out.iter().map(|m| m.offset).collect();
        assert_eq!(offsets, vec![11, 12]);
        assert_eq!(out[0].header("h"), Some(&b"v"[..]));
        assert_eq!(out[0].value.as_deref(), Some(&b"m1"[..]));
        out.clear();
        decode_batches(all.split_off(0), 0, &mut out).expect("decode");
        assert_eq!(out.len(), 4);
        assert!(one > 12);
    }

    #[test]
    fn batches_in_every_compression_producers_use_are_read() {
        let recs: Vec<WireRecord> = (0..50)
            .map(|i| WireRecord {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i,
                sequence: -1,
                timestamp: 0,
                key: None,
                value: Some(Bytes::from(format!(
                    "MSH|^~\\&|LAB|{i}|OBX|{}",
                    "x".repeat(40)
                ))),
                headers: Default::default(),
            })
            .collect();
        // zstd is not built in (see docs/live.md, "Not yet").
        for compression in [Compression::Gzip, Compression::Snappy, Compression::Lz4] {
            let mut buf = BytesMut::new();
            let opts = RecordEncodeOptions {
                version: 2,
                compression,
            };
            RecordBatchEncoder::encode(&mut buf, recs.iter(), &opts).expect("encode");
            let mut out = Vec::new();
            decode_batches(buf.freeze(), 5, &mut out)
                .unwrap_or_else(|e| panic!("{compression:?}: {e}"));
            assert_eq!(out.len(), 45, "{compression:?}");
            assert_eq!(out[0].offset, 5);
            assert_eq!(
                out[44].value.as_deref(),
                Some(format!("MSH|^~\\&|LAB|49|OBX|{}", "x".repeat(40)).as_bytes())
            );
        }
    }

    #[test]
    fn versions_are_negotiated_within_wards_ranges() {
        assert!(SUPPORTED.iter().all(|(_, min, max)| min <= max));
        assert!(KafkaError::code(1, "x".into()).is_offset_out_of_range());
        assert!(KafkaError::code(1, "x".into())
            .message
            .contains("OffsetOutOfRange"));
    }
}

//! Arrow Flight: bulk transfer of dataset versions (`pyarrow.flight` works against it).
//!
//! - `DoGet`: the ticket is a dataset reference as UTF-8 (`b3:HASH`, a prefix, `NAME`,
//!   `NAME@TIME`); the version streams in its stored row order.
//! - `DoPut`: uploads entity rows (`patient_id` utf8, `timestamp` timestamp, other columns
//!   passed through) and stores them as a version of kind `other`, named by the descriptor's
//!   path (one element) or `entities`; the one `PutResult` carries the hash (UTF-8) in
//!   `app_metadata`.
//! - `ListFlights` (criteria: empty, or `kind=K` / `name=N` separated by spaces or commas)
//!   and `GetFlightInfo` (a PATH descriptor of one reference, or a CMD holding one): one
//!   `FlightInfo` per version with its schema, its ticket (the full hash), total records and
//!   stored bytes; `app_metadata` is JSON `{"name","kind","created_at"}`. `GetSchema` too.
//! - Handshake, DoExchange, DoAction, ListActions and PollFlightInfo answer UNIMPLEMENTED.

use std::pin::Pin;

use arrow::array::{Array, AsArray as _, RecordBatch};
use arrow::datatypes::{DataType, Schema};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaAsIpc, SchemaResult, Ticket,
};
use futures::{Stream, StreamExt as _, TryStreamExt as _};
use tonic::{Request, Response, Status, Streaming};

use super::convert;
use super::{parse_ref, version_stream, State};
use crate::error::{Error, Result};
use crate::security::gate::{self, Admission};
use crate::store::{Kind, Manifest, PutOptions};

type BoxStream<T> = Pin<Box<dyn Stream<Item = std::result::Result<T, Status>> + Send + 'static>>;

/// The entity column holding patient ids.
const PATIENT_COLUMN: &str = "patient_id";
/// The entity column holding lookup times.
const TIME_COLUMN: &str = "timestamp";

/// The default name of versions uploaded with DoPut.
pub const DEFAULT_PUT_NAME: &str = "entities";

/// The Flight service over the server's store.
#[derive(Debug, Clone)]
pub(crate) struct Flight {
    pub(crate) state: State,
}

fn unimplemented(call: &str) -> Status {
    Status::unimplemented(format!(
        "Flight {call} is not offered by Ward: use DoGet, DoPut, ListFlights, GetFlightInfo or GetSchema (docs/service.md)"
    ))
}

impl Flight {
    async fn info(&self, m: &Manifest) -> Result<FlightInfo> {
        let ds = self.state.store.dataset(&m.hash).await?;
        convert::flight_info(m, &Schema::from(ds.schema()))
    }

    fn resolve(&self, field: &str, reference: &str) -> Result<Manifest> {
        self.state.store.resolve(&parse_ref(field, reference)?)
    }

    async fn put(&self, stream: Streaming<FlightData>) -> std::result::Result<String, Status> {
        let mut stream = stream;
        let first = stream.message().await?.ok_or_else(|| {
            Status::from(Error::invalid(
                "DoPut",
                "empty stream: send the schema and the entity rows",
            ))
        })?;
        let name = match &first.flight_descriptor {
            Some(d) if !d.path.is_empty() => match d.path.as_slice() {
                [one] => one.clone(),
                more => {
                    return Err(Error::invalid(
                        "descriptor.path",
                        format!("{} elements: give one, the version's name", more.len()),
                    )
                    .into())
                }
            },
            _ => DEFAULT_PUT_NAME.to_string(),
        };
        crate::store::manifest::validate_name(&name)?;
        let limit = self.state.limits.max_upload_bytes;
        let mut total: u64 = 0;
        let raw = futures::stream::once(async move { Ok(first) })
            .chain(stream)
            .map(move |m: std::result::Result<FlightData, Status>| {
                let m = m?;
                total += (m.data_body.len() + m.data_header.len()) as u64;
                if total > limit {
                    return Err(Status::from(Error::invalid(
                        "DoPut",
                        format!(
                            "the upload is larger than the server's limit of {limit} bytes (limits.max_upload_bytes)"
                        ),
                    )));
                }
                Ok(m)
            })
            .map_err(FlightError::from);
        let mut decoded = FlightRecordBatchStream::new_from_flight_data(raw);
        let mut batches: Vec<RecordBatch> = Vec::new();
        let mut rows = 0usize;
        while let Some(b) = decoded.next().await {
            let batch = b.map_err(|e| match e {
                FlightError::Tonic(s) => *s,
                other => Status::from(Error::BadInput {
                    location: format!("DoPut {name}"),
                    field: "-".into(),
                    reason: format!("not a valid Arrow Flight stream: {other}"),
                }),
            })?;
            check_entities(&name, &batch, rows)?;
            rows += batch.num_rows();
            batches.push(batch);
        }
        let schema = decoded
            .schema()
            .cloned()
            .or_else(|| batches.first().map(|b| b.schema()))
            .ok_or_else(|| {
                Status::from(Error::invalid(
                    format!("DoPut {name}"),
                    "no schema was sent",
                ))
            })?;
        if batches.is_empty() {
            check_entities(&name, &RecordBatch::new_empty(schema.clone()), 0)?;
        }
        let out = self
            .state
            .store
            .put_batches(schema, batches, PutOptions::new(name, Kind::Other))
            .await?;
        Ok(out.manifest.hash.to_string())
    }
}

/// Entity rows, as historical lookups read them: a `patient_id` column (text or integers)
/// and a `timestamp` column (a timestamp, a date, or RFC 3339 / `YYYY-MM-DD` text), neither
/// null. `first_row` is the number of rows before this batch, so errors name the row
/// (1-based).
fn check_entities(name: &str, batch: &RecordBatch, first_row: usize) -> Result<()> {
    let schema = batch.schema();
    let at = |row: usize| format!("DoPut {name} row {}", first_row + row + 1);
    let col = |wanted: &str, ok: fn(&DataType) -> bool, what: &str| -> Result<usize> {
        let (i, f) = schema
            .column_with_name(wanted)
            .ok_or_else(|| Error::BadInput {
                location: format!("DoPut {name}"),
                field: wanted.into(),
                reason: format!(
                "missing: entity rows need {PATIENT_COLUMN} and {TIME_COLUMN}; the columns are {}",
                schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            })?;
        if !ok(f.data_type()) {
            return Err(Error::BadInput {
                location: format!("DoPut {name}"),
                field: wanted.into(),
                reason: format!("is {}, not {what}", f.data_type()),
            });
        }
        Ok(i)
    };
    let p = col(
        PATIENT_COLUMN,
        |t| {
            t.is_integer() || matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
        },
        "text or integers",
    )?;
    let t = col(
        TIME_COLUMN,
        |t| {
            matches!(
                t,
                DataType::Timestamp(_, _)
                    | DataType::Date32
                    | DataType::Date64
                    | DataType::Utf8
                    | DataType::LargeUtf8
                    | DataType::Utf8View
            )
        },
        "a timestamp, a date or text",
    )?;
    for (i, field) in [(p, PATIENT_COLUMN), (t, TIME_COLUMN)] {
        let a = batch.column(i);
        if a.null_count() > 0 {
            let row = (0..a.len()).find(|&r| a.is_null(r)).unwrap_or(0);
            return Err(Error::BadInput {
                location: at(row),
                field: field.into(),
                reason: "null: every entity row needs a patient and a time".into(),
            });
        }
    }
    let times = batch.column(t);
    if matches!(
        times.data_type(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    ) {
        let text = arrow::compute::cast(times, &DataType::Utf8)?;
        let text = text.as_string::<i32>();
        for row in 0..text.len() {
            let v = text.value(row);
            if crate::store::manifest::parse_time(v.trim()).is_none() {
                return Err(Error::BadInput {
                    location: at(row),
                    field: TIME_COLUMN.into(),
                    reason: format!("{v:?} is not a time (use RFC 3339 or YYYY-MM-DD)"),
                });
            }
        }
    }
    Ok(())
}

#[tonic::async_trait]
impl FlightService for Flight {
    type HandshakeStream = BoxStream<HandshakeResponse>;
    type ListFlightsStream = BoxStream<FlightInfo>;
    type DoGetStream = BoxStream<FlightData>;
    type DoPutStream = BoxStream<PutResult>;
    type DoExchangeStream = BoxStream<FlightData>;
    type DoActionStream = BoxStream<arrow_flight::Result>;
    type ListActionsStream = BoxStream<ActionType>;

    async fn handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> std::result::Result<Response<Self::HandshakeStream>, Status> {
        Err(unimplemented("Handshake"))
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> std::result::Result<Response<Self::ListFlightsStream>, Status> {
        let filter = convert::flight_filter(&request.get_ref().expression)?;
        let all = self.state.store.list(&filter)?;
        let mut infos = Vec::with_capacity(all.len());
        for m in &all {
            infos.push(Ok(self.info(m).await?));
        }
        Ok(Response::new(Box::pin(futures::stream::iter(infos))))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let reference = convert::descriptor_ref(request.get_ref())?;
        let m = self.resolve("descriptor", &reference)?;
        Ok(Response::new(self.info(&m).await?))
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<PollInfo>, Status> {
        Err(unimplemented("PollFlightInfo"))
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<SchemaResult>, Status> {
        let reference = convert::descriptor_ref(request.get_ref())?;
        let m = self.resolve("descriptor", &reference)?;
        let ds = self.state.store.dataset(&m.hash).await?;
        let schema = Schema::from(ds.schema());
        let options = IpcWriteOptions::default();
        let result: SchemaResult = SchemaAsIpc::new(&schema, &options)
            .try_into()
            .map_err(|e: arrow::error::ArrowError| Status::from(Error::Arrow(e)))?;
        Ok(Response::new(result))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> std::result::Result<Response<Self::DoGetStream>, Status> {
        let reference = std::str::from_utf8(&request.get_ref().ticket).map_err(|_| {
            Error::invalid(
                "ticket",
                "not UTF-8: a ticket is a dataset reference (b3:HASH, NAME, NAME@TIME)",
            )
        })?;
        let m = self.resolve("ticket", reference)?;
        // Rows of a version: a de-identified one needs historical_deidentified, any other
        // historical_identified. The audit record names the version (its hash identifies
        // the rows read).
        let note = gate::note(request.extensions());
        let action = if m.labels.contains_key("deidentified") {
            crate::security::policy::Action::HistoricalDeidentified
        } else {
            crate::security::policy::Action::HistoricalIdentified
        };
        note.set_action(action);
        note.add_datasets([m.hash.to_string()]);
        if let Some(secured) = &self.state.secured {
            let admission = request.extensions().get::<Admission>();
            let (principal, admission) = gate::principal(admission)?;
            let ctx = gate::context(admission).with_datasets([m.hash.to_string()]);
            secured
                .security
                .authorize(&principal, &ctx, action, &[], &note)?;
        }
        let (schema, batches) = version_stream(&self.state.store, &m.hash).await?;
        let max = self.state.limits.max_encoding_message_bytes / 2;
        let encoded = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .with_max_flight_data_size(max)
            .build(batches.map_err(|e| FlightError::Tonic(Box::new(Status::from(e)))))
            .map_err(super::status::flight_status);
        Ok(Response::new(Box::pin(encoded)))
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> std::result::Result<Response<Self::DoPutStream>, Status> {
        let hash = self.put(request.into_inner()).await?;
        let result = PutResult {
            app_metadata: hash.into_bytes().into(),
        };
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(result)]))))
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> std::result::Result<Response<Self::DoExchangeStream>, Status> {
        Err(unimplemented("DoExchange"))
    }

    async fn do_action(
        &self,
        _request: Request<Action>,
    ) -> std::result::Result<Response<Self::DoActionStream>, Status> {
        Err(unimplemented("DoAction"))
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> std::result::Result<Response<Self::ListActionsStream>, Status> {
        Err(unimplemented("ListActions"))
    }
}

//! `/events`: ingestion (EventBridge API destinations, ARC SaaS) and the inbox API.

use std::borrow::Cow;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiPath, ApiQuery, RawBody};
use super::AppState;
use crate::events::envelope::{self, EnvelopeError};
use crate::events::view::EventView;
use crate::events::EventType;
use crate::store::{EventId, EventStatus, NewEvent};
use crate::telemetry::trace::{self, Span};

/// The acknowledgement: the event is durably recorded.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    #[schema(example = true)]
    pub success: bool,
    pub event_id: String,
    /// Present (true) when this id had been delivered before; it is not processed again.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

/// An event type a client may post, matched exactly (case-sensitive, as in
/// ARC SaaS). The list is [`EventType::ALL`] less the internal ones.
pub struct PostableEventType;

impl utoipa::PartialSchema for PostableEventType {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let names = EventType::ALL
            .into_iter()
            .map(EventType::as_str)
            .filter(|name| EventType::accepted_from_clients(name).is_some());
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(names))
            .description(Some(
                "An event type a client may post, matched exactly (case-sensitive).",
            ))
            .into()
    }
}

/// `POST /events`: an EventBridge event as an API destination delivers it.
pub struct EventEnvelope;

impl utoipa::PartialSchema for EventEnvelope {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::Type;
        use utoipa::openapi::ObjectBuilder;
        // `null` reads as absent.
        let string_or_null =
            || utoipa::openapi::schema::SchemaType::from_iter([Type::String, Type::Null]);
        let id = ObjectBuilder::new()
            .schema_type(string_or_null())
            .min_length(Some(1))
            .max_length(Some(envelope::MAX_ID_LEN))
            .pattern(Some(r"^[^/\u0000-\u001f\u007f-\u009f]+$"))
            .description(Some(
                "The deduplication key: a redelivery with this id is acknowledged and not \
                 processed again. Generated when absent.",
            ));
        let detail = ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some("The event's payload (as ARC SaaS sends it)."));
        ObjectBuilder::new()
            .description(Some(
                "An EventBridge event; fields not named here are kept as received.",
            ))
            .property("id", id)
            .property("detail-type", PostableEventType::schema())
            .property(
                "source",
                ObjectBuilder::new()
                    .schema_type(string_or_null())
                    .max_length(Some(envelope::MAX_SOURCE_LEN))
                    .pattern(Some(r"^[^\u0000-\u001f\u007f-\u009f]*$"))
                    .description(Some(
                        "Who sent the event. `orchestrator` and `orchestrator.*` are reserved \
                         for the events the service raises itself (400).",
                    )),
            )
            .property("detail", detail)
            .required("detail-type")
            .required("detail")
            .into()
    }
}

impl ToSchema for EventEnvelope {}

fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or_default();
    let essence = text
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json" || essence.ends_with("+json") {
        return Ok(());
    }
    Err(ApiError::new(
        axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!("Content-type {text} does not match [application/json]."),
    ))
}

fn unsupported(name: &str) -> ApiError {
    ApiError::bad_request(
        "unsupported_event_type",
        format!("Unsupported event type: {name}"),
    )
}

impl From<EnvelopeError> for ApiError {
    fn from(err: EnvelopeError) -> Self {
        let code = match err {
            EnvelopeError::NotUtf8 => "invalid_encoding",
            EnvelopeError::Malformed(_) => "malformed_json",
            EnvelopeError::NotAnObject | EnvelopeError::Invalid(_) => "invalid_body",
        };
        ApiError::bad_request(code, err.to_string())
    }
}

/// Validates and records one event; shared by both ingestion routes.
async fn ingest(
    state: &AppState,
    path_type: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Json<Accepted>, ApiError> {
    let path_type = path_type
        .map(|name| EventType::accepted_from_clients(name).ok_or_else(|| unsupported(name)))
        .transpose()?;
    check_content_type(headers)?;
    let incoming = envelope::read(body)?;
    crate::events::handlers::check_override_names(incoming.text)
        .map_err(|message| ApiError::bad_request("invalid_environment", message))?;
    let event_type = match path_type {
        Some(t) => t,
        None => {
            let name = incoming
                .detail_type
                .as_deref()
                .ok_or_else(|| ApiError::bad_request("invalid_body", "missing 'detail-type': POST to /events/{eventType} or send an EventBridge envelope"))?;
            let event_type = match state.sbt.incoming_type(name) {
                Some(sbt) => {
                    let source = incoming.source.as_deref().unwrap_or_default();
                    if !state.sbt.accepts_source(source) {
                        return Err(ApiError::bad_request(
                            "invalid_source",
                            format!(
                                "an sbt-aws '{name}' event must come from a control plane source ({}), not '{source}'",
                                state.sbt.sources()
                            ),
                        ));
                    }
                    sbt
                }
                None => EventType::accepted_from_clients(name).ok_or_else(|| unsupported(name))?,
            };
            if !incoming.envelope {
                return Err(ApiError::bad_request(
                    "invalid_body",
                    "an EventBridge envelope needs a 'detail' object (or POST the bare detail to /events/{eventType})",
                ));
            }
            event_type
        }
    };
    let span = Span::child_of_current(
        trace::name(|| format!("ingest {event_type}")),
        trace::Kind::Internal,
    );
    let event = NewEvent {
        traceparent: Some(span.context().traceparent()),
        id: incoming
            .id
            .map_or_else(|| uuid::Uuid::new_v4().to_string(), Cow::into_owned)
            .into(),
        event_type: event_type.as_str().to_owned(),
        source: incoming.source.map(Cow::into_owned),
        payload: incoming.text.to_owned(),
        received_at_ms: crate::support::now_ms(),
    };
    let submitted = state.inbox.submit(event).await;
    span.end_with(&submitted);
    let submitted = submitted?;
    if !submitted.duplicate {
        state.metrics.event_received(event_type.as_str());
    }
    Ok(Json(Accepted {
        success: true,
        event_id: submitted.event_id.into_string(),
        duplicate: submitted.duplicate,
    }))
}

/// Receive a tenant event of the type named in the path.
///
/// The body is an EventBridge envelope (its `detail` goes to the handler) or a
/// bare detail object. Answers once the event is durably recorded; handlers run
/// afterwards. The same envelope `id` delivered again is acknowledged, not
/// processed twice.
#[utoipa::path(
    post, path = "/events/{event}", tag = "events",
    params(("event" = inline(PostableEventType), Path, description = "Event type, e.g. `TENANT_PROVISIONING`")),
    request_body(content = Object, content_type = "application/json", description = "EventBridge envelope or bare detail"),
    responses(
        (status = 200, description = "Recorded", body = Accepted),
        (status = 400, description = "Unknown event type, malformed JSON or not an object, JSON the handlers could not read (nested deeper than 127 levels, a number out of range, a lone surrogate), or an envelope with a reserved source; nothing is stored", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 503, description = "Store unavailable; retry (see Retry-After)", body = ErrorBody),
    ),
    security((), ("api_key" = []), ("bearer" = []))
)]
pub async fn post_event(
    State(state): State<AppState>,
    ApiPath(event): ApiPath<String>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Json<Accepted>, ApiError> {
    ingest(&state, Some(&event), &headers, &body).await
}

/// Receive an EventBridge envelope; its `detail-type` names the event type.
///
/// Also accepts `CodeBuild Build State Change` events, which complete the matching build job.
#[utoipa::path(
    post, path = "/events", tag = "events",
    request_body(content = inline(EventEnvelope), content_type = "application/json", description = "EventBridge envelope"),
    responses(
        (status = 200, description = "Recorded", body = Accepted),
        (status = 400, description = "Missing or unknown detail-type, malformed JSON, JSON the handlers could not read (nested deeper than 127 levels, a number out of range, a lone surrogate), or a reserved source; nothing is stored", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 503, description = "Store unavailable; retry (see Retry-After)", body = ErrorBody),
    ),
    security((), ("api_key" = []), ("bearer" = []))
)]
pub async fn post_envelope(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Json<Accepted>, ApiError> {
    ingest(&state, None, &headers, &body).await
}

/// Filters for listing events.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListEvents {
    /// `received`, `processing`, `succeeded`, `failed` or `dead`.
    #[param(value_type = Option<EventStatus>)]
    pub status: Option<String>,
    /// At most this many (default 100, at most 1000), newest first.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// List inbox events, newest first.
#[utoipa::path(
    get, path = "/events", tag = "events", params(ListEvents),
    responses(
        (status = 200, body = Vec<EventView>),
        (status = 400, description = "Bad filter", body = ErrorBody),
        (status = 401, body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn list_events(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListEvents>,
) -> Result<Json<Vec<EventView>>, ApiError> {
    let status = query
        .status
        .map(|s| {
            s.parse::<EventStatus>()
                .map_err(|e| ApiError::bad_request("invalid_query", e))
        })
        .transpose()?;
    let limit = super::limit(query.limit)?;
    let events = state.store.list_events(status, limit).await?;
    Ok(Json(events.into_iter().map(EventView::from).collect()))
}

/// One inbox event.
#[utoipa::path(
    get, path = "/events/{event}", tag = "events",
    params(("event" = String, Path, description = "Event id")),
    responses((status = 200, body = EventView), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)),
    security((), ("bearer" = []))
)]
pub async fn get_event(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<EventId>,
) -> Result<Json<EventView>, ApiError> {
    match state.store.get_event(&id).await? {
        Some(event) => Ok(Json(EventView::with_detail(event))),
        None => Err(ApiError::not_found(format!("no event '{id}'"))),
    }
}

/// Re-queue a failed, dead (or succeeded) event for processing now.
#[utoipa::path(
    post, path = "/events/{event}/retry", tag = "events",
    params(("event" = String, Path, description = "Event id")),
    responses(
        (status = 200, body = EventView),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The event is waiting or being processed", body = ErrorBody),
        (status = 401, body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn retry_event(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<EventId>,
) -> Result<Json<EventView>, ApiError> {
    match state.store.retry_event(&id, crate::support::now_ms()).await {
        Ok(event) => {
            state.inbox.wake();
            Ok(Json(event.into()))
        }
        Err(crate::store::StoreError::NotFound) => {
            Err(ApiError::not_found(format!("no event '{id}'")))
        }
        Err(err) => Err(err.into()),
    }
}

//! The account and transfer endpoints, in the original BankAPI's wire format.
//!
//! Writes answer from the read model: they wait (strong consistency) until the
//! projections have processed the command's events.

use crate::domain::*;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::idempotency::{Fingerprint, Keyed};
use crate::http::json::ApiJson;
use crate::read_model::past::{Past, account_as_of};
use crate::read_model::{AccountView, PROJECTOR};
use axum::Json;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use rewind::{Command, Consistency, DispatchOptions, StreamVersion};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

/// An id in the path: a hyphenated uuid, as the API gives them out (the OpenAPI
/// document's pattern); anything else names no account.
fn account_id(id: &str) -> Result<Uuid, ApiError> {
    match id.len() {
        36 => id.parse().map_err(|_| ApiError::NotFound),
        _ => Err(ApiError::NotFound),
    }
}

/// `If-Match: "7"` (or `W/"7"`, or `7`) → version 7; `*` → any version.
fn if_match(headers: &HeaderMap) -> Result<Option<StreamVersion>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else { return Ok(None) };
    let text = value.to_str().unwrap_or_default().trim();
    if text == "*" {
        return Ok(None);
    }
    let tag = text.strip_prefix("W/").unwrap_or(text);
    let digits = match tag.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(quoted) => quoted,
        None if !text.starts_with("W/") => tag,
        None => "",
    };
    match digits.len() {
        1..=18 if digits.bytes().all(|b| b.is_ascii_digit()) => Ok(digits.parse().ok().map(StreamVersion)),
        _ => Err(ApiError::BadRequest("If-Match must be an account version (\"7\", W/\"7\" or 7) or *".into())),
    }
}

fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

fn account_response(status: StatusCode, view: AccountView) -> Response {
    let tag = etag(view.version);
    let mut response = (status, Json(json!({ "data": view }))).into_response();
    response.headers_mut().insert(header::ETAG, tag);
    response
}

/// A keyed request's fingerprint, which the idempotency layer left.
type KeyedBy = Option<Extension<Fingerprint>>;

/// Dispatches with the request's idempotency key, `If-Match` and the projections
/// the answer reads.
async fn dispatch<C: Command<Aggregate = Account>>(
    state: &AppState,
    command: C,
    keyed: Keyed,
    expected: Option<StreamVersion>,
    wait_for: &[&str],
) -> Result<(), ApiError> {
    let mut options =
        DispatchOptions::new().consistency(Consistency::Handlers(wait_for.iter().map(|s| s.to_string()).collect()));
    if keyed.scope.is_some() {
        options = options.command_id(keyed.derive("command"));
    }
    if let Some(fingerprint) = keyed.fingerprint {
        options = options.fingerprint(fingerprint);
    }
    if let Some(version) = expected {
        options = options.expected_version(version);
    }
    state.bank.app.dispatch_with(command, options).await?;
    Ok(())
}

async fn current(state: &AppState, account: Uuid) -> Result<AccountView, ApiError> {
    state.bank.queries.account(account).await?.ok_or(ApiError::NotFound)
}

/// `?as_of=<RFC 3339>`, if given: the moment a read asks about. Read from the raw
/// query so a malformed one is our 400, in the API's error format.
fn as_of(query: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or_default())
        .map_err(|_| ApiError::BadRequest("the query string does not parse".into()))?;
    let mut moments = pairs.into_iter().filter(|(key, _)| key == "as_of");
    let Some((_, text)) = moments.next() else { return Ok(None) };
    if moments.next().is_some() {
        return Err(ApiError::BadRequest("as_of is given twice".into()));
    }
    DateTime::parse_from_rfc3339(&text)
        .map(|moment| Some(moment.to_utc()))
        .map_err(|_| ApiError::BadRequest("as_of must be an RFC 3339 time, such as 2026-01-31T12:00:00Z".into()))
}

/// The account as it was at `at`, folded from its stream (`read_model::past`).
async fn past(state: &AppState, account: Uuid, at: DateTime<Utc>) -> Result<Past, ApiError> {
    account_as_of(state.bank.app.store(), account, at).await?.ok_or(ApiError::NotFound)
}

#[derive(Deserialize)]
pub(crate) struct OpenBody {
    account: OpenParams,
}

#[derive(Deserialize)]
struct OpenParams {
    initial_balance: i64,
}

/// `POST /api/accounts`
pub(crate) async fn open(
    State(state): State<AppState>,
    headers: HeaderMap,
    fingerprint: KeyedBy,
    ApiJson(body): ApiJson<OpenBody>,
) -> Result<Response, ApiError> {
    let keyed = Keyed::of(&headers, "POST /api/accounts", fingerprint.as_deref());
    let account_uuid = keyed.derive("account");
    let command = OpenAccount { account_uuid, initial_balance: body.account.initial_balance };
    dispatch(&state, command, keyed, None, &[PROJECTOR]).await?;
    Ok(account_response(StatusCode::CREATED, current(&state, account_uuid).await?))
}

/// `GET /api/accounts/:id[?as_of=…]`: now from the read model, or the past from
/// the account's stream (without an `ETag`: a past version is not one to match).
pub(crate) async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let account = account_id(&id)?;
    match as_of(query.as_deref())? {
        Some(at) => Ok(Json(json!({ "data": past(&state, account, at).await?.account })).into_response()),
        None => Ok(account_response(StatusCode::OK, current(&state, account).await?)),
    }
}

/// `DELETE /api/accounts/:id`
pub(crate) async fn close(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let account_uuid = account_id(&id)?;
    dispatch(&state, CloseAccount { account_uuid }, Keyed::default(), if_match(&headers)?, &[PROJECTOR]).await?;
    Ok(StatusCode::OK.into_response())
}

#[derive(Deserialize)]
pub(crate) struct DepositBody {
    deposit_amount: i64,
}

/// `POST /api/accounts/:id/deposit`
pub(crate) async fn deposit(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    fingerprint: KeyedBy,
    ApiJson(body): ApiJson<DepositBody>,
) -> Result<Response, ApiError> {
    let account_uuid = account_id(&id)?;
    let keyed = Keyed::of(&headers, &format!("POST /api/accounts/{account_uuid}/deposit"), fingerprint.as_deref());
    let command = DepositIntoAccount { account_uuid, deposit_amount: body.deposit_amount, transfer_uuid: None };
    dispatch(&state, command, keyed, if_match(&headers)?, &[PROJECTOR]).await?;
    Ok(account_response(StatusCode::OK, current(&state, account_uuid).await?))
}

#[derive(Deserialize)]
pub(crate) struct WithdrawBody {
    withdrawal_amount: i64,
}

/// `POST /api/accounts/:id/withdraw`
pub(crate) async fn withdraw(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    fingerprint: KeyedBy,
    ApiJson(body): ApiJson<WithdrawBody>,
) -> Result<Response, ApiError> {
    let account_uuid = account_id(&id)?;
    let keyed = Keyed::of(&headers, &format!("POST /api/accounts/{account_uuid}/withdraw"), fingerprint.as_deref());
    let command = WithdrawFromAccount { account_uuid, withdraw_amount: body.withdrawal_amount, transfer_uuid: None };
    dispatch(&state, command, keyed, if_match(&headers)?, &[PROJECTOR]).await?;
    Ok(account_response(StatusCode::OK, current(&state, account_uuid).await?))
}

#[derive(Deserialize)]
pub(crate) struct TransferBody {
    transfer_amount: i64,
    destination_account: String,
}

/// `POST /api/accounts/:id/transfer`: 201 with the transfer, which settles shortly after.
pub(crate) async fn transfer(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    fingerprint: KeyedBy,
    ApiJson(body): ApiJson<TransferBody>,
) -> Result<Response, ApiError> {
    let account_uuid = account_id(&id)?;
    let destination_account_uuid = body
        .destination_account
        .parse()
        .map_err(|_| ApiError::field("destination_account", "must be an account uuid"))?;
    let keyed = Keyed::of(&headers, &format!("POST /api/accounts/{account_uuid}/transfer"), fingerprint.as_deref());
    let transfer_uuid = keyed.derive("transfer");
    let command = TransferBetweenAccounts {
        account_uuid,
        transfer_uuid,
        transfer_amount: body.transfer_amount,
        destination_account_uuid,
    };
    dispatch(&state, command, keyed, if_match(&headers)?, &[PROJECTOR]).await?;
    let view = state.bank.queries.transfer(transfer_uuid).await?.ok_or(ApiError::NotFound)?;
    Ok((StatusCode::CREATED, Json(json!({ "data": view }))).into_response())
}

/// `GET /api/accounts/:id/transactions[?as_of=…]`
pub(crate) async fn transactions(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let account_uuid = account_id(&id)?;
    if let Some(at) = as_of(query.as_deref())? {
        return Ok(Json(json!({ "data": past(&state, account_uuid, at).await?.transactions })).into_response());
    }
    current(&state, account_uuid).await?;
    let list = state.bank.queries.transactions(account_uuid).await?;
    Ok(Json(json!({ "data": list })).into_response())
}

/// `GET /api/accounts/:id/statements`: monthly statements (an eventually consistent
/// projection, see `read_model::statements`).
pub(crate) async fn statements(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let account_uuid = account_id(&id)?;
    current(&state, account_uuid).await?;
    let list = state.bank.queries.statements(account_uuid).await?;
    Ok(Json(json!({ "data": list })).into_response())
}

/// `GET /api/transfers/:id`
pub(crate) async fn show_transfer(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let view = state.bank.queries.transfer(account_id(&id)?).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(json!({ "data": view })).into_response())
}

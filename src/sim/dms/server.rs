//! The simulator's accept loop and per-request flow: record the call, apply injected delays,
//! authenticate, apply injected faults or run the action, record the answer.
//!
//! Connections are served with hyper directly rather than `axum::serve` so that
//! [`DmsFault::DropConnection`] can end one with no response bytes at all: a service error
//! makes hyper close the connection without writing.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::actions::{self, Outcome};
use super::reply::{self, GatewayError};
use super::verify::{self, Received};
use super::{DmsCall, DmsFault, State, lock};

/// Request bodies above this are refused by dropping the connection (RPC bodies are tiny).
const MAX_BODY_BYTES: usize = 1 << 20;

/// The service error that makes hyper close the connection without answering.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by the DMS simulator")]
struct ConnectionDropped;

/// Accepts until `shutdown` fires; dropping the connection set then aborts open connections.
pub(super) async fn serve(
    listener: TcpListener,
    state: Arc<Mutex<State>>,
    shutdown: CancellationToken,
) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        while connections.try_join_next().is_some() {}
        let Ok((stream, _peer)) = accepted else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(&state);
        connections.spawn(async move {
            let service = service_fn(move |request| handle(Arc::clone(&state), request));
            // A connection error is the client's business (or a simulated drop).
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// How a request is answered.
enum Answer {
    Gateway(GatewayError),
    Action(Outcome),
    Malformed,
    Drop,
}

async fn handle(
    state: Arc<Mutex<State>>,
    request: Request<Incoming>,
) -> Result<Response<Body>, ConnectionDropped> {
    let at = tokio::time::Instant::now();
    let (parts, body) = request.into_parts();
    let number = {
        let mut state = lock(&state);
        state.call_count += 1;
        let number = state.call_count;
        state.calls.push(DmsCall {
            number,
            method: parts.method.to_string(),
            action: None,
            signature_version: None,
            access_key_id: None,
            nonce: None,
            timestamp: None,
            params: Default::default(),
            status: None,
            error_code: None,
            faults: Vec::new(),
            at,
        });
        number
    };
    let body = axum::body::to_bytes(Body::new(body), MAX_BODY_BYTES)
        .await
        .map_err(|_| ConnectionDropped)?;
    let received = Received::new(
        parts.method.clone(),
        parts.headers,
        parts.uri.query(),
        &body,
    );
    let envelope = verify::read_envelope(&received);
    let faults = {
        let mut state = lock(&state);
        let mut faults = state.faults_by_call.remove(&number).unwrap_or_default();
        if let Some(action) = &envelope.action {
            let count = state.action_counts.entry(action.clone()).or_default();
            *count += 1;
            let nth = *count;
            faults.extend(
                state
                    .faults_by_action
                    .remove(&(action.clone(), nth))
                    .unwrap_or_default(),
            );
        }
        let call = call_mut(&mut state, number);
        call.action.clone_from(&envelope.action);
        call.signature_version = envelope.signature_version();
        call.access_key_id.clone_from(&envelope.access_key_id);
        call.nonce.clone_from(&envelope.nonce);
        call.timestamp.clone_from(&envelope.timestamp);
        call.params.clone_from(&envelope.params);
        call.faults.clone_from(&faults);
        faults
    };
    for fault in &faults {
        if let DmsFault::Delay(delay) = fault {
            tokio::time::sleep(*delay).await;
        }
    }

    let authenticated = if parts.uri.path() != "/" {
        Err(GatewayError::action_not_found())
    } else if parts.method != Method::GET && parts.method != Method::POST {
        Err(GatewayError::unsupported_method())
    } else {
        verify::authenticate(&received, &envelope, &mut lock(&state))
    };
    let answer = match authenticated {
        Err(error) => Answer::Gateway(error),
        Ok(()) => match faults.iter().find_map(fault_answer) {
            Some(answer) => answer,
            None => Answer::Action(actions::run(
                &state,
                number,
                envelope.action.as_deref().unwrap_or_default(),
                &envelope.params,
            )),
        },
    };

    let request_id = reply::new_request_id();
    let (response, error_code) = match answer {
        Answer::Drop => return Err(ConnectionDropped),
        Answer::Malformed => (reply::malformed_json(&request_id), None),
        Answer::Gateway(error) => (
            reply::gateway_error(&error, &request_id),
            Some(error.code.clone()),
        ),
        Answer::Action(Outcome::Gateway(error)) => (
            reply::gateway_error(&error, &request_id),
            Some(error.code.clone()),
        ),
        Answer::Action(Outcome::Success(payload)) => {
            (reply::business_success(payload, &request_id), None)
        }
        Answer::Action(Outcome::Failure { code, message }) => (
            reply::business_failure(&code, &message, &request_id),
            Some(code),
        ),
    };
    let mut state = lock(&state);
    let call = call_mut(&mut state, number);
    call.status = Some(response.status().as_u16());
    call.error_code = error_code;
    Ok(response)
}

fn call_mut(state: &mut State, number: u64) -> &mut DmsCall {
    let index = usize::try_from(number - 1).expect("call numbers fit in usize");
    &mut state.calls[index]
}

/// The answer an injected fault puts in place of the normal one (`Delay` has none).
fn fault_answer(fault: &DmsFault) -> Option<Answer> {
    Some(match fault {
        DmsFault::Throttling { retry_after_ms } => {
            Answer::Gateway(GatewayError::throttled(*retry_after_ms))
        }
        DmsFault::ServiceUnavailable => Answer::Gateway(GatewayError::service_unavailable()),
        DmsFault::InternalError => Answer::Gateway(GatewayError::internal_error()),
        DmsFault::MalformedJson => Answer::Malformed,
        DmsFault::DropConnection => Answer::Drop,
        DmsFault::BusinessFailure { code, message } => Answer::Action(Outcome::Failure {
            code: code.clone(),
            message: message.clone(),
        }),
        DmsFault::Delay(_) => return None,
    })
}

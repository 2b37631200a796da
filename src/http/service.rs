//! The API as one tower service: what the listeners serve and what other
//! datacenters' requests run through. A request is admitted or shed
//! (`admit.rs`); one whose `?dc=` names another datacenter is sent there
//! whole (`forward.rs`); any other one gets the body limit and goes to its
//! route. Every request is traced (spans at DEBUG), shed ones too.
//!
//! Written as one service with its own future rather than as axum
//! middleware (`from_fn`) layered on the router: each layer on a router
//! boxes every request's future again, `from_fn` twice, and those boxes
//! cost a parked blocking query's answer more than its handler did
//! (`benches/kv_fanout`: 24 µs of agent CPU per answer with the layers,
//! 17-18 µs without).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::future::RouteFuture;
use tower::{Layer, Service};
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::{Trace, TraceLayer};

use super::admit::{Admission, Admitted};
use super::{ApiError, Ctx, MAX_BODY_BYTES, forward};

/// The API: its routes behind admission and forwarding, traced. Cheap to
/// clone (a few reference counts).
pub type Api = Trace<Admit, SharedClassifier<ServerErrorsAsFailures>>;

/// `router` behind admission and forwarding, traced.
pub(super) fn api(router: Router, admission: Admission, ctx: Ctx) -> Api {
    TraceLayer::new_for_http().layer(Admit {
        router,
        admission,
        ctx,
    })
}

/// The routes, behind admission and forwarding.
#[derive(Debug, Clone)]
pub struct Admit {
    router: Router,
    admission: Admission,
    ctx: Ctx,
}

impl Service<Request> for Admit {
    type Response = Response;
    type Error = Infallible;
    type Future = Serving;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        <Router as Service<Request>>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, mut request: Request) -> Serving {
        let slots = match self.admission.admit(&request) {
            Ok(slots) => slots,
            Err(shed) => {
                return Serving::Shed {
                    answer: Some(shed.into_response()),
                };
            }
        };
        if let Some(dc) = forward::other_datacenter(&self.ctx, request.uri()) {
            let answer = forward::forward(self.ctx.clone(), dc, request);
            return Serving::Forwarded {
                answer: Box::pin(answer),
                _slots: slots,
            };
        }
        DefaultBodyLimit::max(MAX_BODY_BYTES).apply(&mut request);
        Serving::Local {
            answer: self.router.call(request),
            translated: self.ctx.api.remote.translate_wan(),
            _slots: slots,
        }
    }
}

pin_project_lite::pin_project! {
    /// One request's answer, holding its admission slots until it is
    /// complete or dropped.
    #[project = ServingProj]
    pub enum Serving {
        /// Shed by admission: the answer, until it is taken.
        Shed { answer: Option<Response> },
        /// Sent to another datacenter.
        Forwarded {
            answer: Pin<Box<dyn Future<Output = Response> + Send>>,
            _slots: Admitted,
        },
        /// Answered here, by its route; `translated` when this agent
        /// translates addresses, which Consul says on every answer.
        Local {
            #[pin]
            answer: RouteFuture<Infallible>,
            translated: bool,
            _slots: Admitted,
        },
    }
}

impl Future for Serving {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ServingProj::Shed { answer } => Poll::Ready(Ok(answer.take().unwrap_or_else(|| {
                ApiError::Internal("a shed request was polled after its answer".into())
                    .into_response()
            }))),
            ServingProj::Forwarded { answer, .. } => answer.as_mut().poll(cx).map(Ok),
            ServingProj::Local {
                answer, translated, ..
            } => answer.poll(cx).map(|answered| {
                let Ok(mut response) = answered;
                if *translated {
                    forward::mark_translated(&mut response);
                }
                Ok(response)
            }),
        }
    }
}

//! The gRPC server: the service behind the token check (and TLS when configured), plus the
//! periodic tick that expires silent workers.

use super::admin::AdminService;
pub use super::auth::Tokens;
use super::auth::{Bearer, Role};
use super::tls::ServerTls;
use super::worker::WorkerApi;
use crate::app::Handle;
use std::time::Duration;
use sweep_proto::pb::admin_server::AdminServer;
use sweep_proto::pb::coordinator_server::CoordinatorServer;
use sweep_proto::tls::TlsError;
use tonic::service::interceptor::InterceptedService;

/// Largest request the coordinator decodes. A result of 10,000 epochs is about 2.5 MB of JSON;
/// anything larger is refused with `OUT_OF_RANGE` before it is parsed.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot set up TLS: {0}")]
    TlsSetup(tonic::transport::Error),
    #[error("gRPC server failed: {0}")]
    Transport(tonic::transport::Error),
}

/// Serves the gRPC API (workers' and admin) on `listener` until `shutdown`, expiring silent
/// workers meanwhile. On shutdown, open `Watch` streams end so the server can stop.
pub async fn serve(
    handle: Handle,
    listener: tokio::net::TcpListener,
    tokens: &Tokens,
    tls: Option<ServerTls>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &tls {
        builder = builder
            .tls_config(tls.config()?)
            .map_err(ServeError::TlsSetup)?;
    }
    let ticker = {
        let handle = handle.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(250));
            loop {
                every.tick().await;
                // The tick reads SQLite: on a blocking thread, never on the async workers
                // that serve RPCs.
                let h = handle.clone();
                match tokio::task::spawn_blocking(move || h.tick()).await {
                    Ok(Err(e)) => tracing::error!("{e}"),
                    Err(e) => tracing::error!("coordinator tick: {e}"),
                    Ok(Ok(())) => {}
                }
            }
        })
    };
    let admin = InterceptedService::new(
        AdminServer::new(AdminService::new(handle.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(64 * MAX_MESSAGE_BYTES),
        Bearer::new(tokens, Role::Admin),
    );
    let stopper = handle.clone();
    let shutdown = async move {
        shutdown.await;
        stopper.stop_streams();
    };
    let svc = InterceptedService::new(
        CoordinatorServer::new(WorkerApi::new(handle)).max_decoding_message_size(MAX_MESSAGE_BYTES),
        Bearer::new(tokens, Role::Worker),
    );
    // Small request/response pairs: without TCP_NODELAY, Nagle and delayed ACKs add ~40 ms to
    // every lease (measured with bench/load).
    let incoming = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        |s| {
            s.inspect(|s| {
                let _ = s.set_nodelay(true);
            })
        },
    );
    let served = builder
        .add_service(svc)
        .add_service(admin)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    ticker.abort();
    served.map_err(ServeError::Transport)
}

//! An HTTP listener beside gRPC, on its own address (the admin endpoints,
//! SCIM provisioning): it serves an axum router until stopped.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running listener; dropping it stops it at once.
pub struct HttpListener {
    pub address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl HttpListener {
    /// Binds `address` (the value of `setting`, which errors name) and
    /// serves `router`, with `beside` running as long as it does.
    pub async fn start(
        setting: &'static str,
        address: SocketAddr,
        router: Router,
        beside: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|error| anyhow::anyhow!("cannot listen on {address} ({setting}): {error}"))?;
        let address = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            tokio::select! {
                served = serve => {
                    if let Err(error) = served {
                        tracing::error!(%error, "the {setting} listener failed");
                    }
                }
                () = beside => {}
            }
        });
        Ok(Self {
            address,
            stop: Some(stop),
            task,
        })
    }

    /// Stops listening, letting answers under way finish, for at most
    /// `within`.
    pub async fn stop(mut self, within: Duration) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(within, &mut self.task).await;
    }
}

impl Drop for HttpListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

//! Hearing the changes other processes commit (several writers): a connection of its own
//! that `LISTEN`s on this schema's channel and hands each announcement made by another
//! process to a callback. It distrusts the server's connection, which may break at any
//! time: it is made again a second later, and the callback is told that announcements
//! may have been missed meanwhile. The payloads come from pecd processes writing the
//! same store; the callback parses them as untrusted text.

use std::future::poll_fn;

use tokio_postgres::AsyncMessage;
use tokio_postgres::tls::MakeTlsConnect;

use super::*;

/// Called with an announcement's text, or `None` after a gap (the listening connection was
/// made again: what was announced meanwhile was not heard).
pub(super) type Heard = Box<dyn Fn(Option<&str>) + Send + Sync>;

/// Starts listening on the store's runtime (which ends with the store).
pub(super) fn spawn(shared: &Arc<Shared>, heard: Heard) {
    let config = shared.config.clone();
    let tls = match &shared.tls {
        Tls::None => None,
        Tls::OpenSsl(t) => Some(t.clone()),
    };
    let own = format!("{}\n", shared.node);
    shared.handle.spawn(async move {
        let mut first = true;
        loop {
            let r = match &tls {
                None => listen(&config, tokio_postgres::NoTls, &own, &heard, first).await,
                Some(t) => listen(&config, t.clone(), &own, &heard, first).await,
            };
            if let Err(e) = r {
                tracing::warn!(error = %e, "listening to other nodes' changes: connection lost; again in 1 s");
            }
            first = false;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

/// One listening connection, until it breaks.
async fn listen<T>(
    config: &tokio_postgres::Config,
    tls: T,
    own: &str,
    heard: &Heard,
    first: bool,
) -> Result<(), tokio_postgres::Error>
where
    T: MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
{
    let (client, mut conn) = config.connect(tls).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    // Drives the connection (the queries below need it) and passes notifications on.
    let driver = tokio::spawn(async move {
        loop {
            match poll_fn(|cx| conn.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if tx.send(n.payload().to_string()).is_err() {
                        return Ok(());
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    });
    let channel: String = client.query_one(CHANGES_CHANNEL, &[]).await?.get(0);
    client.batch_execute(&format!("LISTEN {channel}")).await?;
    if !first {
        heard(None);
    }
    while let Some(p) = rx.recv().await {
        // This process's own groups were published when they committed.
        if p.starts_with(own) {
            continue;
        }
        heard(Some(
            p.split_once('\n').map_or(p.as_str(), |(_, rest)| rest),
        ));
    }
    drop(client);
    match driver.await {
        Ok(r) => r,
        // The runtime is shutting down (the store closed).
        Err(_) => Ok(()),
    }
}

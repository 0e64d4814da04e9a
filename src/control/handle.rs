//! What each control request does in the running gateway (on the blocking pool for store
//! work), and the streamed answers (log export, evidence bundles).

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;

use crate::gateway::Gateway;
use crate::pec::address::PecAddress;
use crate::store::NewMailbox;
use crate::store::mailbox::Password;
use crate::trace::TraceQuery;

use super::server::{Writer, finish, send};
use super::*;

fn msg(e: anyhow::Error) -> String {
    format!("{e:#}")
}

/// Runs one request and writes its items and final line. Errors are the socket's.
/// Runs one mailbox administration call off the executor; errors read as the CLI's own
/// (`<what> <address>: <store error>`).
async fn mailbox_op(
    gw: &Arc<Gateway>,
    address: String,
    what: &'static str,
    op: impl FnOnce(&crate::store::Store, &PecAddress) -> Result<(), crate::store::StoreError>
    + Send
    + 'static,
) -> Result<Done, String> {
    mailbox_call(gw, address, what, op, |()| Done::default()).await
}

/// Runs `op` on the store for the mailbox `address` (off the executor); its result goes
/// into the answer through `done`, an error is "`what` `address`: cause".
async fn mailbox_call<T, E>(
    gw: &Arc<Gateway>,
    address: String,
    what: &'static str,
    op: impl FnOnce(&crate::store::Store, &PecAddress) -> Result<T, E> + Send + 'static,
    done: impl FnOnce(T) -> Done + Send + 'static,
) -> Result<Done, String>
where
    T: Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    let store = gw.store.clone();
    gw.blocking(move || -> anyhow::Result<Done> {
        let v =
            op(&store, &parse_address(&address)?).with_context(|| format!("{what} {address}"))?;
        Ok(done(v))
    })
    .await
    .map_err(msg)
}

/// Ends every open session of a mailbox whose credentials the administrator changed.
fn end_sessions(gw: &Gateway, address: &str) {
    if let Ok(a) = parse_address(address) {
        gw.verified.forget(&a.key());
        gw.credentials.bump(&a.to_string());
    }
}

pub(super) async fn handle(gw: &Arc<Gateway>, req: Request, w: &mut Writer) -> std::io::Result<()> {
    let store = gw.store.clone();
    let r: Result<Done, String> = match req {
        Request::MailboxAdd {
            address,
            password,
            quota,
            options,
            provisional,
            plan,
        } => {
            let config = gw.config.clone();
            gw.blocking(move || -> anyhow::Result<Done> {
                let chosen = plan.as_deref().map(|p| config.plan(p)).transpose()?;
                let quota = chosen.map(|p| p.mailbox_bytes).or(quota);
                let archive = chosen.and_then(|p| p.archive_bytes);
                let req = NewMailbox {
                    address: parse_address(&address)?,
                    password: Password::new(password),
                    quota_bytes: quota,
                    options,
                    provisional,
                };
                let info = store
                    .add_mailbox_on_plan(req, plan, archive)
                    .with_context(|| format!("adding {address}"))?;
                Ok(Done {
                    mailbox: Some(info),
                    ..Done::default()
                })
            })
            .await
            .map_err(msg)
        }
        Request::MailboxDel { address } => {
            let r = mailbox_op(gw, address.clone(), "deleting", |s, a| s.delete_mailbox(a)).await;
            end_sessions(gw, &address);
            r
        }
        Request::MailboxPasswd {
            address,
            password,
            provisional,
        } => {
            let p = Password::new(password);
            let r = mailbox_op(
                gw,
                address.clone(),
                "changing the password of",
                move |s, a| s.set_password(a, &p, provisional),
            )
            .await;
            if r.is_ok() {
                end_sessions(gw, &address);
            }
            r
        }
        Request::MailboxPlan { address, plan } => match gw.config.plan(&plan) {
            Err(e) => Err(e.to_string()),
            Ok(p) => {
                let (bytes, archive) = (p.mailbox_bytes, p.archive_bytes);
                let op = move |s: &crate::store::Store, a: &PecAddress| {
                    s.set_plan(a, &plan, bytes, archive)?;
                    s.mailbox(a)
                };
                mailbox_call(gw, address, "setting the plan of", op, |mailbox| Done {
                    mailbox,
                    ..Done::default()
                })
                .await
            }
        },
        Request::MailboxQuota { address, bytes } => {
            mailbox_op(gw, address, "setting the quota of", move |s, a| {
                s.set_quota(a, bytes)
            })
            .await
        }
        Request::MailboxOptions { address, options } => {
            mailbox_op(gw, address, "setting the options of", move |s, a| {
                s.set_mailbox_options(a, options)
            })
            .await
        }
        Request::Notify { address, remove } => {
            let done = |n| Done {
                notify: Some(n),
                ..Done::default()
            };
            let op = move |s: &crate::store::Store, a: &PecAddress| match &remove {
                Some(r) => s.remove_notify_target(a, r),
                None => s.notify_settings(a),
            };
            mailbox_call(gw, address, "the notifications of", op, done).await
        }
        Request::FiltersGet { address } => {
            let done = |f| Done {
                filters: Some(f),
                ..Done::default()
            };
            mailbox_call(
                gw,
                address,
                "reading the rules of",
                |s, a| s.filters(a),
                done,
            )
            .await
        }
        Request::FiltersSet { address, rules } => {
            let done = |f| Done {
                filters: Some(f),
                ..Done::default()
            };
            let set = move |s: &crate::store::Store, a: &PecAddress| s.set_filters(a, &rules);
            mailbox_call(gw, address, "setting the rules of", set, done).await
        }
        Request::CardAdd { address, pem } => {
            let cns = gw.cns.clone();
            let now = gw.clock.now();
            gw.blocking(move || -> anyhow::Result<Done> {
                let a = parse_address(&address)?;
                let card = crate::cns::for_association(cns.as_deref(), pem.as_bytes(), now)
                    .context("the card certificate")?;
                store
                    .add_card(&a, &card)
                    .with_context(|| format!("associating a card with {address}"))?;
                Ok(Done {
                    cards: Some(vec![card]),
                    ..Done::default()
                })
            })
            .await
            .map_err(msg)
        }
        Request::CardDel { address, sha256 } => {
            let r = mailbox_op(gw, address.clone(), "removing a card of", move |s, a| {
                s.remove_card(a, &sha256)
            })
            .await;
            if r.is_ok() {
                // Sessions opened with that card end.
                end_sessions(gw, &address);
            }
            r
        }
        Request::CardList { address } => {
            let done = |c| Done {
                cards: Some(c),
                ..Done::default()
            };
            mailbox_call(gw, address, "listing the cards of", |s, a| s.cards(a), done).await
        }
        Request::MailboxList => {
            let list = gw
                .blocking(move || store.list_mailboxes().context("listing mailboxes"))
                .await;
            match list {
                Ok(list) => {
                    for m in list {
                        send(w, &Response::Mailbox(m)).await?;
                    }
                    Ok(Done::default())
                }
                Err(e) => Err(msg(e)),
            }
        }
        Request::LogQuery {
            msgid,
            ident,
            mailbox,
            since,
            until,
            limit,
        } => {
            let q = TraceQuery {
                msgid,
                ident,
                mailbox,
                since,
                until,
                limit,
            };
            let records = gw
                .blocking(move || store.trace().query(&q).context("querying the log"))
                .await;
            match records {
                Ok(records) => {
                    for r in records {
                        send(w, &Response::Record(r)).await?;
                    }
                    Ok(Done::default())
                }
                Err(e) => Err(msg(e)),
            }
        }
        Request::LogExport => return export(gw, w).await,
        Request::LogVerify {
            signer,
            also_trusted,
        } => gw
            .blocking(move || {
                let trusted: Vec<String> = signer.into_iter().chain(also_trusted).collect();
                store.trace().verify(trusted).context("reading the log")
            })
            .await
            .map(|r| Done {
                report: Some(r.into()),
                ..Done::default()
            })
            .map_err(msg),
        Request::IndexReload => {
            let g = gw.clone();
            gw.blocking(move || g.reload_index())
                .await
                .map(|()| Done::default())
                .map_err(|e| format!("reloading the provider index: {e}"))
        }
        Request::Evidence { ident, mailbox } => {
            let built = gw
                .blocking(move || -> anyhow::Result<crate::evidence::Bundle> {
                    let scope = match mailbox {
                        None => crate::evidence::Scope::Provider,
                        Some(m) => crate::evidence::Scope::Mailbox(parse_address(&m)?),
                    };
                    crate::evidence::build(&store, &ident, &scope)
                        .with_context(|| format!("building the evidence bundle of {ident}"))
                })
                .await;
            match built {
                Ok(b) => {
                    use base64::Engine;
                    for c in b.zip.chunks(CHUNK_BYTES) {
                        let c = base64::engine::general_purpose::STANDARD.encode(c);
                        send(w, &Response::Chunk(c)).await?;
                    }
                    Ok(Done {
                        bytes: Some(b.zip.len() as u64),
                        ..Done::default()
                    })
                }
                Err(e) => Err(msg(e)),
            }
        }
    };
    finish(w, r).await
}

/// A `Write` that cuts the export into lines and queues them for the socket.
struct LineQueue {
    tx: tokio::sync::mpsc::Sender<String>,
    buf: Vec<u8>,
}

impl Write for LineQueue {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
            let rest = self.buf.split_off(i + 1);
            let mut line = std::mem::replace(&mut self.buf, rest);
            line.pop();
            let line = String::from_utf8(line).map_err(std::io::Error::other)?;
            self.tx
                .blocking_send(line)
                .map_err(|_| std::io::Error::other("the control connection was closed"))?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Streams the export: a blocking thread walks the log while this task forwards its lines.
async fn export(gw: &Arc<Gateway>, w: &mut Writer) -> std::io::Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(EXPORT_QUEUE);
    let store = gw.store.clone();
    let walk = gw.blocking(move || {
        store
            .trace()
            .export(LineQueue {
                tx,
                buf: Vec::new(),
            })
            .context("exporting the log")
    });
    let forward = async move {
        while let Some(line) = rx.recv().await {
            send(&mut *w, &Response::Line(line)).await?;
        }
        Ok::<_, std::io::Error>(w)
    };
    let (n, forwarded) = tokio::join!(walk, forward);
    let w = forwarded?;
    let r = n
        .map(|n| Done {
            lines: Some(n),
            ..Done::default()
        })
        .map_err(msg);
    finish(w, r).await
}

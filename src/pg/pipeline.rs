//! Requests queued for one connection and sent together (tokio-postgres pipelining).
//!
//! The server still runs them one after another, in the order queued; the client simply
//! does not wait for each reply before sending the next request, so a tenant's whole
//! transaction costs one round trip (two when its history is read first) instead of one per
//! statement. A request that fails does not stop the ones after it from being sent: inside
//! a transaction they fail too ("current transaction is aborted"), and the first failure is
//! the one that counts.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Error, SimpleQueryMessage, Statement};

/// Owned bind parameters, so that queued requests outlive the code that queued them.
pub type Params = Vec<Box<dyn ToSql + Sync + Send>>;

/// What a request sent back.
#[derive(Debug)]
pub enum Reply {
    /// Rows affected (a prepared statement), or nothing (a batch).
    Count(u64),
    /// The rows of a simple query, as text.
    Rows(Vec<SimpleQueryMessage>),
}

enum Request {
    /// Simple-query text: one or more statements, no parameters.
    Batch(String),
    /// Simple-query text whose rows are wanted.
    Query(String),
    /// A prepared statement with its parameters.
    Execute(Statement, Params),
}

type Pending<'c> = Pin<Box<dyn Future<Output = Result<Reply, Error>> + Send + 'c>>;

/// Requests waiting to be sent, each with a label `L` saying what it is for.
pub struct Pipeline<L> {
    queued: Vec<(L, Request)>,
}

impl<L> Default for Pipeline<L> {
    fn default() -> Self {
        Pipeline { queued: Vec::new() }
    }
}

impl<L> Pipeline<L> {
    /// Queues statements whose rows are not needed.
    pub fn batch(&mut self, label: L, sql: impl Into<String>) {
        self.queued.push((label, Request::Batch(sql.into())));
    }

    /// Queues a simple query whose rows are wanted.
    pub fn query(&mut self, label: L, sql: impl Into<String>) {
        self.queued.push((label, Request::Query(sql.into())));
    }

    /// Queues a prepared statement (from the connection's statement cache).
    pub fn execute(&mut self, label: L, stmt: Statement, params: Params) {
        self.queued.push((label, Request::Execute(stmt, params)));
    }

    /// Forgets everything queued; nothing of it was sent.
    pub fn clear(&mut self) {
        self.queued.clear();
    }

    /// Sends every queued request, then collects the replies, in order.
    pub async fn send(&mut self, client: &Client) -> Vec<(L, Result<Reply, Error>)> {
        let (labels, requests): (Vec<L>, Vec<Request>) = self.queued.drain(..).unzip();
        let mut pending: Vec<Pending<'_>> =
            requests.into_iter().map(|r| start(client, r)).collect();
        let mut replies: Vec<Option<Result<Reply, Error>>> = pending.iter().map(|_| None).collect();
        // tokio-postgres writes a request when its future is first polled: one pass over all
        // of them, in order, puts every request on the wire before any reply is awaited.
        poll_fn(|cx| {
            for (fut, reply) in pending.iter_mut().zip(replies.iter_mut()) {
                if let Poll::Ready(r) = fut.as_mut().poll(cx) {
                    *reply = Some(r);
                }
            }
            Poll::Ready(())
        })
        .await;
        for (fut, reply) in pending.iter_mut().zip(replies.iter_mut()) {
            if reply.is_none() {
                *reply = Some(fut.as_mut().await);
            }
        }
        labels
            .into_iter()
            .zip(
                replies
                    .into_iter()
                    .map(|r| r.expect("every reply was awaited")),
            )
            .collect()
    }
}

fn start(client: &Client, request: Request) -> Pending<'_> {
    match request {
        Request::Batch(sql) => {
            Box::pin(async move { client.batch_execute(&sql).await.map(|()| Reply::Count(0)) })
        }
        Request::Query(sql) => {
            Box::pin(async move { client.simple_query(&sql).await.map(Reply::Rows) })
        }
        Request::Execute(stmt, params) => Box::pin(async move {
            let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| &**p as _).collect();
            client.execute(&stmt, &refs).await.map(Reply::Count)
        }),
    }
}

//! One pass of a sink: from its stored cursor until the log head (`once`), or until shutdown
//! or an operator's restart (`run`, which reads more whenever the head moves).
//!
//! Owns the loop that starts deliveries, reads the log, takes in what landed and saves the
//! cursor, in that order. It must never end a pass with a cursor save still running, and never
//! report a pass as done while an event it held back (`once`) is still failing.

use futures::stream::StreamExt;

use super::ctx::Ctx;
use super::error::DeliverError;
use super::wake::{Restart, Wake};
use super::window::{Window, CURSOR_EVERY};

impl<'a> Ctx<'a> {
    /// Deliver from the stored cursor until the log head is reached (`once`: `wake` is
    /// `None`), or until shutdown or an operator's restart (`run`: more is read whenever the
    /// head moves). Returns how many events were delivered, and the restart if one came.
    pub(super) async fn pass(
        &self,
        wake: Option<Wake<'_>>,
    ) -> Result<(u64, Option<Restart>), DeliverError> {
        let mut w = Window::open(self)?;
        let result = self.deliver(&mut w, wake).await;
        // However the pass ended, a cursor save still running must land (or fail) before
        // anyone reads or moves the cursor: the next pass, an operator's restart.
        let saved = w.saved().await;
        w.read_ahead_done().await;
        let outcome = result?;
        saved?;
        Ok(outcome)
    }

    /// [`Ctx::pass`] in the window `w`.
    async fn deliver(
        &self,
        w: &mut Window<'_, 'a>,
        mut wake: Option<Wake<'_>>,
    ) -> Result<(u64, Option<Restart>), DeliverError> {
        self.sink.prepare(w.cursor).await?;
        loop {
            if let Some(wake) = &mut wake {
                if *wake.shutdown.borrow_and_update() {
                    // Nothing new starts, and no retry is waited for; what is in flight may
                    // still land, and its cursor is stored as it does, so a clean stop sends
                    // nothing twice on the next start. `run` bounds the wait (its grace
                    // period), abandoning what is still out.
                    self.stop();
                    while let Some(done) = w.tasks.next().await {
                        w.finish(done)?;
                        w.save_cursor(true).await?;
                    }
                    w.save_cursor(true).await?;
                    return Ok((w.delivered, None));
                }
            }
            // What can start goes before the read: reading and encoding a chunk takes a while,
            // and the destination is busy with what is in flight meanwhile.
            w.launch();
            w.fill().await?;
            w.launch();
            if w.gap.is_some() && w.open.is_empty() {
                w.skip_gap().await?;
                continue;
            }
            w.save_cursor(false).await?;
            if let Some(e) = w.stopped.take() {
                // A permanent failure: what is still in flight is abandoned (re-sent later).
                w.save_cursor(true).await?;
                return Err(e.into());
            }
            if w.tasks.is_empty() {
                if let Some(e) = w.failure.take() {
                    w.save_cursor(true).await?;
                    return Err(e.into());
                }
                w.calm_down()?;
            }
            let dirty = w.dirty();
            let Some(wake) = &mut wake else {
                match w.tasks.next().await {
                    Some(done) => w.finish(done)?,
                    None => break,
                }
                continue;
            };
            tokio::select! {
                Some(done) = w.tasks.next(), if !w.tasks.is_empty() => w.finish(done)?,
                changed = wake.head.changed(), if w.head_alive => w.head_alive = changed.is_ok(),
                // A dropped sender means nobody can ask any more: stop as if asked.
                stopped = wake.shutdown.changed() => if stopped.is_err() {
                    w.save_cursor(true).await?;
                    return Ok((w.delivered, None));
                },
                Some(restart) = wake.restarts.recv() => {
                    w.save_cursor(true).await?;
                    return Ok((w.delivered, Some(restart)));
                }
                _ = tokio::time::sleep(CURSOR_EVERY), if dirty => {}
            }
        }
        w.save_cursor(true).await?;
        if let Some(last_error) = w.last_deferral.take() {
            return Err(DeliverError::StillFailing {
                sink: self.name.clone(),
                count: w.held_events(),
                last_error,
            });
        }
        Ok((w.delivered, None))
    }
}

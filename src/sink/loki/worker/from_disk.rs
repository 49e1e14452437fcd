//! The worker's side of the disk buffer: starting requests for what waits on disk, and
//! pushing it until the shutdown deadline. A child of `worker`, so it sees the worker's
//! private state.

use std::time::Instant;

use super::{wait_until, Batch, Encoding, Worker};

impl Worker {
    /// Sends what is on disk until it is all settled, or `deadline`.
    pub(super) async fn push_disk_until(&mut self, deadline: Option<Instant>) {
        loop {
            self.send_from_disk();
            if self.in_flight.is_empty() || deadline.is_some_and(|d| Instant::now() >= d) {
                return;
            }
            tokio::select! {
                joined = self.in_flight.join_next() => self.finished(joined),
                () = wait_until(deadline) => return,
            }
        }
    }

    /// Starts requests for what waits on disk, while request slots are free (never
    /// waiting for one: the disk holds the rest). Commits first.
    pub(super) fn send_from_disk(&mut self) {
        let Some(mut disk) = self.disk.take() else {
            return;
        };
        disk.commit(&self.consumer, &mut self.batch);
        // Records, not wire bytes: leave room for a JSON body, whose entries take more
        // than their protobuf framing.
        let budget = match self.encoding {
            Encoding::Protobuf => self.max_bytes / 4 * 3,
            Encoding::Json | Encoding::JsonGzip => self.max_bytes / 2,
        };
        while self.in_flight.len() < self.allowed_in_flight() {
            let mut batch = Batch::default();
            let Some(ticket) = disk.next_part(self.max_entries, budget, &self.consumer, &mut batch)
            else {
                break;
            };
            let mut parts = Vec::new();
            self.encode_split(batch, &mut parts);
            for part in parts {
                match part {
                    Ok(mut part) => {
                        part.ticket = Some(ticket);
                        disk.part_started(ticket);
                        self.spawn(part);
                    }
                    Err((n, why)) => disk.part_dropped(ticket, n, why),
                }
            }
            disk.sealed(ticket, &self.consumer);
        }
        disk.left_over();
        self.disk = Some(disk);
    }
}

//! The last hour of the queue, sampled every few seconds for the status
//! page's charts: operations queued and executing per queue, actions
//! completed by outcome, workers busy.

use super::BuildQueue;
use bb_client::status::{HistorySample, QueueHistory};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// How often the queue is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// How far back the charts look.
pub const KEPT_FOR: Duration = Duration::from_secs(3600);

#[derive(Default)]
pub(crate) struct History {
    samples: VecDeque<HistorySample>,
    /// The completion counters at the last sample.
    previous: BTreeMap<&'static str, u64>,
    last: Option<Instant>,
}

impl History {
    fn due(&self, now: Instant) -> bool {
        self.last.is_none_or(|last| now.duration_since(last) >= SAMPLE_EVERY)
    }

    fn push(&mut self, mut sample: HistorySample, completed: &BTreeMap<&'static str, u64>) {
        sample.completed = completed
            .iter()
            .map(|(outcome, total)| {
                (outcome.to_string(), total - self.previous.get(outcome).copied().unwrap_or(0))
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        self.previous = completed.clone();
        self.samples.push_back(sample);
        let kept = (KEPT_FOR.as_secs() / SAMPLE_EVERY.as_secs()) as usize;
        while self.samples.len() > kept {
            self.samples.pop_front();
        }
    }
}

impl BuildQueue {
    /// Takes a sample if one is due (the maintenance pass calls this).
    pub(crate) fn sample_history(&self) {
        let now = Instant::now();
        let mut history = self.history.lock();
        if !history.due(now) {
            return;
        }
        history.last = Some(now);
        let state = self.state.lock();
        let platforms = self.platform_counts(&state);
        let busy = state.workers.values().filter(|w| w.task.is_some()).count();
        let sample = HistorySample {
            at_unix_seconds: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            queues: platforms
                .into_iter()
                .map(|p| {
                    (
                        format!("{} {}", p.instance_name, p.platform).trim().to_string(),
                        (p.queued, p.executing),
                    )
                })
                .collect(),
            completed: BTreeMap::new(),
            workers: state.workers.len(),
            busy_workers: busy,
        };
        let completed = state.completed.clone();
        drop(state);
        history.push(sample, &completed);
    }

    /// The samples of the last hour, oldest first.
    pub fn history(&self) -> QueueHistory {
        let history = self.history.lock();
        QueueHistory {
            sample_seconds: SAMPLE_EVERY.as_secs(),
            samples: history.samples.iter().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_count_completions_since_the_last_and_keep_an_hour() {
        let mut history = History::default();
        let sample = || HistorySample {
            at_unix_seconds: 0,
            queues: BTreeMap::new(),
            completed: BTreeMap::new(),
            workers: 1,
            busy_workers: 0,
        };
        history.push(sample(), &[("success", 5)].into());
        history.push(sample(), &[("success", 7), ("error", 1)].into());
        let second = &history.samples[1].completed;
        assert_eq!((second["success"], second["error"]), (2, 1));
        for _ in 0..1000 {
            history.push(sample(), &[("success", 7), ("error", 1)].into());
        }
        assert_eq!(history.samples.len(), 360);
        assert!(history.samples.back().unwrap().completed.is_empty());
    }
}

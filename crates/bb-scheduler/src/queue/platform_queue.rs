//! The queued tasks of one platform, in dispatch order: lowest priority
//! value first; within a priority, round-robin between invocations, so one
//! huge build cannot starve a small one; within an invocation, arrival order.
//! A task handed back after its worker was lost goes to the very front.

use super::task::TaskId;
use std::collections::{BTreeMap, HashMap, VecDeque};

#[derive(Default)]
pub(crate) struct PlatformQueue {
    levels: BTreeMap<i32, Level>,
    len: usize,
}

#[derive(Default)]
struct Level {
    /// Invocations with queued tasks, the next to be served first.
    ring: VecDeque<String>,
    tasks: HashMap<String, VecDeque<TaskId>>,
}

impl PlatformQueue {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push_back(&mut self, task: TaskId, priority: i32, invocation: &str) {
        let level = self.levels.entry(priority).or_default();
        let tasks = level.tasks.entry(invocation.to_string()).or_insert_with(|| {
            level.ring.push_back(invocation.to_string());
            VecDeque::new()
        });
        tasks.push_back(task);
        self.len += 1;
    }

    /// Puts a task first in line: its invocation is served next, and the
    /// task first within it.
    pub fn push_front(&mut self, task: TaskId, priority: i32, invocation: &str) {
        let level = self.levels.entry(priority).or_default();
        if let Some(position) = level.ring.iter().position(|i| i == invocation) {
            level.ring.remove(position);
        }
        level.ring.push_front(invocation.to_string());
        level.tasks.entry(invocation.to_string()).or_default().push_front(task);
        self.len += 1;
    }

    /// The task `pop` would return, with its priority.
    pub fn peek(&self) -> Option<(i32, TaskId)> {
        let (priority, level) = self.levels.iter().next()?;
        let invocation = level.ring.front()?;
        Some((*priority, *level.tasks.get(invocation)?.front()?))
    }

    pub fn pop(&mut self) -> Option<TaskId> {
        let mut entry = self.levels.first_entry()?;
        let level = entry.get_mut();
        let invocation = level.ring.pop_front()?;
        let tasks = level.tasks.get_mut(&invocation)?;
        let task = tasks.pop_front()?;
        if tasks.is_empty() {
            level.tasks.remove(&invocation);
        } else {
            // Round robin: this invocation waits for the others' turn.
            level.ring.push_back(invocation);
        }
        if level.ring.is_empty() {
            entry.remove();
        }
        self.len -= 1;
        Some(task)
    }

    /// Takes a task out of line (it was cancelled); false if not queued here.
    pub fn remove(&mut self, task: TaskId, priority: i32, invocation: &str) -> bool {
        let Some(level) = self.levels.get_mut(&priority) else { return false };
        let Some(tasks) = level.tasks.get_mut(invocation) else { return false };
        let Some(position) = tasks.iter().position(|t| *t == task) else { return false };
        tasks.remove(position);
        if tasks.is_empty() {
            level.tasks.remove(invocation);
            level.ring.retain(|i| i != invocation);
        }
        if level.ring.is_empty() {
            self.levels.remove(&priority);
        }
        self.len -= 1;
        true
    }

    /// Every queued task, in no particular order.
    pub fn tasks(&self) -> impl Iterator<Item = TaskId> + '_ {
        self.levels.values().flat_map(|level| level.tasks.values().flatten().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(queue: &mut PlatformQueue) -> Vec<TaskId> {
        std::iter::from_fn(|| queue.pop()).collect()
    }

    #[test]
    fn priority_then_round_robin_then_arrival() {
        let mut q = PlatformQueue::default();
        // Invocation "big" queues 1..=4, "small" queues 5 and 6, all at priority 0.
        for t in 1..=4 {
            q.push_back(t, 0, "big");
        }
        q.push_back(5, 0, "small");
        q.push_back(6, 0, "small");
        // An urgent task of a third invocation.
        q.push_back(7, -1, "urgent");
        assert_eq!(q.peek(), Some((-1, 7)));
        assert_eq!(q.len(), 7);
        assert_eq!(drain(&mut q), vec![7, 1, 5, 2, 6, 3, 4]);
        assert!(q.is_empty());
    }

    #[test]
    fn requeued_tasks_go_first_and_removal_works() {
        let mut q = PlatformQueue::default();
        q.push_back(1, 0, "a");
        q.push_back(2, 0, "b");
        q.push_back(3, 0, "a");
        q.push_front(9, 0, "b");
        assert!(q.remove(3, 0, "a"));
        assert!(!q.remove(3, 0, "a"));
        assert_eq!(q.tasks().count(), 3);
        assert_eq!(drain(&mut q), vec![9, 1, 2]);
    }
}

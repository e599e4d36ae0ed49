//! Which of the drain's messages may be acknowledged, and in how few frames.
//!
//! A quorum queue turns every acknowledgement it receives into a Raft log entry, so one
//! `basic.ack` per message costs RabbitMQ CPU that producers then wait behind. The writer
//! settles a whole batch of messages at once; one `basic.ack` with `multiple` can acknowledge
//! all of them. But `multiple` acknowledges *every* unacknowledged message up to its tag, so it
//! may only reach up to the lowest message still unsettled — one being written, waiting for
//! MongoDB, or deliberately left to RabbitMQ (shutdown, a lost channel): acknowledging that
//! one would lose it. Messages settled above that point are acknowledged one by one at once,
//! so no stored message waits behind a slow one.
//!
//! Delivery tags are per channel and increase; one [`Acks`] serves one consumer channel.

use std::collections::BTreeSet;

/// The drain's messages on one channel: delivered and not settled, and stored but not yet
/// acknowledged.
#[derive(Debug, Default)]
pub struct Acks {
    unsettled: BTreeSet<u64>,
    to_ack: BTreeSet<u64>,
}

/// The acknowledgements to send now.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AckPlan {
    /// One `basic.ack` with `multiple` up to and including this tag.
    pub up_to: Option<u64>,
    /// One `basic.ack` each.
    pub single: Vec<u64>,
}

impl Acks {
    /// A message was delivered.
    pub fn delivered(&mut self, tag: u64) {
        self.unsettled.insert(tag);
    }

    /// Its event is stored: acknowledge it.
    pub fn stored(&mut self, tag: u64) {
        if self.unsettled.remove(&tag) {
            self.to_ack.insert(tag);
        }
    }

    /// It was acknowledged or rejected by other means (dead-lettered).
    pub fn settled_elsewhere(&mut self, tag: u64) {
        self.unsettled.remove(&tag);
    }

    /// The acknowledgements that may go now; a message left to RabbitMQ is never settled, so
    /// it bounds every later plan.
    pub fn plan(&mut self) -> AckPlan {
        let bound = self.unsettled.first().copied().unwrap_or(u64::MAX);
        let below: Vec<u64> = self.to_ack.range(..bound).copied().collect();
        let mut plan = AckPlan::default();
        match below.as_slice() {
            [] => {}
            [one] => plan.single.push(*one),
            [.., last] => plan.up_to = Some(*last),
        }
        plan.single.extend(self.to_ack.range(bound..).copied());
        self.to_ack.clear();
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_settled_wave_goes_in_one_frame() {
        let mut acks = Acks::default();
        (1..=5).for_each(|t| acks.delivered(t));
        (1..=5).for_each(|t| acks.stored(t));
        assert_eq!(
            acks.plan(),
            AckPlan {
                up_to: Some(5),
                single: vec![]
            }
        );
        assert_eq!(acks.plan(), AckPlan::default());
    }

    #[test]
    fn multiple_never_reaches_an_unsettled_message() {
        let mut acks = Acks::default();
        (1..=6).for_each(|t| acks.delivered(t));
        // 3 is still being written; 4 was dead-lettered (settled by its own frame).
        for t in [1, 2, 5, 6] {
            acks.stored(t);
        }
        acks.settled_elsewhere(4);
        assert_eq!(
            acks.plan(),
            AckPlan {
                up_to: Some(2),
                single: vec![5, 6]
            }
        );
        acks.stored(3);
        assert_eq!(
            acks.plan(),
            AckPlan {
                up_to: None,
                single: vec![3]
            }
        );
    }

    #[test]
    fn a_message_left_to_rabbitmq_is_never_covered() {
        let mut acks = Acks::default();
        (1..=4).for_each(|t| acks.delivered(t));
        // 2 is left unsettled for good (shutdown); the others are stored.
        for t in [1, 3, 4] {
            acks.stored(t);
        }
        let plan = acks.plan();
        assert_eq!(plan.up_to, None);
        assert_eq!(plan.single, vec![1, 3, 4]);
    }

    #[test]
    fn a_tag_never_delivered_is_not_acknowledged() {
        let mut acks = Acks::default();
        acks.stored(9);
        assert_eq!(acks.plan(), AckPlan::default());
    }
}
